"""What the programs print for the user: progress lines (stdout) and warnings (stderr), from
process 0 only, so a multi-process run prints each once."""
from __future__ import annotations

import sys

import jax


def log_progress(line: str) -> None:
  """Prints the progress line on host 0."""
  if jax.process_index() == 0:
    print(line, flush=True)


def log_warning(message: str) -> None:
  """Prints `birdie_jax: warning: <message>` to stderr on host 0."""
  if jax.process_index() == 0:
    print(f"birdie_jax: warning: {message}", file=sys.stderr, flush=True)
