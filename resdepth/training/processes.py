"""Whether this process is one of several (a multi-host run), and joining the others.

Read from the environment alone, with no JAX import, so the CLI can ask before JAX starts.
"""

from __future__ import annotations

import os


def launched_as_several_processes() -> bool:
    """Whether this process is one of a multi-process run (SLURM tasks, a TPU pod slice,
    JAX_COORDINATOR_ADDRESS or RESDEPTH_DISTRIBUTED=1), read from the environment alone."""
    return bool(os.environ.get("JAX_COORDINATOR_ADDRESS")
                or int(os.environ.get("SLURM_NTASKS", "1")) > 1
                or os.environ.get("RESDEPTH_DISTRIBUTED") == "1")


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when launched as one (SLURM, a TPU pod, or JAX_COORDINATOR_*)."""
    if launched_as_several_processes():
        import jax

        if not jax.distributed.is_initialized():
            jax.distributed.initialize()
