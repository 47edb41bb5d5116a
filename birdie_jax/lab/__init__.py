"""The mechanism lab: models trained directly on synthetic retrieval tasks, swept Zoology-style.

    python -m birdie_jax.lab --config=configs/lab.py:cpu --workdir=workdirs/lab

See `birdie_jax/lab/__main__.py` for the runbook, `tasks.py` for the tasks, `replicas.py` for how
one point's learning rates and seeds train together, `sweep.py` for resuming, `report.py` for
LAB.md.
"""
