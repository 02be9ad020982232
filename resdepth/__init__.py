"""resdepth: the plain-vs-residual depth study of He et al. (CVPR 2016) on JAX."""

__version__ = "0.1.0"
