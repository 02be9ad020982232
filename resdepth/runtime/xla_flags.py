"""XLA flags that resdepth sets, on the jaxlib versions where they were measured, before JAX starts.

`resdepth/__init__.py` imports this module first, so the flags are in the environment before
any part of the package creates a JAX backend (XLA reads `XLA_FLAGS` once, when the first
backend starts). A flag the user already set in `XLA_FLAGS` is left as the user set it.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import MutableMapping

# jaxlib 0.10 and 0.12 hand convolutions of more than 16 channels, and the kernel gradients,
# to YNNPACK; on resdepth's CPU train step Eigen's convolutions are faster there (ResNet-20/56
# at batch 128, docs/benchmarks.md). XLA aborts on a flag it does not
# know, and the flag's effect on other versions is unmeasured, so only these versions get it.
YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
YNN_CONVOLUTIONS_OFF = f"--{YNN_FLAG}=-individual_convolution"
YNN_MEASURED_JAXLIB = ("0.10.", "0.12.")


def jaxlib_version() -> str | None:
    try:
        return metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return None


def set_xla_flags(environ: MutableMapping[str, str] = os.environ,
                  version: str | None = None) -> None:
    """Adds resdepth's CPU flags for the installed jaxlib (or `version`) to `XLA_FLAGS`."""
    version = version or jaxlib_version()
    flags = environ.get("XLA_FLAGS", "")
    if version and version.startswith(YNN_MEASURED_JAXLIB) and YNN_FLAG not in flags:
        environ["XLA_FLAGS"] = f"{flags} {YNN_CONVOLUTIONS_OFF}".strip()


set_xla_flags()
