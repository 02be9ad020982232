"""The networks: which blocks each depth has, the Flax NNX nets, the CPU convolution, parameter and multiply-add counts."""
