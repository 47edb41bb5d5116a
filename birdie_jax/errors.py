"""The exception types a user sees as one clear line: bad input, and a run that cannot go on."""


class ConfigError(ValueError):
  """A user-fixable problem, reported as one clear line before any compilation."""


class TrainingError(RuntimeError):
  """Training cannot continue (e.g. it diverged and rolling back did not help); one clear line."""
