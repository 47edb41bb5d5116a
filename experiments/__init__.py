"""Scripts that reproduce the paper's comparisons (run from the repository root with `-m`)."""
