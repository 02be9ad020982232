"""Process set-up before JAX or TensorFlow start: XLA flags, quiet logs, the compilation cache."""
