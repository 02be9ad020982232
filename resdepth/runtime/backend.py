"""The kind of device this process computes on ("cpu", "gpu" or "tpu"), resolved once.

Several choices follow from it: the CPU convolution (models/cpu_conv.py), how packed seeds are
laid out (training/step.py), how many iterations a call runs (training/loop.py) and whether a
sweep packs seeds (training/sweep.py). They take the backend as an argument; this is where a
run resolves it, so a test or a benchmark can pass another one instead of patching modules.
"""

from __future__ import annotations

import functools


@functools.cache
def current_backend() -> str:
    """JAX's default backend: "cpu", "gpu" or "tpu" (JAX starts here if it has not)."""
    import jax

    return jax.default_backend()
