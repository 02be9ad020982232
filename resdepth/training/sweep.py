"""A depth sweep: every (architecture, depth, seed) of a grid, one run directory each.

Completed runs are skipped, interrupted ones resume from their checkpoint, and a run that
diverges or fails is recorded and the sweep goes on. `shard(grid, index, count)` splits a grid
into disjoint parts so several machines (a SLURM array, say) can share one results folder;
`resolve_shard("auto")` reads the part from the scheduler's environment. Each run is trained
under its run directory's lock (rundir/lock.py, through training/session.py), so jobs whose
parts overlap, or the same command started twice, never train one run together: the second
skips it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping

from resdepth.errors import InvalidChoice
from resdepth.config import ExperimentConfig
from resdepth.rundir.directory import RunDirectory
from resdepth.rundir.identity import run_name
from resdepth.rundir.lock import RunLocked

# The sustained training throughput per GPU that --dry-run's estimate assumes; an assumption,
# not a measurement (benchmarks/gpu_check.sh measures a GPU's rate for these nets).
ASSUMED_TFLOPS = 20.0


@dataclasses.dataclass(frozen=True)
class GridPoint:
    arch: str  # "plain" or "residual"
    depth: int
    seed: int


def expand_grid(config: ExperimentConfig) -> list[GridPoint]:
    """The sweep's runs in a stable order: architecture, then depth, then seed.

    A point named twice (`--depths 20,20`, a seed repeated) is one run, at its first place.
    """
    sweep = config.sweep  # its architectures and depths validated with the config
    points: dict[GridPoint, None] = {}  # ordered and without repeats
    for arch in sweep.archs:
        for depth in sweep.depths_by_arch.get(arch, sweep.depths):
            seeds = sweep.seeds_for(arch, depth)
            points.update((GridPoint(arch, depth, seed), None) for seed in seeds)
    return list(points)


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N (I counts from 0, like SLURM_ARRAY_TASK_ID)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InvalidChoice(f"--shard must look like I/N (for example 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InvalidChoice(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return index, count


# Kubernetes Indexed Jobs give each pod JOB_COMPLETION_INDEX but not the number of pods;
# set this variable to the Job's `completions` in the pod template (or use --shard auto/N).
SHARD_COUNT_VARIABLE = "RESDEPTH_SHARD_COUNT"


def resolve_shard(text: str, environ: Mapping[str, str] = os.environ) -> tuple[int, int, str]:
    """(index, count, how they were found) for --shard "I/N", "auto" or "auto/N".

    "auto" reads a SLURM job array (SLURM_ARRAY_TASK_ID, less SLURM_ARRAY_TASK_MIN, divided by
    SLURM_ARRAY_TASK_STEP, of SLURM_ARRAY_TASK_COUNT tasks) or a Kubernetes Indexed Job
    (JOB_COMPLETION_INDEX of RESDEPTH_SHARD_COUNT pods). "auto/N" takes N as the count.
    """
    if not text.lower().startswith("auto"):
        index, count = parse_shard(text)
        return index, count, f"shard {index}/{count}"
    given = text[4:]
    if given and not given.startswith("/"):
        raise InvalidChoice(f"--shard must be I/N, auto or auto/N, got {text!r}")
    count = None
    if given:
        try:
            count = int(given[1:])
        except ValueError:
            raise InvalidChoice(f"--shard auto/N needs a whole number N, got {text!r}") from None

    def number(name: str, default: int | None = None) -> int:
        value = environ.get(name)
        if value in (None, "") and default is not None:
            return default
        if value in (None, ""):
            raise InvalidChoice(f"--shard auto: {name} is not set; give --shard auto/N or I/N")
        try:
            return int(value)
        except ValueError:
            raise InvalidChoice(f"--shard auto: {name}={value!r} is not a whole number") from None

    if environ.get("SLURM_ARRAY_TASK_ID"):
        task, first = number("SLURM_ARRAY_TASK_ID"), number("SLURM_ARRAY_TASK_MIN", 0)
        stride = number("SLURM_ARRAY_TASK_STEP", 1) or 1
        if count is None:
            count = number("SLURM_ARRAY_TASK_COUNT")
        if (task - first) % stride:
            raise InvalidChoice(f"--shard auto: SLURM array task {task} is not on the array's "
                                f"steps (min {first}, step {stride}); give --shard I/N")
        index = (task - first) // stride
        source = f"SLURM_ARRAY_TASK_ID={task}" + (f" - SLURM_ARRAY_TASK_MIN={first}" if first else "")
        source += f" of {'SLURM_ARRAY_TASK_COUNT=' if not given else ''}{count}"
    elif environ.get("JOB_COMPLETION_INDEX"):
        index = number("JOB_COMPLETION_INDEX")
        if count is None:
            if not environ.get(SHARD_COUNT_VARIABLE):
                raise InvalidChoice(f"--shard auto: JOB_COMPLETION_INDEX is set but not the number "
                                    f"of jobs; give --shard auto/N or set {SHARD_COUNT_VARIABLE} "
                                    f"to the Job's completions")
            count = number(SHARD_COUNT_VARIABLE)
        source = f"JOB_COMPLETION_INDEX={index} of {SHARD_COUNT_VARIABLE + '=' if not given else ''}{count}"
    else:
        raise InvalidChoice("--shard auto needs SLURM_ARRAY_TASK_ID (a SLURM job array) or "
                            "JOB_COMPLETION_INDEX (a Kubernetes Indexed Job); elsewhere give --shard I/N")
    if count < 1 or not 0 <= index < count:
        raise InvalidChoice(f"--shard auto found part {index} of {count} ({source}); "
                            "it needs 0 <= part < count: give --shard I/N")
    return index, count, f"shard {index}/{count} from {source}"


def shard(points: list[GridPoint], index: int, count: int) -> list[GridPoint]:
    """Every count-th run starting at index: disjoint parts that together cover the grid."""
    return points[index::count]


def point_config(base: ExperimentConfig, point: GridPoint) -> ExperimentConfig:
    config = copy.deepcopy(base)
    config.model.depth = point.depth
    config.model.residual = point.arch == "residual"
    config.run.seed = point.seed
    return config


def _writes_files() -> bool:
    import jax

    return jax.process_index() == 0


def _record_failure(config: ExperimentConfig, run_dir: Path, error: Exception) -> dict[str, Any]:
    """The summary of a run that crashed, also written to its summary.json (by process 0):
    what the run's earlier summary knew, at the iterations it last logged (Summary.failed)."""
    run = RunDirectory(run_dir)
    summary = run.failed_summary(config, f"{type(error).__name__}: {error}", traceback.format_exc())
    if _writes_files():
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_summary(summary)
    return summary.to_json()


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """The runs a sweep command trains: its config's grid, or the part of it a shard names."""

    config: ExperimentConfig
    points: list[GridPoint]
    grid_size: int  # runs in the whole grid
    shard: str | None = None  # how the part was chosen ("shard 0/4 from SLURM_ARRAY_TASK_ID=0 ...")


def plan_sweep(config: ExperimentConfig, shard_text: str | None = None,
               environ: Mapping[str, str] = os.environ) -> SweepPlan:
    """The grid of a config validated as it loaded: its depths checked against the dataset
    (config.validate_sweep), expanded, and cut to the part `shard_text` (--shard) names."""
    from resdepth.config import validate_sweep

    points = expand_grid(validate_sweep(config))
    if not shard_text:
        return SweepPlan(config, points, len(points))
    index, count, found = resolve_shard(shard_text, environ)
    return SweepPlan(config, shard(points, index, count), len(points), found)


@dataclasses.dataclass
class SweepOutcome:
    summaries: list[dict[str, Any]]  # one per run attempted or skipped as done, in grid order
    seconds: float

    @property
    def interrupted(self) -> bool:
        return any(summary.get("status") == "interrupted" for summary in self.summaries)


def sweep(plan: SweepPlan, out: Path,
          open_display: Callable[[ExperimentConfig, Path], ContextManager[Callable[[Any], None]]],
          *, on_note: Callable[[str], None] = lambda message: None,
          prepare: Callable[[], None] | None = None,
          config_notes: dict[str, Any] | None = None) -> SweepOutcome:
    """Trains the plan's runs into `out` (`run_sweep`) until done or interrupted (Ctrl-C and
    SIGTERM stop it after the current iteration, checkpointed).

    `open_display(config, run_dir)` gives a context manager whose value is the run's event sink
    (a progress display): it is entered when the run starts and left at its end or the
    sweep's. `prepare` sets up the runtime once the output folder is known to be writable; a
    sweep that fails before training leaves no empty folder behind.
    """
    from resdepth.rundir.lock import removed_if_left_empty
    from resdepth.rundir.storage import ensure_writable

    started = time.time()
    if not plan.points:
        return SweepOutcome([], 0.0)
    with removed_if_left_empty(out / plan.config.name), contextlib.ExitStack() as displays:
        ensure_writable(out / plan.config.name)
        if prepare is not None:
            prepare()
        from resdepth.training.loop import stop_on_signals

        def on_run(point: GridPoint, config: ExperimentConfig, run_dir: Path):
            display = open_display(config, run_dir)
            sink = display.__enter__()
            displays.callback(display.__exit__, None, None, None)  # also if the run crashed

            def closing_sink(event) -> None:  # runs trained together: each display ends with its run
                sink(event)
                if event.kind in ("end", "already_completed"):
                    display.__exit__(None, None, None)

            return closing_sink

        with stop_on_signals() as stop:
            summaries = run_sweep(plan.config, plan.points, out, on_run, stop, on_note=on_note,
                                  config_notes=config_notes)
    return SweepOutcome(summaries, time.time() - started)


def run_sweep(base: ExperimentConfig, points: list[GridPoint], out: Path,
              on_run: Callable[[GridPoint, ExperimentConfig, Path], Callable[[Any], None]],
              stop: threading.Event,
              on_note: Callable[[str], None] = lambda message: None,
              config_notes: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Runs `points` in order; returns one summary per run attempted (or skipped as done).

    `on_run(point, config, run_dir)` returns the event sink for that run. Each run goes through
    training/session.py (its checks, lock, TensorBoard and clean-up; `config_notes` go into its
    config.json). A run another process holds (its lock) is passed over with status "locked"
    and a one-line `on_note`; a run that crashes is recorded as "failed" and the sweep goes on.
    The sweep stops after an interrupted run (Ctrl-C), so running it again resumes exactly there.
    """
    from resdepth.training import packing
    from resdepth.training.session import train_run

    summaries = []
    backend = _backend(None)
    for group in _pack_groups(base, points, backend):
        if len(group) > 1:
            names = ", ".join(RunDirectory.of(out, point_config(base, point)).path.name for point in group)
            layout = packing.layout(base.sweep.pack_formulation, backend)
            on_note(f"pack of {len(group)} in one {layout} program: {names}")
            summaries.extend(_run_pack(base, group, out, on_run, stop, on_note, config_notes))
        else:
            (point,) = group
            config = point_config(base, point)
            run_dir = RunDirectory.of(out, config).path
            try:
                summary = train_run(
                    config, run_dir, on_run(point, config, run_dir), stop, below=out,
                    config_notes=config_notes,
                    on_crash=lambda error: _record_failure(config, run_dir, error))
            except RunLocked as locked:
                summary = _locked_summary(config, point, run_dir, locked, on_note)
            summaries.append(summary)
        if any(s.get("status") == "interrupted" for s in summaries) or stop.is_set():
            break
    return summaries


def _backend(backend: str | None) -> str:
    if backend:
        return backend
    from resdepth.runtime.backend import current_backend

    return current_backend()


def _pack_groups(base: ExperimentConfig, points: list[GridPoint], backend: str | None = None
                 ) -> list[list[GridPoint]]:
    """The sweep's programs, in order: each one point, or when runs are packed, the points of
    one shape, at most `sweep.pack_size` a pack, where the first of them stood. A shape is a
    depth, and an architecture too unless the layout lets plain and residual nets share a pack
    (packing.mixes_architectures)."""
    from resdepth.training import packing

    backend = _backend(backend)
    if not packing.packs(base, backend):
        return [[point] for point in points]
    mixed = packing.mixes_architectures(packing.layout(base.sweep.pack_formulation, backend),
                                        base.model.shortcut)
    by_shape: dict[tuple, list[list[GridPoint]]] = {}
    groups: list[list[GridPoint]] = []
    for point in points:
        chunks = by_shape.setdefault((point.depth,) if mixed else (point.arch, point.depth), [])
        if not chunks or len(chunks[-1]) >= base.sweep.pack_size:
            chunks.append([])
            groups.append(chunks[-1])
        chunks[-1].append(point)
    return groups


def _run_pack(base: ExperimentConfig, group: list[GridPoint], out: Path, on_run, stop,
              on_note, config_notes: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The runs of one pack in one compiled program (packing.Pack through session.train_runs)."""
    from resdepth.training import packing
    from resdepth.training.session import train_runs

    configs = [point_config(base, point) for point in group]
    run_dirs = [RunDirectory.of(out, config).path for config in configs]
    sinks = [on_run(point, config, run_dir) for point, config, run_dir in zip(group, configs, run_dirs)]
    return train_runs(
        configs, run_dirs, sinks, stop, make_trainer=packing.Pack, below=out,
        config_notes=config_notes,
        on_locked=lambda i, locked: _locked_summary(configs[i], group[i], run_dirs[i], locked, on_note),
        on_crash=lambda i, error: _record_failure(configs[i], run_dirs[i], error))


def _locked_summary(config: ExperimentConfig, point: GridPoint, run_dir: Path, locked: RunLocked,
                    on_note) -> dict[str, Any]:
    who = locked.holder.describe() if locked.holder else "another process"
    summary = {"name": run_dir.name, "experiment": config.name, "status": "locked",
               "arch": point.arch, "depth": point.depth, "seed": point.seed,
               "message": f"being trained by {who}"}
    on_note(f"{run_dir.name}: skipped, {summary['message']}")
    return summary


def dry_run_rows(base: ExperimentConfig, points: list[GridPoint], out: Path) -> list[dict[str, Any]]:
    """Per run: parameters, multiply-adds per image, and the training compute of the schedule.

    Training compute counts 3 forward passes' worth of multiply-adds per image (forward, and a
    backward pass of about twice the forward), times 2 FLOPs per multiply-add.
    """
    from resdepth.models.complexity import count_multiply_adds, count_params
    from resdepth.dataset_facts import IMAGE_SIZE_PIXELS, IN_CHANNELS, NUM_CLASSES
    from resdepth.models.network import abstract_model
    from resdepth.training.step import model_spec

    rows, cache = [], {}
    channels, image_size = IN_CHANNELS[base.data.dataset], IMAGE_SIZE_PIXELS[base.data.dataset]
    for point in points:
        config = point_config(base, point)
        key = (point.arch, point.depth)
        if key not in cache:
            spec = model_spec(config, NUM_CLASSES[config.data.dataset])
            cache[key] = (count_params(abstract_model(spec, channels)),
                          count_multiply_adds(spec, image_size, channels))
        params, macs = cache[key]
        images = config.optim.total_steps * config.optim.batch_size
        rows.append({"name": run_name(config), "arch": point.arch, "depth": point.depth,
                     "seed": point.seed, "params": params, "multiply_adds": macs,
                     "train_pflop": 6 * macs * images / 1e15,
                     "done": _saved_status(RunDirectory.of(out, config).path)})
    return rows


def gpu_hours_at(train_pflop: float, tflops: float = ASSUMED_TFLOPS) -> float:
    """GPU-hours for `train_pflop` PFLOP of training at a sustained `tflops` TFLOP/s."""
    return train_pflop * 1e15 / (tflops * 1e12) / 3600


# The datasets whose nets training/rates.py's rates were measured on (32x32 CIFAR images).
RATED_DATASETS = ("cifar10",)


def estimate_gpu_hours(base: ExperimentConfig, rows: list[dict[str, Any]], gpu: str | None = None,
                       measured: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Adds to each dry_run_rows row its `gpu_hours` and the `rate` they are at, one run at a
    time on one GPU; returns the total and which device's rates were used.

    A run takes a rate measured on the chosen device (training/rates.py: `--gpu NAME`, else
    the device benchmarks/gpu_check.sh last measured here, else the shipped NVIDIA H200
    figures) at its depth, compute dtype and batch, or interpolated in depth; a run without
    one (another dtype, batch or dataset, or a device with no rates) is estimated from its
    FLOPs at the assumed ASSUMED_TFLOPS.
    """
    from resdepth.training import rates

    measured = rates.load_measured() if measured is None else measured
    device, device_rows = rates.choose_device(gpu, measured)
    total = 0.0
    for row in rows:
        rate = None
        if device and base.data.dataset in RATED_DATASETS:
            rate = rates.rate_for(device_rows, row["depth"], base.model.compute_dtype,
                                  base.optim.batch_size)
        if rate is not None:
            row["gpu_hours"] = rates.hours_at(rate, base.optim.total_steps, base.optim.batch_size)
            row["rate"] = rate.to_json()
        else:
            row["gpu_hours"] = gpu_hours_at(row["train_pflop"])
            row["rate"] = {"how": "assumed", "tflops": ASSUMED_TFLOPS,
                           "detail": f"assumed {ASSUMED_TFLOPS:.0f} TFLOP/s sustained, not measured"}
        total += row["gpu_hours"]
    return {"device": device, "gpu": gpu, "estimated_gpu_hours": total}


def estimate_cpu_minutes(base: ExperimentConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Adds to each dry_run_rows row its `cpu_minutes` and the `cpu_rate` they are at, one run
    at a time on a CPU, from the CPU rates measured for this project (rates.RECORDED_CPU, two
    cores); None for a run no measured CPU rate fits (ImageNet, another dtype or batch).
    Returns the minutes of the runs estimated and how many runs that is."""
    from resdepth.training import rates

    total, estimated = 0.0, 0
    for row in rows:
        rate = rates.cpu_rate_for(base.data.dataset, row["depth"], base.model.compute_dtype,
                                  base.optim.batch_size)
        row["cpu_rate"] = None if rate is None else rate.to_json()
        row["cpu_minutes"] = None if rate is None else 60 * rates.hours_at(
            rate, base.optim.total_steps, base.optim.batch_size)
        if rate is not None:
            total, estimated = total + row["cpu_minutes"], estimated + 1
    return {"estimated_cpu_minutes": total if estimated else None, "cpu_estimated_runs": estimated}


def dry_run_data(base: ExperimentConfig) -> dict[str, Any]:
    """Whether the grid's dataset is prepared where its runs will read it and, if not, what
    the first run downloads or needs and where (data's `readiness`; reads no data, starts no
    TensorFlow): {"dataset", "prepared", "folder", "first_run"}."""
    from resdepth.dataset_facts import family_of
    from resdepth.runtime import quiet

    quiet.quiet_logs()  # TFDS's absl warnings about folders not yet made
    if family_of(base.data.dataset) == "imagenet":
        from resdepth.data.imagenet_input import readiness
    else:
        from resdepth.data.datasets import readiness
    return readiness(base.data).to_json()


def _saved_status(run_dir: Path) -> str | None:
    """The run's status as `resdepth status` reads it; None for a run not started."""
    from resdepth.rundir.record import is_run_dir, read_run

    return read_run(run_dir).status if is_run_dir(run_dir) else None
