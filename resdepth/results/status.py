"""Where a study stands: one row per run under a results folder, read from the run files alone.

Safe to call while sweeps write to the folder (on this machine or others sharing it): each run
is read by `rundir.record.read_run`, which asks the run's lock (rundir/lock.py) whether a
process holds it, which is what tells a live run from one whose process died.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from resdepth.results.reading import require_experiments
from resdepth.rundir.record import RunRecord, find_run_dirs, read_run
from resdepth.rundir.summary import COMPLETED, DAMAGED


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """One run. Errors are fractions; `eta_s` only for a running run.

    status: "running" (a process holds its lock), a summary's "completed" | "diverged" |
    "interrupted" | "failed", "stopped" (its process died without a summary: killed, or its
    machine went away), "incomplete" (no summary, no lock, not written to for a while) or
    "damaged" (a file cannot be read; `message` says which and what is unknown).
    A completed run shows its final errors; any other its latest logged ones.
    """

    experiment: str
    run: str
    path: str
    status: str
    steps_done: int | None
    total_steps: int | None
    train_error: float | None  # final, or the last logged training error (interval mean)
    test_error: float | None  # final, or the last evaluation's (validation for --val-split runs)
    images_per_s: float | None  # training throughput of the last logging interval
    eta_s: float | None  # seconds until total_steps at the recent pace
    lock_host: str | None
    lock_pid: int | None
    message: str  # why a run failed, diverged, was interrupted or is damaged; "" otherwise

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def study_status(folder: Path) -> list[RunStatus]:
    """One RunStatus per run under `folder` (an experiment folder, a folder of them, or a run)."""
    require_experiments(Path(folder))  # NoRunsFound, one line, for a folder without runs
    return [run_status(read_run(path)) for path in find_run_dirs(Path(folder))]


def run_status(run: RunRecord) -> RunStatus:
    last = run.train[-1] if run.train else None
    running = run.status == "running"
    if run.status == COMPLETED or run.status == DAMAGED and run.ended:  # the summary's finals
        train_error, test_error = run.final_train_error, run.final_test_error
    else:
        train_error = last.error if last else run.final_train_error
        test_error = run.evals[-1].error if run.evals else run.final_test_error
    return RunStatus(
        experiment=run.experiment, run=run.name, path=str(run.path), status=run.status,
        steps_done=run.steps if not running else _logged_steps(run), total_steps=run.total_steps,
        train_error=train_error, test_error=test_error,
        images_per_s=last.images_per_s if last else None,
        eta_s=_eta_s(run) if running else None,
        lock_host=run.lock_host, lock_pid=run.lock_pid,
        message=run.message if run.status != COMPLETED else "")


def _logged_steps(run: RunRecord) -> int | None:
    """The last iteration logged (a live run's summary, if any, is from an earlier session)."""
    return max((point.step for point in (*run.train, *run.evals)), default=run.steps)


def _eta_s(run: RunRecord) -> float | None:
    """Seconds left at the pace of the last two logged intervals (evaluations and checkpoints
    included), else at the last interval's images/s."""
    done, total = _logged_steps(run), run.total_steps
    if done is None or total is None:
        return None
    left = max(total - done, 0)
    if len(run.train) >= 2:
        a, b = run.train[-2], run.train[-1]
        if a.wall_s is not None and b.wall_s is not None and b.step > a.step and b.wall_s > a.wall_s:
            return left * (b.wall_s - a.wall_s) / (b.step - a.step)
    rate = run.train[-1].images_per_s if run.train else None
    batch = run.config.get("optim", {}).get("batch_size")
    if rate and batch:
        return left * batch / rate
    return None
