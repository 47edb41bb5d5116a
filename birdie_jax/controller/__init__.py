"""Birdie's reward-driven objective controller: reward, Gated SSM reward model, mixture choice.

Entry points: `controller.Controller` (settings, `init`, jitted `update`, `mixture_weights`,
`metrics`), `state.ControllerState` (the checkpointable pytree), `schedule.make_schedule`,
`settings.default_settings` (the `controller` config section) and `plot.plot_mixture`.
"""
