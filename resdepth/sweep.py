"""A depth sweep: every (architecture, depth, seed) of a grid, one run directory each.

Completed runs are skipped, interrupted ones resume from their checkpoint, and a run that
diverges or fails is recorded and the sweep goes on. `shard(grid, index, count)` splits a grid
into disjoint parts so several machines (a SLURM array, say) can share one results folder.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from resdepth.architectures import InvalidChoice, family_of, stage_plan
from resdepth.config import ExperimentConfig
from resdepth.run_files import SUMMARY_FILE, read_json, run_name, write_json

ARCHS = ("plain", "residual")


@dataclasses.dataclass(frozen=True)
class GridPoint:
    arch: str  # "plain" or "residual"
    depth: int
    seed: int


def expand_grid(config: ExperimentConfig) -> list[GridPoint]:
    """The sweep's runs in a stable order: architecture, then depth, then seed."""
    sweep = config.sweep
    family = family_of(config.data.dataset)
    points = []
    for arch in sweep.archs:
        if arch not in ARCHS:
            raise InvalidChoice(f"unknown architecture {arch!r}; choose plain or residual")
        for depth in sweep.depths_by_arch.get(arch, sweep.depths):
            stage_plan(family, depth)  # validates the depth for the dataset's family
            seeds = sweep.seeds_for(arch, depth)
            points.extend(GridPoint(arch, depth, seed) for seed in seeds)
    return points


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N (I counts from 0, like SLURM_ARRAY_TASK_ID)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InvalidChoice(f"--shard must look like I/N (for example 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InvalidChoice(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return index, count


def shard(points: list[GridPoint], index: int, count: int) -> list[GridPoint]:
    """Every count-th run starting at index: disjoint parts that together cover the grid."""
    return points[index::count]


def point_config(base: ExperimentConfig, point: GridPoint) -> ExperimentConfig:
    config = copy.deepcopy(base)
    config.model.depth = point.depth
    config.model.residual = point.arch == "residual"
    config.run.seed = point.seed
    return config


def run_dir_for(out: Path, config: ExperimentConfig) -> Path:
    return out / config.name / run_name(config)


def run_sweep(base: ExperimentConfig, points: list[GridPoint], out: Path,
              on_run: Callable[[GridPoint, ExperimentConfig, Path], Callable[[Any], None]],
              stop: threading.Event) -> list[dict[str, Any]]:
    """Runs `points` in order; returns one summary per run attempted (or skipped as done).

    `on_run(point, config, run_dir)` returns the event sink for that run. The sweep stops after
    an interrupted run (Ctrl-C), so running it again resumes exactly there.
    """
    from resdepth.train import train_and_evaluate

    summaries = []
    for point in points:
        config = point_config(base, point)
        run_dir = run_dir_for(out, config)
        try:
            summary = train_and_evaluate(config, run_dir, on_run(point, config, run_dir), stop)
        except InvalidChoice:
            raise  # a user error (no dataset, unwritable folder) stops the whole sweep
        except Exception as error:  # a bug or crash in one run must not cost the others
            summary = {"name": run_dir.name, "experiment": config.name, "status": "failed",
                       "arch": point.arch, "depth": point.depth, "seed": point.seed,
                       "dataset": config.data.dataset, "shortcut": config.model.shortcut,
                       "message": f"{type(error).__name__}: {error}",
                       "traceback": traceback.format_exc()}
            run_dir.mkdir(parents=True, exist_ok=True)
            previous = read_json(run_dir / SUMMARY_FILE) or {}
            write_json(run_dir / SUMMARY_FILE, {**previous, **summary})
        summaries.append(summary)
        if summary.get("status") == "interrupted" or stop.is_set():
            break
    return summaries


def dry_run_rows(base: ExperimentConfig, points: list[GridPoint], out: Path) -> list[dict[str, Any]]:
    """Per run: parameters, multiply-adds per image, and the training compute of the schedule.

    Training compute counts 3 forward passes' worth of multiply-adds per image (forward, and a
    backward pass of about twice the forward), times 2 FLOPs per multiply-add.
    """
    from resdepth.complexity import count_multiply_adds, count_params
    from resdepth.data import IMAGE_SIZE_PIXELS, IN_CHANNELS, NUM_CLASSES
    from resdepth.models import abstract_model
    from resdepth.train import model_spec

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
                     "done": (read_json(run_dir_for(out, config) / SUMMARY_FILE) or {}).get("status")})
    return rows
