"""Training: the pure jitted step, the data sources, the loop that runs it, checkpoints, TensorBoard, sweeps."""
