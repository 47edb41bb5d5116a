"""One training config per arm of `experiments/reproduce_paper.py` (get_config style)."""
