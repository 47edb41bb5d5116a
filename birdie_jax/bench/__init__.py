"""Benchmarks: `python -m birdie_jax.bench <subcommand> [flags]` (see `__main__`)."""
