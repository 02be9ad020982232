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


# JAX_PLATFORMS words that name an accelerator (JAX's platform names and aliases).
ACCELERATOR_PLATFORMS = ("cuda", "gpu", "rocm", "tpu", "metal")


def computes_on_cpu_without_starting_jax(environ=None) -> bool:
    """Whether JAX would compute on the CPU here, decided without starting JAX (a dry run on
    the machine of a running sweep must not take the GPU's memory): JAX_PLATFORMS puts no
    accelerator first, or, without it, no accelerator plugin is installed (jax[cuda12]'s
    jax_plugins modules and entry points, libtpu). An installed plugin on a machine without
    its device (a login node) still counts as an accelerator: the runs will go to one."""
    import importlib.metadata
    import importlib.util
    import os
    import pkgutil

    environ = os.environ if environ is None else environ
    platforms = [word.strip().lower() for word in environ.get("JAX_PLATFORMS", "").split(",")
                 if word.strip()]
    if platforms:
        return platforms[0] not in ACCELERATOR_PLATFORMS
    if importlib.metadata.entry_points(group="jax_plugins") or importlib.util.find_spec("libtpu"):
        return False
    namespace = importlib.util.find_spec("jax_plugins")
    locations = namespace.submodule_search_locations if namespace is not None else None
    return not any(True for _ in pkgutil.iter_modules(list(locations or [])))
