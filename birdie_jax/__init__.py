"""birdie_jax: Birdie's reward-driven objective mixtures and bidirectional-prefix SSMs in JAX/Flax."""
