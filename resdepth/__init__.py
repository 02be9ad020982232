"""resdepth: the plain-vs-residual depth study of He et al. (CVPR 2016) on JAX."""

# First, so that resdepth's XLA flags are set before any JAX backend starts.
from resdepth.runtime import xla_flags  # noqa: F401

__version__ = "0.1.0"
