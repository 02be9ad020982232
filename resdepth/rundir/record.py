"""The run directory's contract: the typed summary its writers write, and the one reader.

`read_run(path)` is how every command reads a run directory (docs/run-directory.md): it parses
and type-checks each file, warns once per damaged file naming it (on this module's logger; the
CLI shows it on stderr as one line), and returns a `RunRecord` that says what it could not
know. A run is "completed" only when summary.json says so *and* metrics.jsonl holds the rows of
its last iteration; a completed run whose metrics are cut short, or a summary.json that cannot
be read, makes the run "damaged", never "completed" with numbers that are not its final ones.

`Summary` is summary.json: the training loop writes it when a run ends (completed, diverged,
interrupted), a sweep writes it for a run that crashed ("failed").

Errors are fractions in files and in the record; plots and tables show percent. Pure Python with
no JAX import: tables and figures are made from these files alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resdepth.rundir import identity
from resdepth.rundir.files import (CONFIG_FILE, METRICS_FILE, RESPONSES_FILE, SUMMARY_FILE,
                                   read_json, write_json)
from resdepth.rundir.lock import LOCK_FILE, holder

TENCROP_FILE = "tencrop.json"
MULTISCALE_FILE = "multiscale.json"
COMPLETED, DAMAGED = "completed", "damaged"
# A summary's statuses; a run without a current summary is "running", "stopped" or "incomplete".
ENDED = (COMPLETED, "diverged", "interrupted", "failed")
# A run without summary.json is still running if it logged this recently, else it was stopped
# without a chance to write one (killed, or the machine went away).
RUNNING_IF_LOGGED_WITHIN_S = 15 * 60
TEST, VALIDATION = "test", "validation"  # what a run's "test error" was measured on
# A folder holding any of these is a run directory (a run that has only started holds a lock
# file or config.json, no metrics yet).
RUN_FILES = (SUMMARY_FILE, METRICS_FILE, CONFIG_FILE, LOCK_FILE)
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- summary.json
@dataclasses.dataclass
class Summary:
    """summary.json: how a run ended and its final numbers (errors as fractions).

    status: "completed" | "diverged" | "interrupted" | "failed". The final errors are those of
    the last iteration (never the best over evaluations); None where the run did not get there.
    `eval_split` is "validation" for a --val-split run (its "test" errors are on training images
    held out). `packed_seeds`: how many runs trained in one program, this one included (1: alone).
    """

    status: str
    name: str
    experiment: str | None = None
    dataset: str | None = None
    arch: str | None = None
    depth: int | None = None
    shortcut: str | None = None
    seed: int | None = None
    params: int | None = None
    total_steps: int | None = None
    steps_done: int | None = None
    final_train_error: float | None = None
    final_test_error: float | None = None
    final_test_loss: float | None = None
    final_test_top5_error: float | None = None
    wall_s: float | None = None
    warmup_switch_step: int | None = None
    warmup_switch_reason: str | None = None
    eval_split: str = TEST
    fingerprint: str | None = None
    packed_seeds: int = 1
    message: str = ""
    traceback: str | None = None  # a failed run's, for whoever debugs it

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["traceback"] is None:
            del data["traceback"]
        return data

    def write(self, run_dir: Path) -> None:
        """Writes run_dir/summary.json atomically (a reader never sees half of it)."""
        write_json(Path(run_dir) / SUMMARY_FILE, self.to_json())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Summary":
        """From a type-checked summary.json object (`read_run` checks it); unknown keys are
        dropped."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known and value is not None})


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
    tencrop: TopErrors | None = None
    multiscale: TopErrors | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    # TEST; VALIDATION when its "test" errors are on 10% of the training set held out.
    eval_split: str = TEST
    tag: str = ""  # run.tag, which names a variant (also the run directory's name suffix)
    recipe: str | None = None  # config.json's recipe fingerprint; None without a config
    total_steps: int | None = None
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


# ------------------------------------------------------------------------- finding and reading
def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in RUN_FILES)


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


def completed_summary(run_dir: Path) -> Summary | None:
    """The summary of a finished run (one a rerun leaves untouched), or None; quiet, and never
    raises on a damaged file (a run whose summary cannot be read is not finished)."""
    data = read_json(Path(run_dir) / SUMMARY_FILE)
    if isinstance(data, dict) and data.get("status") == COMPLETED and not _bad_fields(data, SUMMARY_FIELDS):
        return Summary.from_json(data)
    return None


def read_run(path: Path) -> RunRecord:
    """One run directory, read and validated; never raises on a damaged file (it is named in a
    warning and the record says what could not be known)."""
    path = Path(path)
    damage: list[str] = []
    summary = _checked(read_object(path / SUMMARY_FILE, damage), path / SUMMARY_FILE,
                       SUMMARY_FIELDS, damage)
    saved_config = identity.saved_as_current(
        _checked_config(read_object(path / CONFIG_FILE, damage), path / CONFIG_FILE, damage))
    metrics = read_metrics(path / METRICS_FILE, damage)
    responses = _checked_responses(path / RESPONSES_FILE, damage)
    tencrop = _checked(read_object(path / TENCROP_FILE, damage), path / TENCROP_FILE, TOP_FIELDS, damage)
    multiscale = _checked(read_object(path / MULTISCALE_FILE, damage), path / MULTISCALE_FILE,
                          TOP_FIELDS, damage)
    held = holder(path) if (path / LOCK_FILE).exists() else None
    status, summary, message = _current_status(path, summary, metrics, held, damage)
    return build_record(path, saved_config=saved_config, metrics=metrics, summary=summary,
                        layer_responses=responses, tencrop=tencrop, multiscale=multiscale,
                        status=status, message=message, damage=tuple(damage),
                        lock=(held.host, held.pid) if held else None)


def _current_status(path: Path, summary: dict[str, Any] | None, metrics: Sequence[dict[str, Any]],
                    held: Any, damage: list[str]) -> tuple[str, dict[str, Any] | None, str]:
    """(status, the summary if it describes the run as it is now, else None, message)."""
    logged = max((row["step"] for row in metrics), default=None)
    saved = summary.get("status") if summary else None
    if summary is not None and saved not in ENDED:
        _damaged(path / SUMMARY_FILE, f"status is {_short(saved)}, not one of {', '.join(ENDED)}", damage)
        summary = None
    if (path / SUMMARY_FILE).exists() and summary is None:
        if held is not None:
            return "running", None, ""  # a resumed run; its new summary comes when it ends
        return DAMAGED, None, "summary.json cannot be read: how the run ended and its final errors are unknown"
    if saved == COMPLETED:
        missing = _missing_final_rows(summary, metrics)
        if missing:
            _damaged(path / METRICS_FILE, missing, damage)
            return DAMAGED, summary, f"{missing}; the final errors shown are summary.json's"
        return COMPLETED, summary, ""
    done = summary.get("steps_done") if summary else None
    if summary is not None and logged is not None and done is not None and logged > done:
        summary = None  # from an earlier session: the run went on after it (resumed, then killed)
    if held is not None:
        return "running", None, ""
    if summary is not None:
        return saved, summary, summary.get("message") or ""
    if (path / LOCK_FILE).exists():  # the lock file of a process that died (its lock went with it)
        after = f" after iteration {logged}" if logged is not None else ""
        return "stopped", None, f"its process died{after} without writing a summary (killed?)"
    try:
        recent = time.time() - (path / METRICS_FILE).stat().st_mtime < RUNNING_IF_LOGGED_WITHIN_S
    except OSError:
        recent = False
    return ("running" if recent else "incomplete"), None, ""


def _missing_final_rows(summary: dict[str, Any], metrics: Sequence[dict[str, Any]]) -> str:
    """"" when metrics.jsonl holds the completed run's last rows, else what is missing."""
    done = summary.get("steps_done")
    if done is None:
        return ""
    if not metrics:
        return f"no rows, but summary.json says the run completed {done:,} iterations"
    kinds = {(row["type"], row["step"]) for row in metrics}
    last = max(row["step"] for row in metrics)
    if ("train", done) not in kinds or (summary.get("final_test_error") is not None
                                         and ("eval", done) not in kinds):
        return (f"ends at iteration {last:,} without the rows of iteration {done:,}, where "
                f"summary.json says the run completed (cut short?)")
    return ""


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
# A summary with one of these damaged cannot say how the run ended or what it reached.
_VITAL_SUMMARY_FIELDS = ("status", "steps_done", "final_train_error", "final_test_error")


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


def _damaged(path: Path, problem: str, damage: list[str] | None) -> None:
    """One warning line naming the file, and the problem kept for the record."""
    log.warning("%s: %s", path, problem)
    if damage is not None:
        damage.append(f"{Path(path).name}: {problem}")


def read_object(path: Path, damage: list[str] | None = None) -> dict[str, Any] | None:
    """A JSON file holding one object, or None: silently when the file is missing, with a
    warning naming the file when it cannot be read, is not JSON (truncated), or is not an object."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        _damaged(path, f"cannot be read ({error.strerror or error}); ignored", damage)
        return None
    except UnicodeDecodeError:
        _damaged(path, "not UTF-8 text (damaged bytes); ignored", damage)
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        where = ", truncated?" if error.pos >= len(text.rstrip()) else f" at line {error.lineno}"
        _damaged(path, f"not valid JSON ({error.msg}{where}); ignored", damage)
        return None
    if not isinstance(data, dict):
        _damaged(path, f"holds a JSON {type(data).__name__}, not an object; ignored", damage)
        return None
    return data


def _checked(data: dict[str, Any] | None, path: Path, fields: dict[str, str],
             damage: list[str] | None = None) -> dict[str, Any] | None:
    """`data` without the fields of the wrong type (one warning naming the file lists them).
    A summary whose status, iterations or final errors are damaged is not used at all."""
    if data is None:
        return None
    problems = _bad_fields(data, fields)
    if not problems:
        return data
    bad = {problem.split(" is ", 1)[0] for problem in problems}
    if fields is SUMMARY_FIELDS and bad & set(_VITAL_SUMMARY_FIELDS):
        _damaged(path, "; ".join(problems) + "; ignored", damage)
        return None
    _damaged(path, "; ".join(problems) + "; those fields ignored", damage)
    return {key: value for key, value in data.items() if key not in bad}


def _checked_config(data: dict[str, Any] | None, path: Path,
                    damage: list[str] | None = None) -> dict[str, Any] | None:
    """config.json with its sections and the fields resdepth reads type-checked."""
    if data is None:
        return None
    config = data.get("config")
    if not isinstance(config, dict):
        _damaged(path, 'has no "config" object; ignored', damage)
        return None
    problems, clean = [], {}
    for key, value in config.items():
        if key in ("model", "data", "optim", "run", "sweep") and not isinstance(value, dict):
            problems.append(f"{key} is {_short(value)}, not a section")
        else:
            clean[key] = dict(value) if isinstance(value, dict) else value
    for dotted, kind in CONFIG_FIELDS.items():
        section, _, key = dotted.rpartition(".")
        where = clean.get(section) if section else clean
        if isinstance(where, dict) and key in where and not _is(kind, where[key]):
            problems.append(f"{dotted} is {_short(where.pop(key))}, not {kind}")
    for key in ("recipe_fingerprint", "code_version", "jax_version"):
        if key in data and not isinstance(data[key], str):
            problems.append(f"{key} is {_short(data.pop(key))}, not text")
    if "devices" in data and not (isinstance(data["devices"], list)
                                  and all(isinstance(d, str) for d in data["devices"])):
        problems.append(f"devices is {_short(data.pop('devices'))}, not a list of text")
    if problems:
        _damaged(path, "; ".join(problems) + "; ignored", damage)
    return {**data, "config": clean}


def read_metrics(path: Path, damage: list[str] | None = None) -> tuple[dict[str, Any], ...]:
    """The well-formed rows of metrics.jsonl (a dict with a "type" and a whole "step").

    A last line without its newline is a row being written (or cut short by a crash, which a
    resume truncates) and is skipped quietly; any other malformed row is skipped with one
    warning for the file.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return ()
    except OSError as error:
        _damaged(path, f"cannot be read ({error.strerror or error}); ignored", damage)
        return ()
    lines = data.split(b"\n")
    rows, bad = [], []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append(f"line {number} is not UTF-8 text")
            continue
        except json.JSONDecodeError:
            if number < len(lines):  # the last piece has no newline after it: being written
                bad.append(f"line {number} is not JSON")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("type"), str) or not _is(_INT, row.get("step")) \
                or row.get("step") is None:
            bad.append(f"line {number} is not a row with a type and a step")
            continue
        if row["type"] not in ("train", "eval"):
            bad.append(f"line {number}: type is {_short(row['type'])}, not train or eval")
            continue
        problems = _bad_fields(row, METRICS_FIELDS)
        if problems:
            bad.append(f"line {number}: {problems[0]}")
            continue
        rows.append(row)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        _damaged(path, f"skipped {len(bad)} malformed row{'s' if len(bad) > 1 else ''}: "
                       f"{bad[0]}{more}", damage)
    return tuple(rows)


def _checked_responses(path: Path, damage: list[str] | None = None) -> dict[str, Any] | None:
    data = read_object(path, damage)
    if data is None:
        return None
    layers = data.get("layers")
    if not isinstance(layers, list) or not all(
            isinstance(layer, dict) and _is(_NUMBER, layer.get("std")) and layer.get("std") is not None
            and _is(_INT, layer.get("index")) for layer in layers):
        _damaged(path, '"layers" is not a list of {"index", "std"} entries; ignored', damage)
        return None
    return data


# ------------------------------------------------------------------- the record from the files
def build_record(path: Path, saved_config: dict[str, Any] | None = None,
                 metrics: Sequence[dict[str, Any]] = (), summary: dict[str, Any] | None = None,
                 layer_responses: dict[str, Any] | None = None,
                 tencrop: dict[str, Any] | None = None, multiscale: dict[str, Any] | None = None,
                 status: str | None = None, message: str | None = None,
                 damage: tuple[str, ...] = (), lock: tuple[str, int] | None = None) -> RunRecord:
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
        layer_response_std=_response_std(layer_responses),
        tencrop=_top_errors(tencrop), multiscale=_top_errors(multiscale),
        config=config, eval_split=eval_split,
        tag=run_settings.get("tag") or (named.tag if named else ""),
        recipe=recipe,
        total_steps=_first(summary.get("total_steps"), config.get("optim", {}).get("total_steps")),
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
