"""Reading run directories back: what each run was, how it went, and mean ± std over seeds.

A run directory is any folder holding `summary.json` or `metrics.jsonl`; docs/run-directory.md
describes its files. summary.json is the authority on what a run was and how it ended; a run
still in progress has none yet, so config.json, metrics.jsonl and the folder's name stand in.

Errors are fractions in files and in `RunRecord`; the plots and tables show percent.
A run is evaluated on the test set, or with `data.val_split` on 10% of the training set held out
("validation"); only runs of one net, one evaluation split and one recipe (the same result-
changing config but for the seed, `run_identity.recipe_fingerprint`) are averaged together.
This module never imports JAX: tables and figures are made from these files alone.

Reading never fails on a damaged file: a truncated or malformed summary.json, config.json,
metrics.jsonl (or analyze's and evaluate's files), or a field of the wrong type, is left out
with a one-line warning naming the file on the `resdepth.results.reading` logger (the CLI shows it on
stderr), and the other runs are read as usual.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from resdepth.rundir import identity as run_identity
from resdepth.errors import InvalidChoice
from resdepth.rundir.files import CONFIG_FILE, METRICS_FILE, RESPONSES_FILE, SUMMARY_FILE

TENCROP_FILE = "tencrop.json"
MULTISCALE_FILE = "multiscale.json"
COMPLETED = "completed"
# A run without summary.json is still running if it logged this recently, else it was stopped
# without a chance to write one (killed, or the machine went away).
RUNNING_IF_LOGGED_WITHIN_S = 15 * 60
# "resnet-56-A-seed0", "plain-20-seed3", and either with a tag: "resnet-56-A-seed0-lr0.05".
_RUN_NAME = re.compile(r"^(plain|resnet)-(\d+)(?:-([ABC]))?-seed(\d+)(?:-([A-Za-z0-9_.-]+))?$")
TEST, VALIDATION = "test", "validation"  # what a run's "test error" was measured on
log = logging.getLogger(__name__)


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
    # TEST; VALIDATION when its "test" errors are on 10% of the training set held out.
    eval_split: str = TEST
    tag: str = ""  # run.tag, which names a variant (also the run directory's name suffix)
    recipe: str | None = None  # run_identity.recipe_fingerprint of the config; None without one

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
    def net_key(self) -> tuple[str, str, int, str, str]:
        """(dataset, arch, depth, shortcut or "", eval_split): one net, evaluated one way."""
        return (self.dataset, self.arch, self.depth, self.shortcut or "", self.eval_split)

    @property
    def group_key(self) -> tuple[str, str, int, str, str, str]:
        """net_key + (recipe or ""): the runs that differ only in seed.

        Runs without a config (recipe None) share "" and so one group.
        """
        return (*self.net_key, self.recipe or "")


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
        found = [path] if (path / CONFIG_FILE).is_file() else find_run_dirs(path)
        runs.update((run, None) for run in found if (run / CONFIG_FILE).is_file())
    if not runs:
        named = ", ".join(str(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
        raise NoRunsFound(f"no run directories in {named} (a run directory holds config.json)")
    return list(runs), files


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def load_runs(folder: Path) -> list[RunRecord]:
    """Every run at or below `folder`, read back; a run that cannot be read is left out with a
    warning."""
    runs = []
    for path in find_run_dirs(Path(folder)):
        try:
            runs.append(load_run(path))
        except Exception as error:  # a damaged run must not cost the others their figures
            log.warning("%s: cannot be read (%s: %s); left out", path, type(error).__name__, error)
    return runs


def load_run(path: Path) -> RunRecord:
    """Reads one run directory; tolerates a run still in progress (no summary.json yet)."""
    files = read_run_files(path)
    return build_record(files.path, saved_config=files.config, metrics=files.metrics,
                        summary=files.summary, layer_responses=files.layer_responses,
                        tencrop=files.tencrop, multiscale=files.multiscale, status=files.status)


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """The parsed, type-checked files of one run directory; None (or no rows) where a file is
    missing or unreadable. `status` is "running"/"incomplete" for a run without summary.json."""

    path: Path
    summary: dict[str, Any] | None
    config: dict[str, Any] | None
    metrics: tuple[dict[str, Any], ...]
    layer_responses: dict[str, Any] | None
    tencrop: dict[str, Any] | None
    multiscale: dict[str, Any] | None
    status: str | None
    metrics_mtime: float | None  # when metrics.jsonl was last written (seconds since the epoch)


def read_run_files(path: Path) -> RunFiles:
    """Every file of a run directory, with each damaged file or field warned about and left out."""
    path = Path(path)
    summary = _checked(read_object(path / SUMMARY_FILE), path / SUMMARY_FILE, SUMMARY_FIELDS)
    config = _checked_config(read_object(path / CONFIG_FILE), path / CONFIG_FILE)
    metrics = read_metrics(path / METRICS_FILE)
    try:
        mtime = (path / METRICS_FILE).stat().st_mtime
    except OSError:
        mtime = None
    status = None
    if summary is None:
        recent = mtime is not None and time.time() - mtime < RUNNING_IF_LOGGED_WITHIN_S
        status = "running" if recent else "incomplete"
    return RunFiles(path=path, summary=summary, config=config, metrics=metrics,
                    layer_responses=_checked_responses(path / RESPONSES_FILE),
                    tencrop=_checked(read_object(path / TENCROP_FILE), path / TENCROP_FILE, TOP_FIELDS),
                    multiscale=_checked(read_object(path / MULTISCALE_FILE), path / MULTISCALE_FILE,
                                        TOP_FIELDS),
                    status=status, metrics_mtime=mtime)


# What each field of the files must be (docs/run-directory.md); others are kept as they are.
_INT, _NUMBER, _TEXT, _FLAG = "a whole number", "a number", "text", "true or false"
SUMMARY_FIELDS = {
    "status": _TEXT, "name": _TEXT, "experiment": _TEXT, "dataset": _TEXT, "arch": _TEXT,
    "depth": _INT, "shortcut": _TEXT, "seed": _INT, "params": _INT, "steps_done": _INT,
    "total_steps": _INT, "final_test_error": _NUMBER, "final_test_loss": _NUMBER,
    "final_train_error": _NUMBER, "final_test_top5_error": _NUMBER, "wall_s": _NUMBER,
    "warmup_switch_step": _INT, "message": _TEXT, "eval_split": _TEXT}
CONFIG_FIELDS = {
    "name": _TEXT, "model.depth": _INT, "model.residual": _FLAG, "model.shortcut": _TEXT,
    "data.dataset": _TEXT, "data.val_split": _FLAG, "run.seed": _INT, "run.tag": _TEXT,
    "optim.total_steps": _INT, "optim.batch_size": _INT}
METRICS_FIELDS = {
    "type": _TEXT, "step": _INT, "epoch": _NUMBER, "train_error": _NUMBER, "train_loss": _NUMBER,
    "test_error": _NUMBER, "test_loss": _NUMBER, "test_top5_error": _NUMBER,
    "images_per_s": _NUMBER, "wall_s": _NUMBER, "learning_rate": _NUMBER}
TOP_FIELDS = {"top1_error": _NUMBER, "top5_error": _NUMBER}
_CHOICES = {"arch": ("plain", "residual"), "shortcut": ("A", "B", "C")}


def _is(kind: str, value: Any) -> bool:
    if value is None:
        return True  # every field may be null (a diverged loss is written as null)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _FLAG:
        return isinstance(value, bool)
    return isinstance(value, str)


def _bad_fields(data: dict[str, Any], fields: dict[str, str]) -> list[str]:
    """'depth is 'x', not a whole number' for each field of `data` of the wrong type."""
    problems = []
    for key, kind in fields.items():
        if key in data and not _is(kind, data[key]):
            problems.append(f"{key} is {_short(data[key])}, not {kind}")
        elif key in _CHOICES and data.get(key) is not None and data[key] not in _CHOICES[key]:
            problems.append(f"{key} is {_short(data[key])}, not one of {', '.join(_CHOICES[key])}")
    return problems


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_object(path: Path) -> dict[str, Any] | None:
    """A JSON file holding one object, or None: silently when the file is missing, with a
    warning naming the file when it cannot be read, is not JSON (truncated), or is not an object."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        log.warning("%s: cannot be read (%s); ignored", path, getattr(error, "strerror", None) or error)
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        log.warning("%s: not valid JSON (%s%s); ignored", path, error.msg,
                    ", truncated?" if error.pos >= len(text.rstrip()) else f" at line {error.lineno}")
        return None
    if not isinstance(data, dict):
        log.warning("%s: holds a JSON %s, not an object; ignored", path, type(data).__name__)
        return None
    return data


def _checked(data: dict[str, Any] | None, path: Path, fields: dict[str, str]) -> dict[str, Any] | None:
    """`data` without the fields of the wrong type (one warning naming the file lists them)."""
    if data is None:
        return None
    problems = _bad_fields(data, fields)
    if not problems:
        return data
    log.warning("%s: %s; ignored", path, "; ".join(problems))
    bad = {problem.split(" is ", 1)[0] for problem in problems}
    return {key: value for key, value in data.items() if key not in bad}


def _checked_config(data: dict[str, Any] | None, path: Path) -> dict[str, Any] | None:
    """config.json with its sections and the fields resdepth reads type-checked."""
    if data is None:
        return None
    config = data.get("config")
    if not isinstance(config, dict):
        log.warning("%s: has no \"config\" object; ignored", path)
        return None
    problems, clean = [], {}
    for key, value in config.items():
        if key in ("model", "data", "optim", "run", "sweep") and not isinstance(value, dict):
            problems.append(f"{key} is {_short(value)}, not a section")
        else:
            clean[key] = dict(value) if isinstance(value, dict) else value
    for dotted, kind in CONFIG_FIELDS.items():
        section, _, key = dotted.rpartition(".")
        holder = clean.get(section) if section else clean
        if isinstance(holder, dict) and key in holder and not _is(kind, holder[key]):
            problems.append(f"{dotted} is {_short(holder.pop(key))}, not {kind}")
    if problems:
        log.warning("%s: %s; ignored", path, "; ".join(problems))
    return {**data, "config": clean}


def read_metrics(path: Path) -> tuple[dict[str, Any], ...]:
    """The well-formed rows of metrics.jsonl (a dict with a "type" and a whole "step").

    A last line without its newline is a row being written (or cut short by a crash, which a
    resume truncates) and is skipped quietly; any other malformed row is skipped with one
    warning for the file.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as error:
        log.warning("%s: cannot be read (%s); ignored", path, getattr(error, "strerror", None) or error)
        return ()
    lines = text.split("\n")
    rows, bad = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number < len(lines):  # the last piece has no newline after it: being written
                bad.append(f"line {number} is not JSON")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("type"), str) or not _is(_INT, row.get("step")) \
                or row.get("step") is None:
            bad.append(f"line {number} is not a row with a type and a step")
            continue
        problems = _bad_fields(row, METRICS_FIELDS)
        if problems:
            bad.append(f"line {number}: {problems[0]}")
            continue
        rows.append(row)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        log.warning("%s: skipped %d malformed row%s: %s%s", path, len(bad),
                    "s" if len(bad) > 1 else "", bad[0], more)
    return tuple(rows)


def _checked_responses(path: Path) -> dict[str, Any] | None:
    data = read_object(path)
    if data is None:
        return None
    layers = data.get("layers")
    if not isinstance(layers, list) or not all(
            isinstance(layer, dict) and _is(_NUMBER, layer.get("std")) and layer.get("std") is not None
            and _is(_INT, layer.get("index")) for layer in layers):
        log.warning("%s: \"layers\" is not a list of {\"index\", \"std\"} entries; ignored", path)
        return None
    return data


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
    # Runs from before summary.json named its split say so only in config.json.
    split = summary.get("eval_split") or (
        VALIDATION if config.get("data", {}).get("val_split") else TEST)
    eval_split = TEST if split == TEST else VALIDATION
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
        config=config, eval_split=eval_split,
        tag=run_settings.get("tag") or (named[5] if named and named[5] else ""),
        recipe=run_identity.recipe_fingerprint(config) if config else None)


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
