"""Where a study stands: one row per run under a results folder, read from the run files alone.

Safe to call while sweeps write to the folder (on this machine or others sharing it): it
reads summary.json, config.json and metrics.jsonl, and asks each run's lock (rundir/lock.py)
whether a process holds it, which is what tells a live run from one whose process died.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from resdepth.results.reading import NoRunsFound, RunFiles, read_run_files
from resdepth.rundir.files import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE
from resdepth.rundir.lock import LOCK_FILE, holder

RUN_FILES = (SUMMARY_FILE, METRICS_FILE, CONFIG_FILE, LOCK_FILE)


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """One run. Errors are fractions; `eta_s` only for a running run.

    status: "running" (a process holds its lock), a summary's "completed" | "diverged" |
    "interrupted" | "failed", "stopped" (its process died without a summary: killed, or its
    machine went away), or "incomplete" (no summary, no lock, not written to for a while).
    """

    experiment: str
    run: str
    path: str
    status: str
    steps_done: int | None
    total_steps: int | None
    train_error: float | None  # the last logged training error (interval mean)
    test_error: float | None  # the last evaluation's error (validation error for --val-split runs)
    images_per_s: float | None  # training throughput of the last logging interval
    eta_s: float | None  # seconds until total_steps at the recent pace
    lock_host: str | None
    lock_pid: int | None
    message: str  # why a run failed, diverged or was interrupted; "" otherwise

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def find_runs(folder: Path) -> list[Path]:
    """Every run directory at or below `folder`, including runs that have only started (a lock
    file or config.json, no metrics yet); sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        if any(name in files for name in RUN_FILES):
            found.append(Path(root))
            dirs.clear()
        else:
            dirs.sort()
    return sorted(found)


def study_status(folder: Path) -> list[RunStatus]:
    """One RunStatus per run under `folder` (an experiment folder or a folder of them)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NoRunsFound(f"{folder} is not a folder")
    runs = find_runs(folder)
    if not runs:
        raise NoRunsFound(f"no runs under {folder} (a run folder holds summary.json, "
                          "metrics.jsonl, config.json or run.lock)")
    return [run_status(path) for path in runs]


def run_status(path: Path) -> RunStatus:
    files = read_run_files(path)
    summary = files.summary or {}
    config = (files.config or {}).get("config", {})
    held = holder(path)
    train_rows = [row for row in files.metrics if row["type"] == "train"]
    eval_rows = [row for row in files.metrics if row["type"] == "eval"]
    logged_steps = max((row["step"] for row in files.metrics), default=None)

    status = _status(files, held)
    if status == "running" or summary.get("steps_done") is None:
        steps_done = logged_steps  # a resumed run's summary is from before this session
    else:
        steps_done = summary["steps_done"]
    total = summary.get("total_steps") or config.get("optim", {}).get("total_steps")
    last_train = train_rows[-1] if train_rows else {}
    train_error = last_train.get("train_error", summary.get("final_train_error"))
    test_error = eval_rows[-1].get("test_error") if eval_rows else summary.get("final_test_error")
    eta = _eta_s(train_rows, steps_done, total, config) if status == "running" else None
    message = (summary.get("message") or "") if status not in ("running", "completed") else ""
    return RunStatus(
        experiment=summary.get("experiment") or config.get("name") or path.parent.name,
        run=path.name, path=str(path), status=status, steps_done=steps_done, total_steps=total,
        train_error=train_error, test_error=test_error,
        images_per_s=last_train.get("images_per_s"), eta_s=eta,
        lock_host=held.host if held else None, lock_pid=held.pid if held else None,
        message=message)


def _status(files: RunFiles, held) -> str:
    saved = (files.summary or {}).get("status")
    if saved == "completed":
        return saved  # a sweep passing over a finished run holds its lock for a moment
    if held is not None:
        return "running"
    if saved:
        return saved
    if (files.path / LOCK_FILE).exists():
        return "stopped"  # the lock file of a process that died (its lock went with it)
    return files.status or "incomplete"  # by how recently metrics.jsonl was written


def _eta_s(train_rows: list[dict[str, Any]], steps_done: int | None, total: int | None,
           config: dict[str, Any]) -> float | None:
    """Seconds left at the pace of the last two logged intervals (evaluations and checkpoints
    included), else at the last interval's images/s."""
    if steps_done is None or total is None:
        return None
    left = max(total - steps_done, 0)
    if len(train_rows) >= 2:
        a, b = train_rows[-2], train_rows[-1]
        if a.get("wall_s") is not None and b.get("wall_s") is not None and b["step"] > a["step"] \
                and b["wall_s"] > a["wall_s"]:
            return left * (b["wall_s"] - a["wall_s"]) / (b["step"] - a["step"])
    rate, batch = (train_rows[-1].get("images_per_s") if train_rows else None,
                   config.get("optim", {}).get("batch_size"))
    if rate and batch:
        return left * batch / rate
    return None
