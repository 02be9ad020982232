"""XLA flags that resdepth sets, on the jaxlib versions where they were measured, before JAX starts.

`resdepth/__init__.py` imports this module first, so the flags are in the environment before
any part of the package creates a JAX backend (XLA reads `XLA_FLAGS` once, when the first
backend starts). A flag the user already set in `XLA_FLAGS` is left as the user set it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import MutableMapping, Sequence

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


# What a probe runs: enough for XLA to parse XLA_FLAGS (it does so when the first backend starts)
# and to compile one program, whose dump then holds the options in force.
_PROBE = "import jax, jax.numpy as jnp; jax.jit(lambda x: x + 1)(jnp.ones(2)).block_until_ready()"


def probe_xla_flags(flag_sets: Sequence[str], python: str = sys.executable,
                    timeout_s: float = 120) -> list[tuple[str | None, dict[str, list[str]]]]:
    """What the installed jaxlib's XLA makes of each of `flag_sets` (each a string of flags as
    XLA_FLAGS takes them): (XLA's complaint, None when it parsed them; the debug options that
    then differ from XLA's defaults, {option: [values]}).

    XLA aborts the whole process on an unknown flag or an illegal value, so each set is tried in
    a child process of its own, all at once, on the CPU backend, whose XLA parses the GPU flags
    too. The options are read back from the `*.debug_options` file of an XLA dump, which lists
    only those that differ from the defaults: `--xla_gpu_enable_command_buffer=+WHILE` shows the
    whole list of command buffer kinds in force.
    """
    with tempfile.TemporaryDirectory(prefix="xla-flags-") as scratch:
        children = []
        for index, flags in enumerate(flag_sets):
            dump = Path(scratch) / str(index)
            env = {**os.environ, "JAX_PLATFORMS": "cpu",
                   "XLA_FLAGS": f"{flags} --xla_dump_to={dump}".strip()}
            children.append((dump, subprocess.Popen(
                [python, "-c", _PROBE], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True)))
        results = []
        for dump, child in children:
            try:
                output, _ = child.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                output = child.communicate()[0] + f"\nno answer in {timeout_s:.0f} s"
            if child.returncode:
                results.append((xla_complaint(output) or f"exit code {child.returncode}", {}))
                continue
            options: dict[str, list[str]] = {}
            for path in sorted(dump.glob("*.debug_options"))[:1]:
                for line in path.read_text().splitlines():
                    name, _, value = line.partition(":")
                    if name.strip() not in ("xla_dump_to", ""):
                        options.setdefault(name.strip(), []).append(value.strip().strip('"'))
            results.append((None, options))
        return results


def xla_complaint(output: str) -> str | None:
    """XLA's own line about a flag it refused, out of a child's output (None: no such line)."""
    lines = output.splitlines()
    for marker in ("Unknown flag in XLA_FLAGS", "Illegal value for", "Flag parsing failed"):
        for line in lines:
            if marker in line:
                return line[line.index(marker):].strip()
    return None


set_xla_flags()
