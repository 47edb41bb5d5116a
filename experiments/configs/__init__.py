"""The configs of `experiments/reproduce_paper.py`: `paper.py:<arm>` (get_config style) and what
the arms share (`common.py`)."""
