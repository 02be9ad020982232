"""A run directory read back: `read_run(path)`, the one reader every command uses
(docs/run-directory.md), and the `RunRecord` it returns.

`read_run` parses and type-checks each file (rundir/schema.py, rundir/metrics.py), warns once per
damaged file naming it (one line on stderr in the CLI), infers the run's status
(rundir/run_status.py) and says in the record what it could not know. A run is "completed" only
when summary.json says so *and* metrics.jsonl holds the rows of its last iteration; a completed
run whose metrics are cut short, or a summary.json that cannot be read, makes the run "damaged",
never "completed" with numbers that are not its final ones.

Errors are fractions in files and in the record; plots and tables show percent. Pure Python with
no JAX import: tables and figures are made from these files alone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resdepth.rundir import identity
from resdepth.rundir.directory import RunDirectory
from resdepth.rundir.lock import holder
from resdepth.rundir.metrics import read_metrics
from resdepth.rundir.run_status import current_status
from resdepth.rundir.signals import Signals
from resdepth.rundir.schema import SUMMARY_FIELDS, TOP_FIELDS, checked_responses, read_checked
from resdepth.dataset_facts import DATASET_FAMILIES
from resdepth.rundir.summary import COMPLETED, DAMAGED, TEST, VALIDATION  # noqa: F401

# ------------------------------------------------------------------------------- the record
@dataclasses.dataclass(frozen=True)
class TrainPoint:
    """Training error (fraction) logged at `step` iterations (`epoch` if the run logged it),
    with the interval's images/s and the run's wall-clock seconds where logged."""

    step: int
    error: float
    epoch: float | None = None
    images_per_s: float | None = None
    wall_s: float | None = None


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
    """One run directory, read back. Errors are fractions; `arch` is "plain" or "residual".

    status: a current summary's "completed" | "diverged" | "interrupted" | "failed";
    "running" (a process holds its lock, or without a lock it logged recently), "stopped" (the
    lock file of a process that died, no summary since), "incomplete" (neither), or "damaged"
    (`damage` says which file and what could not be known). The final errors are the summary's
    for a run that ended, else the latest logged (a run in progress).
    """

    path: Path
    name: str
    experiment: str
    dataset: str
    arch: str
    depth: int
    shortcut: str | None  # None for plain nets, which have no shortcuts
    seed: int
    params: int | None
    status: str
    steps: int | None  # iterations reached
    final_train_error: float | None
    final_test_error: float | None
    final_test_top5_error: float | None = None
    train: tuple[TrainPoint, ...] = ()
    evals: tuple[EvalPoint, ...] = ()
    layer_response_std: tuple[float, ...] | None = None
    # Forward and backward signals per layer over training (signals.jsonl); None for a run
    # made before they were recorded.
    signals: Signals | None = dataclasses.field(default=None, compare=False)
    tencrop: TopErrors | None = None
    multiscale: TopErrors | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    # TEST; VALIDATION when its "test" errors are on 10% of the training set held out.
    eval_split: str = TEST
    tag: str = ""  # run.tag, which names a variant (also the run directory's name suffix)
    recipe: str | None = None  # config.json's recipe fingerprint; None without a config
    total_steps: int | None = None
    # The iteration the learning-rate warm-up ended (summary.json); None: no warm-up, or not yet.
    warmup_switch_step: int | None = None
    wall_s: float | None = None
    message: str = ""  # why a run failed, diverged, was interrupted or is damaged
    damage: tuple[str, ...] = ()  # "summary.json: not valid JSON", one entry per damaged file
    lock_host: str | None = None
    lock_pid: int | None = None
    code_version: str | None = None  # as config.json recorded them
    jax_version: str | None = None
    devices: tuple[str, ...] = ()
    ended: bool = False  # a current summary.json says how it ended (its final errors are final)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def family(self) -> str:
        """"imagenet" or "cifar" (cifar10 and digits share the CIFAR nets); "cifar" for a run
        whose dataset is unknown here."""
        return DATASET_FAMILIES.get(self.dataset, "cifar")

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



# ------------------------------------------------------------------------- finding and reading
def is_run_dir(path: Path) -> bool:
    return RunDirectory(path).is_run()


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



def read_run(path: Path) -> RunRecord:
    """One run directory, read and validated; never raises on a damaged file (it is named in a
    warning and the record says what could not be known)."""
    run = RunDirectory(path)
    damage: list[str] = []
    summary = read_checked(run.summary_path, SUMMARY_FIELDS, damage)
    saved_config = run.read_config(damage=damage)
    metrics = read_metrics(run.metrics_path, damage)
    responses = checked_responses(run.responses_path, damage)
    signals = run.read_signals(damage)
    tencrop = read_checked(run.result_path("10crop"), TOP_FIELDS, damage)
    multiscale = read_checked(run.result_path("multiscale"), TOP_FIELDS, damage)
    held = holder(run.path) if run.lock_path.exists() else None
    status, summary, message = current_status(run, summary, metrics, held, damage)
    return build_record(run.path, saved_config=saved_config, metrics=metrics, summary=summary,
                        layer_responses=responses, tencrop=tencrop, multiscale=multiscale,
                        status=status, message=message, damage=tuple(damage),
                        lock=(held.host, held.pid) if held else None, signals=signals)


# ------------------------------------------------------------------- the record from the files
def build_record(path: Path, saved_config: dict[str, Any] | None = None,
                 metrics: Sequence[dict[str, Any]] = (), summary: dict[str, Any] | None = None,
                 layer_responses: dict[str, Any] | None = None,
                 tencrop: dict[str, Any] | None = None, multiscale: dict[str, Any] | None = None,
                 status: str | None = None, message: str | None = None,
                 damage: tuple[str, ...] = (), lock: tuple[str, int] | None = None,
                 signals: Signals | None = None) -> RunRecord:
    """A RunRecord from the parsed, checked contents of a run's files (docs/run-directory.md).

    `saved_config` is config.json as written: {"config": {...}, "code_version": ...}.
    Each fact comes from summary.json, else config.json, else the run directory's name
    ("resnet-56-A-seed3"). `status` overrides the summary's; without either it is "incomplete".
    """
    path = Path(path)
    summary = summary or {}
    saved_config = saved_config or {}
    config = saved_config.get("config", {})
    model, run_settings = config.get("model", {}), config.get("run", {})
    named = identity.parse_run_name(path.name)
    arch = summary.get("arch") or (
        ("residual" if model["residual"] else "plain") if "residual" in model
        else named.arch if named else "residual")
    depth = summary.get("depth") or model.get("depth") or (named.depth if named else 0)
    shortcut = summary.get("shortcut") or model.get("shortcut") or (named.shortcut if named else None)
    seed = _first(summary.get("seed"), run_settings.get("seed"), named.seed if named else 0)
    # Runs from before summary.json named its split say so only in config.json.
    split = summary.get("eval_split") or (
        VALIDATION if config.get("data", {}).get("val_split") else TEST)
    eval_split = TEST if split == TEST else VALIDATION
    train, evals = _metric_points(metrics)
    if summary:
        final_train, final_test = summary.get("final_train_error"), summary.get("final_test_error")
        final_top5 = summary.get("final_test_top5_error")
    elif status == DAMAGED:  # how it ended is unknown: no final errors
        final_train = final_test = final_top5 = None
    else:  # still in progress: the latest logged errors stand in
        final_train = train[-1].error if train else None
        final_test = evals[-1].error if evals else None
        final_top5 = evals[-1].top5_error if evals else None
    recipe = saved_config.get("recipe_fingerprint") if isinstance(
        saved_config.get("recipe_fingerprint"), str) else None
    if config and recipe is None:  # runs written before config.json stored it
        recipe = identity.recipe_fingerprint(config)
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
        final_test_top5_error=final_top5,
        train=train, evals=evals,
        layer_response_std=_response_std(layer_responses), signals=signals,
        tencrop=_top_errors(tencrop), multiscale=_top_errors(multiscale),
        config=config, eval_split=eval_split,
        tag=run_settings.get("tag") or (named.tag if named else ""),
        recipe=recipe,
        total_steps=_first(summary.get("total_steps"), config.get("optim", {}).get("total_steps")),
        warmup_switch_step=summary.get("warmup_switch_step"),
        wall_s=summary.get("wall_s"),
        message=(summary.get("message") or "") if message is None else message,
        damage=damage, lock_host=lock[0] if lock else None, lock_pid=lock[1] if lock else None,
        code_version=saved_config.get("code_version"), jax_version=saved_config.get("jax_version"),
        devices=tuple(saved_config.get("devices") or ()), ended=bool(summary))


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next((value for value in values if value is not None), None)


def _metric_points(rows: Sequence[dict[str, Any]]
                   ) -> tuple[tuple[TrainPoint, ...], tuple[EvalPoint, ...]]:
    """Training and test points from metrics.jsonl rows, by step; null errors are skipped."""
    train, evals = [], []
    for row in rows:
        if row.get("type") == "train" and row.get("train_error") is not None:
            train.append(TrainPoint(row["step"], row["train_error"], row.get("epoch"),
                                    row.get("images_per_s"), row.get("wall_s")))
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
