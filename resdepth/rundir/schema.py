"""What each field of a run's files must be (docs/run-directory.md), and the checks that drop
what is not: a field of the wrong type is named in one warning and left out, so a reader never
computes with it. Fields not listed here are kept as they are. Pure Python, no JAX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resdepth.choices import ARCHS, SHORTCUTS
from resdepth.rundir.storage import damaged, read_object, short

INT, NUMBER, TEXT, FLAG = "a whole number", "a number", "text", "true or false"
SUMMARY_FIELDS = {
    "status": TEXT, "name": TEXT, "experiment": TEXT, "dataset": TEXT, "arch": TEXT,
    "depth": INT, "shortcut": TEXT, "seed": INT, "params": INT, "steps_done": INT,
    "total_steps": INT, "final_test_error": NUMBER, "final_test_loss": NUMBER,
    "final_train_error": NUMBER, "final_test_top5_error": NUMBER, "wall_s": NUMBER,
    "warmup_switch_step": INT, "message": TEXT, "eval_split": TEXT}
CONFIG_FIELDS = {
    "name": TEXT, "model.depth": INT, "model.residual": FLAG, "model.shortcut": TEXT,
    "data.dataset": TEXT, "data.val_split": FLAG, "run.seed": INT, "run.tag": TEXT,
    "optim.total_steps": INT, "optim.batch_size": INT}
CONFIG_SECTIONS = ("model", "data", "optim", "run", "sweep")
METRICS_FIELDS = {
    "type": TEXT, "step": INT, "epoch": NUMBER, "train_error": NUMBER, "train_loss": NUMBER,
    "test_error": NUMBER, "test_loss": NUMBER, "test_top5_error": NUMBER,
    "images_per_s": NUMBER, "wall_s": NUMBER, "learning_rate": NUMBER}
METRICS_ROW_TYPES = ("train", "eval")
TOP_FIELDS = {"top1_error": NUMBER, "top5_error": NUMBER}
CHOICES = {"arch": ARCHS, "shortcut": SHORTCUTS}
# A summary with one of these damaged cannot say how the run ended or what it reached.
VITAL_SUMMARY_FIELDS = ("status", "steps_done", "final_train_error", "final_test_error")


def is_kind(kind: str, value: Any) -> bool:
    """Whether `value` is of `kind` (INT, NUMBER, TEXT, FLAG); null is every kind (a diverged
    loss is written as null)."""
    if value is None:
        return True
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == FLAG:
        return isinstance(value, bool)
    return isinstance(value, str)


def bad_fields(data: dict[str, Any], fields: dict[str, str]) -> list[str]:
    """"depth is 'x', not a whole number" for each field of `data` of the wrong type or choice."""
    problems = []
    for key, kind in fields.items():
        if key in data and not is_kind(kind, data[key]):
            problems.append(f"{key} is {short(data[key])}, not {kind}")
        elif key in CHOICES and data.get(key) is not None and data[key] not in CHOICES[key]:
            problems.append(f"{key} is {short(data[key])}, not one of {', '.join(CHOICES[key])}")
    return problems


def checked(data: dict[str, Any] | None, path: Path, fields: dict[str, str],
            damage: list[str] | None = None, warn: bool = True) -> dict[str, Any] | None:
    """`data` without the fields of the wrong type (one warning naming the file lists them).
    A summary whose status, iterations or final errors are damaged is not used at all."""
    if data is None:
        return None
    problems = bad_fields(data, fields)
    if not problems:
        return data
    bad = {problem.split(" is ", 1)[0] for problem in problems}
    if fields is SUMMARY_FIELDS and bad & set(VITAL_SUMMARY_FIELDS):
        damaged(path, "; ".join(problems) + "; ignored", damage, warn)
        return None
    damaged(path, "; ".join(problems) + "; those fields ignored", damage, warn)
    return {key: value for key, value in data.items() if key not in bad}


def read_checked(path: Path, fields: dict[str, str], damage: list[str] | None = None,
                 warn: bool = True) -> dict[str, Any] | None:
    """A JSON-object file (summary.json, tencrop.json...) read and `checked` against `fields`."""
    return checked(read_object(path, damage, warn), path, fields, damage, warn)


def checked_config(data: dict[str, Any] | None, path: Path, damage: list[str] | None = None,
                   warn: bool = True) -> dict[str, Any] | None:
    """config.json's object with its sections and the fields resdepth reads type-checked:
    None without a "config" object; wrong sections and fields dropped, and named."""
    if data is None:
        return None
    config = data.get("config")
    if not isinstance(config, dict):
        damaged(path, 'has no "config" object; ignored', damage, warn)
        return None
    data = dict(data)
    problems, clean = [], {}
    for key, value in config.items():
        if key in CONFIG_SECTIONS and not isinstance(value, dict):
            problems.append(f"{key} is {short(value)}, not a section")
        else:
            clean[key] = dict(value) if isinstance(value, dict) else value
    for dotted, kind in CONFIG_FIELDS.items():
        section, _, key = dotted.rpartition(".")
        where = clean.get(section) if section else clean
        if isinstance(where, dict) and key in where and not is_kind(kind, where[key]):
            problems.append(f"{dotted} is {short(where.pop(key))}, not {kind}")
    for key in ("recipe_fingerprint", "code_version", "jax_version"):
        if key in data and not isinstance(data[key], str):
            problems.append(f"{key} is {short(data.pop(key))}, not text")
    if "devices" in data and not (isinstance(data["devices"], list)
                                  and all(isinstance(d, str) for d in data["devices"])):
        problems.append(f"devices is {short(data.pop('devices'))}, not a list of text")
    if problems:
        damaged(path, "; ".join(problems) + "; ignored", damage, warn)
    return {**data, "config": clean}


def checked_responses(path: Path, damage: list[str] | None = None,
                      warn: bool = True) -> dict[str, Any] | None:
    """layer_responses.json, or None when its "layers" are not {"index", "std"} entries."""
    data = read_object(path, damage, warn)
    if data is None:
        return None
    layers = data.get("layers")
    if not isinstance(layers, list) or not all(
            isinstance(layer, dict) and is_kind(NUMBER, layer.get("std")) and layer.get("std") is not None
            and is_kind(INT, layer.get("index")) for layer in layers):
        damaged(path, '"layers" is not a list of {"index", "std"} entries; ignored', damage, warn)
        return None
    return data
