"""metrics.jsonl: a rows file (rundir/rows.py) of "train" and "eval" rows (docs/run-directory.md),
its reader and `MetricsLog`, the training loop's writer. Pure Python, no JAX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resdepth.rundir.rows import RowsLog, read_rows
from resdepth.rundir.schema import METRICS_FIELDS, METRICS_ROW_TYPES, bad_fields
from resdepth.rundir.storage import short


def metrics_row_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with a metrics row (a type other than train/eval, a field of the wrong
    type), or None."""
    if row["type"] not in METRICS_ROW_TYPES:
        return f"type is {short(row['type'])}, not {' or '.join(METRICS_ROW_TYPES)}"
    problems = bad_fields(row, METRICS_FIELDS)
    return problems[0] if problems else None


def read_metrics(path: Path, damage: list[str] | None = None, warn: bool = True
                 ) -> tuple[dict[str, Any], ...]:
    """The well-formed rows of metrics.jsonl, in file order (rows.read_rows)."""
    return read_rows(path, metrics_row_problem, damage, warn)


def last_step(path: Path) -> int | None:
    """The highest step logged in metrics.jsonl (quietly; None without rows)."""
    return max((row["step"] for row in read_metrics(path, warn=False)), default=None)


class MetricsLog(RowsLog):
    """metrics.jsonl's writer: appends rows; on resume drops those after the checkpoint."""

    def __init__(self, path: Path, enabled: bool = True):
        super().__init__(path, metrics_row_problem, enabled)
