"""A run's status from its files (docs/run-directory.md, "Reading a run back"): whether its
summary.json describes the run as it is now, and else whether a process is training it, died,
or left it unfinished. Pure Python, no JAX.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from resdepth.rundir.directory import RunDirectory
from resdepth.rundir.storage import damaged, short
from resdepth.rundir.summary import COMPLETED, DAMAGED, ENDED

# A run without summary.json is still running if it logged this recently, else it was stopped
# without a chance to write one (killed, or the machine went away).
RUNNING_IF_LOGGED_WITHIN_S = 15 * 60


def current_status(run: RunDirectory, summary: dict[str, Any] | None,
                   metrics: Sequence[dict[str, Any]], held: Any, damage: list[str]
                   ) -> tuple[str, dict[str, Any] | None, str]:
    """(status, the summary if it describes the run as it is now, else None, message).

    `summary` and `metrics` are the checked contents of summary.json and metrics.jsonl, `held`
    the lock's holder (None: nobody holds it); problems found are named and added to `damage`.
    """
    logged = max((row["step"] for row in metrics), default=None)
    saved = summary.get("status") if summary else None
    if summary is not None and saved not in ENDED:
        damaged(run.summary_path, f"status is {short(saved)}, not one of {', '.join(ENDED)}",
                damage, warn=True)
        summary = None
    if run.summary_path.exists() and summary is None:
        if held is not None:
            return "running", None, ""  # a resumed run; its new summary comes when it ends
        return DAMAGED, None, "summary.json cannot be read: how the run ended and its final errors are unknown"
    if saved == COMPLETED:
        missing = missing_final_rows(summary, metrics)
        if missing:
            damaged(run.metrics_path, missing, damage, warn=True)
            return DAMAGED, summary, f"{missing}; the final errors shown are summary.json's"
        return COMPLETED, summary, ""
    done = summary.get("steps_done") if summary else None
    if summary is not None and logged is not None and done is not None and logged > done:
        summary = None  # from an earlier session: the run went on after it (resumed, then killed)
    if held is not None:
        return "running", None, ""
    if summary is not None:
        return saved, summary, summary.get("message") or ""
    if run.lock_path.exists():  # the lock file of a process that died (its lock went with it)
        after = f" after iteration {logged}" if logged is not None else ""
        return "stopped", None, f"its process died{after} without writing a summary (killed?)"
    try:
        recent = time.time() - run.metrics_path.stat().st_mtime < RUNNING_IF_LOGGED_WITHIN_S
    except OSError:
        recent = False
    return ("running" if recent else "incomplete"), None, ""


def missing_final_rows(summary: dict[str, Any], metrics: Sequence[dict[str, Any]]) -> str:
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
