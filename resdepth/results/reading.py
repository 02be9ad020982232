"""Reading a study back: every run of a folder (through `rundir.record.read_run`, the one
run-directory reader), grouped over seeds, and mean ± std over them.

A run is evaluated on the test set, or with `data.val_split` on 10% of the training set held out
("validation"); only runs of one net, one evaluation split and one recipe (the same result-
changing config but for the seed, `rundir.identity.recipe_fingerprint`) are averaged together.
This module never imports JAX: tables and figures are made from the run files alone. A damaged
file never stops the others being read: `read_run` names it in a one-line warning.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from resdepth.errors import InvalidChoice
from resdepth.rundir.directory import RunDirectory
from resdepth.rundir.record import RunRecord, find_run_dirs, is_run_dir, read_run
from resdepth.rundir.summary import TEST


class NoRunsFound(InvalidChoice):
    """A folder the user named holds no run directory (nothing with summary.json/metrics.jsonl)."""


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (ddof=1; None for one value) and best (min) of n values."""

    mean: float
    std: float | None
    best: float
    n: int


@dataclasses.dataclass(frozen=True)
class RunGroup:
    """The runs of one net and recipe over seeds, sorted by seed.

    `variant` names the recipe where one net was run with several ("lr0.05" from run.tag, or
    "variant 2"); None where the net has one recipe.
    """

    dataset: str
    arch: str
    depth: int
    shortcut: str | None
    runs: tuple[RunRecord, ...]
    eval_split: str = TEST
    recipe: str | None = None
    variant: str | None = None

    @property
    def completed(self) -> tuple[RunRecord, ...]:
        return tuple(run for run in self.runs if run.completed)

    @property
    def label(self) -> str:
        """The net's name, and its variant where it has several: "ResNet-56 (lr0.05)"."""
        return self.runs[0].label + (f" ({self.variant})" if self.variant else "")

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
    """Runs grouped over seeds (same net, evaluation split and recipe).

    Ordered by dataset, test before validation, plain before residual, shortcut, depth, variant.
    """
    groups: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    members = {key: sorted(group, key=lambda run: (run.seed, run.name))
               for key, group in groups.items()}
    nets: dict[tuple, list[tuple]] = {}
    for key in sorted(members, key=lambda k: (members[k][0].seed, members[k][0].name)):
        nets.setdefault(key[:5], []).append(key)
    variant: dict[tuple, tuple[int, str | None]] = {}  # key -> (order within its net, name)
    for keys in nets.values():
        names = name_variants([members[key] for key in keys])
        variant.update((key, (index, name)) for index, (key, name) in enumerate(zip(keys, names)))
    arch_order = {"plain": 0, "residual": 1}
    ordered = sorted(members, key=lambda k: (k[0], k[4] != TEST, arch_order.get(k[1], 2), k[3],
                                             k[2], variant[k][0]))
    return [RunGroup(dataset=k[0], arch=k[1], depth=k[2], shortcut=k[3] or None,
                     runs=tuple(members[k]), eval_split=k[4], recipe=k[5] or None,
                     variant=variant[k][1])
            for k in ordered]


def name_variants(variants: Sequence[Sequence[RunRecord]]) -> list[str | None]:
    """Names for the variants (recipes) of one thing, in order: [None] for a single one.

    A variant whose runs share a tag no other variant has is named by it, else "variant i".
    """
    if len(variants) < 2:
        return [None] * len(variants)
    tags = [{run.tag for run in runs} for runs in variants]
    common = [next(iter(t)) if len(t) == 1 else "" for t in tags]
    return [tag if tag and common.count(tag) == 1 else f"variant {index}"
            for index, tag in enumerate(common, start=1)]


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
            f"no runs under {folder} (a run folder holds summary.json, metrics.jsonl, "
            "config.json or run.lock)")
    return experiments


def run_dirs_in(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(the trained runs that `paths` name, the files among `paths` that were passed over).

    Each path is a run directory, or a folder whose runs (at any depth) are taken, so that a
    shell glob such as `results/table3/*`, which also matches table.md and the figures, works.
    Only runs with a config.json (what evaluate and analyze rebuild the net from) are taken;
    each run once, in order. NoRunsFound for a path that does not exist, or when none is found.
    """
    runs: dict[Path, None] = {}
    files = []
    for path in map(Path, paths):
        if not path.exists():
            raise NoRunsFound(f"no such folder: {path}")
        if path.is_file():
            files.append(path)
            continue
        found = [path] if RunDirectory(path).config_path.is_file() else find_run_dirs(path)
        runs.update((run, None) for run in found if RunDirectory(run).config_path.is_file())
    if not runs:
        named = ", ".join(str(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
        raise NoRunsFound(f"no run directories in {named} (a run directory holds config.json)")
    return list(runs), files


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def load_runs(folder: Path) -> list[RunRecord]:
    """Every run at or below `folder`, read back (damaged files are named in warnings)."""
    return [read_run(path) for path in find_run_dirs(Path(folder))]


def load_run(path: Path) -> RunRecord:
    """One run directory, read back; tolerates a run still in progress (no summary.json yet)."""
    return read_run(path)
