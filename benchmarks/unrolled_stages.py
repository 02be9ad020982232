"""Stages unrolled: the scans of `resdepth.models.network.Stage` traced with `unroll=True`.

Each stage of resdepth's nets scans its identical blocks, so the compiled step holds one `while`
loop per stage (and per stage of the backward pass). Two benchmarks need the step without them:
XLA's cost analysis counts a while loop's body once whatever its trip count
(benchmarks/gpu_profile.py), and XLA:GPU's command buffers (CUDA graphs) do not take while
loops by default (benchmarks/xla_variants.py, variant "unrolled"). With `unroll=True` JAX emits
the blocks one after another, with no loop: the same arithmetic, a program that grows with depth.

The model has no setting for this, so the module's `nnx` is swapped while a step is traced (a
benchmark's hook, not the package's: resdepth/models/ keeps its scans).
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def unrolled_stages() -> Iterator[None]:
    """Models traced inside this context scan their stages with `unroll=True` (no while loop).

    Only tracing matters: a step first traced inside the context keeps its unrolled program when
    called again outside it, and one JAX has traced before keeps its scans (jit reuses the trace
    of a function it has seen), so build the step anew inside."""
    from flax import nnx

    import resdepth.models.network as network

    class Unrolled:
        def __getattr__(self, name):
            return getattr(nnx, name)

        @staticmethod
        def scan(*args, **kwargs):
            return nnx.scan(*args, **{**kwargs, "unroll": True})

    network.nnx = Unrolled()
    try:
        yield
    finally:
        network.nnx = nnx
