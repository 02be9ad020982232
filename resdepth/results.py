"""Reading run directories back: what each run was, how it went, and mean ± std over seeds.

A run directory is any folder holding `summary.json` or `metrics.jsonl`; docs/run-directory.md
describes its files. summary.json is the authority on what a run was and how it ended; a run
still in progress has none yet, so config.json, metrics.jsonl and the folder's name stand in.

Errors are fractions in files and in `RunRecord`; the plots and tables show percent.
This module never imports JAX: tables and figures are made from these files alone.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from resdepth.architectures import InvalidChoice
from resdepth.run_files import (CONFIG_FILE, METRICS_FILE, RESPONSES_FILE, SUMMARY_FILE,
                                read_json as _read_json, read_jsonl as _read_jsonl)

TENCROP_FILE = "tencrop.json"
MULTISCALE_FILE = "multiscale.json"
COMPLETED = "completed"
# A run without summary.json is still running if it logged this recently, else it was stopped
# without a chance to write one (killed, or the machine went away).
RUNNING_IF_LOGGED_WITHIN_S = 15 * 60
_RUN_NAME = re.compile(r"^(plain|resnet)-(\d+)(?:-([ABC]))?-seed(\d+)$")


class NoRunsFound(InvalidChoice):
    """A folder the user named holds no run directory (nothing with summary.json/metrics.jsonl)."""


@dataclasses.dataclass(frozen=True)
class TrainPoint:
    """Training error (fraction) logged at `step` iterations (`epoch` if the run logged it)."""

    step: int
    error: float
    epoch: float | None = None


@dataclasses.dataclass(frozen=True)
class EvalPoint:
    """Test (or validation) error (fractions) at `step` iterations."""

    step: int
    error: float
    top5_error: float | None = None
    epoch: float | None = None


@dataclasses.dataclass(frozen=True)
class TopErrors:
    """Top-1 and top-5 error (fractions) of one test protocol (10-crop, multi-scale)."""

    top1: float
    top5: float | None = None


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run directory, read back. Errors are fractions; `arch` is "plain" or "residual"."""

    path: Path
    name: str
    experiment: str
    dataset: str
    arch: str
    depth: int
    shortcut: str | None  # None for plain nets, which have no shortcuts
    seed: int
    params: int | None
    status: str  # "completed", "diverged", ...; "running"/"incomplete" without summary.json
    steps: int | None  # iterations reached
    final_train_error: float | None
    final_test_error: float | None
    final_test_top5_error: float | None = None
    train: tuple[TrainPoint, ...] = ()
    evals: tuple[EvalPoint, ...] = ()
    layer_response_std: tuple[float, ...] | None = None
    tencrop: TopErrors | None = None
    multiscale: TopErrors | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def family(self) -> str:
        """"imagenet" or "cifar" (cifar10 and digits share the CIFAR nets)."""
        return "imagenet" if self.dataset == "imagenet" else "cifar"

    @property
    def label(self) -> str:
        """The paper's name for the net: "plain-20", "ResNet-56", "ResNet-34 B".

        The shortcut option is named on ImageNet (Table 3 compares them) and on CIFAR where it
        is not the paper's A.
        """
        if self.arch == "plain":
            return f"plain-{self.depth}"
        named = self.shortcut and (self.family == "imagenet" or self.shortcut != "A")
        suffix = f" {self.shortcut}" if named else ""
        return f"ResNet-{self.depth}{suffix}"

    @property
    def group_key(self) -> tuple[str, str, int, str]:
        """(dataset, arch, depth, shortcut or "") — the runs that differ only in seed."""
        return (self.dataset, self.arch, self.depth, self.shortcut or "")


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (ddof=1; None for one value) and best (min) of n values."""

    mean: float
    std: float | None
    best: float
    n: int


@dataclasses.dataclass(frozen=True)
class RunGroup:
    """The runs of one net (dataset, arch, depth, shortcut) over seeds, sorted by seed."""

    dataset: str
    arch: str
    depth: int
    shortcut: str | None
    runs: tuple[RunRecord, ...]

    @property
    def completed(self) -> tuple[RunRecord, ...]:
        return tuple(run for run in self.runs if run.completed)

    @property
    def label(self) -> str:
        return self.runs[0].label

    def stat(self, field: str) -> Stat | None:
        """Stat of a RunRecord field (e.g. "final_test_error") over completed runs that have it."""
        return summarize(getattr(run, field) for run in self.completed)


def summarize(values: Iterable[float | None]) -> Stat | None:
    """Mean, sample std (ddof=1, as the paper's "mean ± std of 5 runs"), min; None if empty.

    Missing (None) and non-finite values are left out. The std is None for a single value.
    """
    kept = [v for v in values if v is not None and math.isfinite(v)]
    if not kept:
        return None
    mean = sum(kept) / len(kept)
    std = (math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1))
           if len(kept) > 1 else None)
    return Stat(mean=mean, std=std, best=min(kept), n=len(kept))


def group_runs(runs: Iterable[RunRecord]) -> list[RunGroup]:
    """Runs grouped over seeds, ordered by dataset, plain before residual, shortcut, depth."""
    groups: dict[tuple[str, str, int, str], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    arch_order = {"plain": 0, "residual": 1}
    ordered = sorted(groups, key=lambda k: (k[0], arch_order.get(k[1], 2), k[3], k[2]))
    return [RunGroup(dataset=k[0], arch=k[1], depth=k[2], shortcut=k[3] or None,
                     runs=tuple(sorted(groups[k], key=lambda run: (run.seed, run.name))))
            for k in ordered]


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in (SUMMARY_FILE, METRICS_FILE))


def find_run_dirs(folder: Path) -> list[Path]:
    """Every run directory at or below `folder`, sorted; run directories are not searched inside."""
    found = []
    for root, dirs, _ in os.walk(folder):
        if is_run_dir(Path(root)):
            found.append(Path(root))
            dirs.clear()  # checkpoints and the like live inside a run
        else:
            dirs.sort()
    return sorted(found)


def find_experiments(folder: Path) -> list[Path]:
    """`folder` if it holds runs directly (or is a run), else each child folder holding runs."""
    folder = Path(folder)
    if is_run_dir(folder) or any(is_run_dir(child) for child in _subfolders(folder)):
        return [folder]
    return [child for child in _subfolders(folder) if find_run_dirs(child)]


def require_experiments(folder: Path) -> list[Path]:
    """find_experiments, or NoRunsFound naming the folder when it holds no runs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NoRunsFound(f"{folder} is not a folder")
    experiments = find_experiments(folder)
    if not experiments:
        raise NoRunsFound(
            f"no runs under {folder} (a run folder holds summary.json or metrics.jsonl)")
    return experiments


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def load_runs(folder: Path) -> list[RunRecord]:
    """Every run at or below `folder`, read back."""
    return [load_run(path) for path in find_run_dirs(Path(folder))]


def load_run(path: Path) -> RunRecord:
    """Reads one run directory; tolerates a run still in progress (no summary.json yet)."""
    path = Path(path)
    summary = _read_json(path / SUMMARY_FILE)
    status = None
    if summary is None:
        metrics = path / METRICS_FILE
        logged_at = metrics.stat().st_mtime if metrics.exists() else 0.0
        status = "running" if time.time() - logged_at < RUNNING_IF_LOGGED_WITHIN_S else "incomplete"
    return build_record(path, saved_config=_read_json(path / CONFIG_FILE) or {},
                        metrics=_read_jsonl(path / METRICS_FILE), summary=summary,
                        layer_responses=_read_json(path / RESPONSES_FILE),
                        tencrop=_read_json(path / TENCROP_FILE),
                        multiscale=_read_json(path / MULTISCALE_FILE), status=status)


def build_record(path: Path, saved_config: dict[str, Any] | None = None,
                 metrics: Sequence[dict[str, Any]] = (), summary: dict[str, Any] | None = None,
                 layer_responses: dict[str, Any] | None = None,
                 tencrop: dict[str, Any] | None = None, multiscale: dict[str, Any] | None = None,
                 status: str | None = None) -> RunRecord:
    """A RunRecord from the parsed contents of a run's files (docs/run-directory.md).

    `saved_config` is config.json as written: {"config": {...}, "code_version": ...}.
    Each fact comes from summary.json, else config.json, else the run directory's name
    ("resnet-56-A-seed3"). `status` overrides the summary's; without either it is "incomplete".
    """
    path = Path(path)
    summary = summary or {}
    config = (saved_config or {}).get("config", {})
    model, run_settings = config.get("model", {}), config.get("run", {})
    named = _RUN_NAME.match(path.name)
    arch = summary.get("arch") or (
        ("residual" if model["residual"] else "plain") if "residual" in model
        else "plain" if named and named[1] == "plain" else "residual")
    depth = summary.get("depth") or model.get("depth") or (int(named[2]) if named else 0)
    shortcut = summary.get("shortcut") or model.get("shortcut") or (named[3] if named else None)
    seed = _first(summary.get("seed"), run_settings.get("seed"), int(named[4]) if named else 0)
    train, evals = _metric_points(metrics)
    if summary:
        final_train, final_test = summary.get("final_train_error"), summary.get("final_test_error")
    else:  # still in progress: the latest logged errors stand in
        final_train = train[-1].error if train else None
        final_test = evals[-1].error if evals else None
    return RunRecord(
        path=path, name=path.name,
        experiment=summary.get("experiment") or config.get("name") or path.parent.name,
        dataset=summary.get("dataset") or config.get("data", {}).get("dataset", "cifar10"),
        arch=arch, depth=int(depth),
        shortcut=None if arch == "plain" else shortcut,  # the config names one even for plain
        seed=int(seed), params=summary.get("params"),
        status=status or summary.get("status") or "incomplete",
        steps=_first(summary.get("steps_done"),
                     max((p.step for p in (*train, *evals)), default=None)),
        final_train_error=final_train, final_test_error=final_test,
        final_test_top5_error=summary.get("final_test_top5_error") if summary else (
            evals[-1].top5_error if evals else None),
        train=train, evals=evals,
        layer_response_std=_response_std(layer_responses),
        tencrop=_top_errors(tencrop), multiscale=_top_errors(multiscale),
        config=config)


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next((value for value in values if value is not None), None)


def _metric_points(rows: Sequence[dict[str, Any]]
                   ) -> tuple[tuple[TrainPoint, ...], tuple[EvalPoint, ...]]:
    """Training and test points from metrics.jsonl rows, by step; null errors are skipped."""
    train, evals = [], []
    for row in rows:
        if row.get("type") == "train" and row.get("train_error") is not None:
            train.append(TrainPoint(row["step"], row["train_error"], row.get("epoch")))
        elif row.get("type") == "eval" and row.get("test_error") is not None:
            evals.append(EvalPoint(row["step"], row["test_error"], row.get("test_top5_error"),
                                   row.get("epoch")))
    return (tuple(sorted(train, key=lambda p: p.step)),
            tuple(sorted(evals, key=lambda p: p.step)))


def _response_std(data: dict[str, Any] | None) -> tuple[float, ...] | None:
    """The "std" of each layer of layer_responses.json, in network order."""
    layers = (data or {}).get("layers") or []
    ordered = sorted(layers, key=lambda layer: layer.get("index", 0))
    return tuple(float(layer["std"]) for layer in ordered) or None


def _top_errors(data: dict[str, Any] | None) -> TopErrors | None:
    if not data or data.get("top1_error") is None:
        return None
    return TopErrors(data["top1_error"], data.get("top5_error"))
