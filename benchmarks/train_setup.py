"""The project's real CIFAR train step on random CIFAR-shaped data, as the benchmarks time it.

Everything goes through the same functions `resdepth train` uses (`load_config`, `model_spec`,
`build_model`, `init_state`, `make_train_step`); only the dataset is random uint8 noise held on
the devices, so no download is needed and the timings do not depend on the data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import time
from typing import Any, Callable, Iterator

import flax
import jax
import numpy as np
from jax import lax

import resdepth.models.network
from resdepth.training import step as steps
from resdepth.training.mesh import batch_sharded, make_mesh, replicated, replicated_scalar
from resdepth.errors import InvalidChoice
from resdepth.cli.common import parse_integers
from resdepth.dataset_facts import cifar_blocks_per_stage
from resdepth.config import ExperimentConfig, load_config, parse_override
from resdepth.models.network import ModelSpec, build_model
from resdepth.training.step import model_spec

from benchmarks.per_tap_conv import per_tap_conv

CIFAR_SHAPE = (32, 32, 3)
CIFAR_CLASSES = 10


def disable_persistent_cache() -> None:
    """Every compile is a real compile: no on-disk cache, even with JAX_COMPILATION_CACHE_DIR set."""
    jax.config.update("jax_enable_compilation_cache", False)


def check_depths_and_batch(depths_text: str, batch_size: int) -> list[int]:
    """The CIFAR depths in '20,56,110', or InvalidChoice for a bad depth or batch size."""
    depths = parse_integers(depths_text, "--depths")
    for depth in depths:
        cifar_blocks_per_stage(depth)
    if batch_size < 1 or batch_size % jax.device_count():
        raise InvalidChoice(f"batch {batch_size} must be a positive multiple of the "
                            f"{jax.device_count()} devices")
    return depths


def cifar_config(depth: int, batch_size: int, compute_dtype: str = "tf32") -> ExperimentConfig:
    """The cifar10 experiment (residual, option A) at `depth` and global batch `batch_size`."""
    return load_config("cifar10", [parse_override(f"model.depth={depth}"),
                                   parse_override(f"optim.batch_size={batch_size}"),
                                   parse_override(f'model.compute_dtype="{compute_dtype}"')])


@dataclasses.dataclass
class Unmeasured:
    """A training program (step.make_train_step, packing.steps.make_step, or one compiled from
    them) called as the benchmarks time it, (state, data, indices) -> state: every iteration
    told at run time not to record its layer signals (training/signals.py), as the iterations
    between logging rows are, which are nearly all of a run's."""

    step: Any
    measuring: jax.Array  # bool (): False, for each iteration of a call

    @classmethod
    def of(cls, step: Any, mesh: jax.sharding.Mesh) -> "Unmeasured":
        return cls(step, replicated_scalar(False, np.bool_, mesh))

    def __call__(self, state: Any, data: Any, indices: jax.Array) -> Any:
        return self.step(state, data, indices, self.measuring)[0]

    def compile(self, state: Any, data: Any, indices: jax.Array) -> "Unmeasured":
        """The program compiled for these arguments (its `step` has cost_analysis())."""
        return Unmeasured(self.step.lower(state, data, indices, self.measuring).compile(),
                          self.measuring)


@dataclasses.dataclass
class Bench:
    """A compiled-on-demand train step with its replicated state and on-device random data."""

    config: ExperimentConfig
    spec: ModelSpec
    train_step: Unmeasured  # (state, data, indices) -> state, state donated
    state: steps.TrainState
    data: steps.DeviceDataset
    mesh: jax.sharding.Mesh
    num_images: int

    def indices(self, count: int, seed: int = 0) -> list[jax.Array]:
        """`count` global batches of random image indices, int32 (batch,), sharded over `data`."""
        rng = np.random.default_rng(seed)
        sharding = batch_sharded(self.mesh)
        batch = self.config.optim.batch_size
        return [jax.device_put(rng.integers(0, self.num_images, batch, dtype=np.int32), sharding)
                for _ in range(count)]


def prepare(config: ExperimentConfig, num_images: int, seed: int = 0) -> Bench:
    """Builds the model, its TrainState and `num_images` random uint8 CIFAR images on the mesh."""
    mesh = make_mesh()
    spec = model_spec(config, CIFAR_CLASSES)
    graphdef, state = steps.init_state(config, build_model(spec, config.run.seed), mesh)
    rng = np.random.default_rng(seed)
    everywhere = replicated(mesh)
    data = steps.DeviceDataset(
        train_images=jax.device_put(
            rng.integers(0, 256, (num_images, *CIFAR_SHAPE), dtype=np.uint8), everywhere),
        train_labels=jax.device_put(rng.integers(0, CIFAR_CLASSES, num_images, dtype=np.int32),
                                    everywhere),
        mean_image=jax.device_put(np.full(CIFAR_SHAPE, 127.5, np.float32), everywhere))
    train_step = Unmeasured.of(steps.make_train_step(config, graphdef, mesh), mesh)
    return Bench(config, spec, train_step, state, data, mesh, num_images)


@dataclasses.dataclass
class CompileTiming:
    """Seconds to trace and lower the step, to compile it, and to run it once to completion."""

    lower_s: float
    compile_s: float
    first_step_s: float

    @property
    def total_s(self) -> float:
        return self.lower_s + self.compile_s


def compile_and_run_once(bench: Bench, indices: jax.Array) -> tuple[Any, CompileTiming]:
    """Lowers and compiles the train step, runs it once; returns the compiled step and timings.

    `bench.state` is donated to the first step and replaced by its output.
    """
    start = time.perf_counter()
    step = bench.train_step
    lowered = step.step.lower(bench.state, bench.data, indices, step.measuring)
    lowered_at = time.perf_counter()
    compiled = Unmeasured(lowered.compile(), step.measuring)
    compiled_at = time.perf_counter()
    bench.state = jax.block_until_ready(compiled(bench.state, bench.data, indices))
    ran_at = time.perf_counter()
    return compiled, CompileTiming(lowered_at - start, compiled_at - lowered_at, ran_at - compiled_at)


# The convolutions a benchmark can build CPU models with, for comparison: "resdepth" is what the
# library picks for the backend (`resdepth.models.cpu_conv.conv_function`); "per-tap" is resdepth's
# previous CPU convolution; "xla" is `lax.conv_general_dilated` with JAX's own gradients.
CONVOLUTIONS: dict[str, Callable[..., jax.Array] | None] = {
    "resdepth": None, "per-tap": per_tap_conv, "xla": lax.conv_general_dilated}


@contextlib.contextmanager
def convolutions(kind: str) -> Iterator[None]:
    """Models built inside use the convolution named `kind` (a key of CONVOLUTIONS)."""
    conv = CONVOLUTIONS[kind]
    if conv is None:
        yield
        return
    original = resdepth.models.network.conv_function
    resdepth.models.network.conv_function = lambda backend: conv
    try:
        yield
    finally:
        resdepth.models.network.conv_function = original


def usable_cores() -> int:
    """What `nproc` prints: the cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_lines() -> list[str]:
    """Backend, devices, versions and cores, for the head of a benchmark's output."""
    device = jax.devices()[0]
    return [
        f"backend {jax.default_backend()}, {jax.device_count()} x {device.device_kind}; "
        f"nproc {usable_cores()}; load average {os.getloadavg()[0]:.2f}",
        f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}; "
        "persistent compilation cache "
        f"{'on' if jax.config.jax_enable_compilation_cache else 'off'}",
    ]
