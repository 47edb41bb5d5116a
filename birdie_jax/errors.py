"""The one exception type for mistakes a user can make (configs, paths, data, shapes)."""


class ConfigError(ValueError):
  """A user-fixable problem, reported as one clear line before any compilation."""
