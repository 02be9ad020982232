"""Whether this process is one of several (a multi-host run), and joining the others.

Asked without importing JAX, so the CLI can ask before JAX starts.
"""

from __future__ import annotations

import os
import sys


def launched_as_several_processes() -> bool:
    """Whether this process is one of a multi-process run: launched as one (SLURM tasks, a TPU
    pod slice, JAX_COORDINATOR_ADDRESS or RESDEPTH_DISTRIBUTED=1, read from the environment), or
    joined to others already (a program that called jax.distributed.initialize itself)."""
    jax = sys.modules.get("jax")  # not imported: not joined to anyone yet
    return bool(os.environ.get("JAX_COORDINATOR_ADDRESS")
                or int(os.environ.get("SLURM_NTASKS", "1")) > 1
                or os.environ.get("RESDEPTH_DISTRIBUTED") == "1"
                or (jax is not None and jax.distributed.is_initialized()))


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when launched as one (SLURM, a TPU pod, or JAX_COORDINATOR_*)."""
    if launched_as_several_processes():
        import jax

        if not jax.distributed.is_initialized():
            jax.distributed.initialize()
