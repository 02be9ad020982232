"""signals.jsonl: forward and backward signals per layer over training (docs/run-directory.md).

A rows file (rundir/rows.py). Its first row, {"type": "layers", "step": 0, "weighted": [...],
"responses": [...]}, names the layers in network order: every weighted layer (each convolution
and the dense head), then every 3x3 layer whose response Figure 7 measures. Each later row,
{"type": "signals", "step": S, "weight_grad_rms": [...], "weight_rms": [...],
"response_grad_rms": [...], "response_std": [...]}, holds one number per named layer, measured
by iteration S itself, on its mini-batch and the state before its update (S - 1 iterations
done). A number that was not finite is null. Pure Python, no JAX.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from resdepth.rundir.rows import RowsLog, read_rows
from resdepth.rundir.schema import NUMBER, is_kind
from resdepth.rundir.storage import finite, short

LAYERS, SIGNALS = "layers", "signals"
# Each quantity of a "signals" row, and which list of layer names it follows.
WEIGHT_QUANTITIES = ("weight_grad_rms", "weight_rms")
RESPONSE_QUANTITIES = ("response_grad_rms", "response_std")
LAYER_LISTS = {"weight_grad_rms": "weighted", "weight_rms": "weighted",
               "response_grad_rms": "responses", "response_std": "responses"}


def signals_row_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with a row of signals.jsonl taken alone, or None (the lengths of a
    "signals" row's lists are checked against the "layers" row by `read_signals`)."""
    if row["type"] == LAYERS:
        for key in ("weighted", "responses"):
            names = row.get(key)
            if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
                return f"{key} is {short(names)}, not a list of layer names"
        return None
    if row["type"] != SIGNALS:
        return f"type is {short(row['type'])}, not {LAYERS} or {SIGNALS}"
    for key in LAYER_LISTS:
        values = row.get(key)
        if not (isinstance(values, list) and all(is_kind(NUMBER, value) for value in values)):
            return f"{key} is {short(values)}, not a list of numbers"
    return None


@dataclasses.dataclass(frozen=True)
class Signals:
    """A run's signals.jsonl read back (one entry per "signals" row, by step).

    weighted: the weighted layers' names in network order ("stem", "stage1.block0.conv1", ...,
      "stage2.block0.shortcut" for a projection, "head").
    responses: the 3x3 layers' names, in network order.
    steps: the iterations the rows were measured at.
    weight_grad_rms, weight_rms: per row, one number per weighted layer (None: not finite).
    response_grad_rms, response_std: per row, one number per 3x3 layer.
    """

    weighted: tuple[str, ...]
    responses: tuple[str, ...]
    steps: tuple[int, ...] = ()
    weight_grad_rms: tuple[tuple[float | None, ...], ...] = ()
    weight_rms: tuple[tuple[float | None, ...], ...] = ()
    response_grad_rms: tuple[tuple[float | None, ...], ...] = ()
    response_std: tuple[tuple[float | None, ...], ...] = ()

    def backward_ratio(self, row: int) -> float | None:
        """The smallest over the largest per-layer backward signal (response_grad_rms) of a row:
        1 when every layer receives as much gradient as the best-served, near 0 when some layer
        receives almost none; None when a value is missing or the largest is 0."""
        values = self.response_grad_rms[row]
        if not values or any(value is None for value in values) or max(values) <= 0:
            return None
        return min(values) / max(values)


def read_signals(path: Path, damage: list[str] | None = None, warn: bool = True) -> Signals | None:
    """signals.jsonl as `Signals`, or None when the file is missing (a run made before signals
    were recorded) or has no readable "layers" row. Malformed rows, and rows whose lists do not
    match the layers, are skipped and named as the file's damage (one warning when `warn`)."""
    names: dict[str, tuple[str, ...]] = {}

    def check(row: dict[str, Any]) -> str | None:
        """signals_row_problem, and the lengths of a "signals" row against the "layers" row
        before it (rows are checked in file order)."""
        problem = signals_row_problem(row)
        if problem or row["type"] == LAYERS:
            if not problem and not names:
                names.update(weighted=tuple(row["weighted"]), responses=tuple(row["responses"]))
            return problem
        if not names:
            return 'comes before the "layers" row naming its layers'
        wrong = next((key for key, names_of in LAYER_LISTS.items()
                      if len(row[key]) != len(names[names_of])), None)
        if wrong:
            return f"{wrong} has {len(row[wrong])} values for {len(names[LAYER_LISTS[wrong]])} layers"
        return None

    rows = read_rows(path, check, damage, warn)
    if not names:  # every row was refused by `check`, and named in its warning
        return None
    # A step logged twice (never by resdepth): the later row.
    kept = {row["step"]: row for row in rows if row["type"] == SIGNALS}
    ordered = [kept[step] for step in sorted(kept)]
    return Signals(**names, steps=tuple(row["step"] for row in ordered),
                   **{key: tuple(tuple(row[key]) for row in ordered) for key in LAYER_LISTS})


class SignalsLog(RowsLog):
    """signals.jsonl's writer: the "layers" row once, then a "signals" row per logging row; on
    resume, drops the rows after the checkpoint (the layers row has step 0 and stays)."""

    def __init__(self, path: Path, enabled: bool = True):
        super().__init__(path, signals_row_problem, enabled)

    def start(self, weighted: list[str], responses: list[str]) -> None:
        """Writes the "layers" row unless the file already has one."""
        if not any(row["type"] == LAYERS for row in self.rows()):
            self.append({"type": LAYERS, "step": 0, "weighted": weighted, "responses": responses})

    def append_signals(self, step: int, values: dict[str, list[float]]) -> None:
        """A "signals" row: `values` has one list per quantity of LAYER_LISTS."""
        self.append({"type": SIGNALS, "step": step,
                     **{key: [_seven_digits(value) for value in values[key]] for key in LAYER_LISTS}})



def _seven_digits(value: float) -> float | None:
    """A float32 measurement to float32's 7 significant digits (None if not finite)."""
    value = finite(float(value))
    return None if value is None else float(f"{value:.7g}")
