"""The MLX core: loading a model with mlx-lm, generation, the force file (tests)."""
