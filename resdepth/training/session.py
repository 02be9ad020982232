"""One library path for a run: check it, claim it, wire TensorBoard, train it, clean up.

`train_run` is what `resdepth train` and each run of a sweep go through, `train_pack` the same
for the seeds of a sweep point trained in one program (training/loop.py's train_packed). In order:

1. the cheap checks, before JAX or TensorFlow start: the folder is writable and holds no run of
   another config; a completed run is returned as saved (an "already_completed" event says so);
   a run another process holds is refused (RunLocked: one line, exit 2 in the CLI) at once;
2. `prepare()`, the caller's heavy set-up (the CLI's TensorFlow and JAX start-up);
3. the run's lock (rundir/lock.py), held while it trains: `claim_runs`;
4. the event sink, with the TensorBoard writer when `run.tensorboard` is on and `config_notes`
   added to config.json once the run starts;
5. training (training/loop.py); a crash goes to `on_crash` when the caller records crashes
   (a sweep) and is raised otherwise;
6. a run that fails before it wrote anything leaves no empty folder behind (`below`: the
   folders strictly below it go too, if the run created them).

No JAX at import: the checks of step 1 must be fast.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from resdepth.config import ExperimentConfig
from resdepth.errors import InvalidChoice
from resdepth.rundir.files import (
    CONFIG_FILE, check_same_run, ensure_writable, read_json, write_json)
from resdepth.rundir.lock import RunLock, RunLocked, holder, removed_if_left_empty
from resdepth.rundir.record import completed_summary
from resdepth.training.events import Event, EventSink
from resdepth.training.processes import launched_as_several_processes, maybe_initialize_distributed


def train_run(config: ExperimentConfig, run_dir: Path, on_event: EventSink = lambda event: None,
              stop: threading.Event | None = None, *, below: Path | None = None,
              prepare: Callable[[], None] | None = None,
              config_notes: dict[str, Any] | None = None,
              on_crash: Callable[[Exception], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Trains, resumes or returns as finished the run of `config` in `run_dir`: its summary.

    RunLocked when another process holds the run. `stop`: a flag that interrupts the run
    (None: Ctrl-C and SIGTERM do). See the module docstring for the steps and the options.
    """
    with removed_if_left_empty(run_dir, below=below):
        finished = _checked(config, run_dir, on_event)
        if finished is not None:
            return finished
        if not launched_as_several_processes():
            # Before `prepare`, so a taken run is refused in a moment. In a multi-process run
            # the processes decide together, once JAX has joined them (claim_runs).
            held = holder(run_dir)
            if held is not None:
                raise RunLocked(run_dir, held)
        if prepare is not None:
            prepare()
        from resdepth.training import loop  # here: JAX starts with it, after `prepare`

        with claim_run(run_dir):
            try:
                sink = _wired(on_event, config, run_dir, config_notes)
                return loop.train_and_evaluate(config, run_dir, sink, stop)
            except InvalidChoice:
                raise  # a user error (no dataset, say) is never recorded as a crash
            except Exception as error:
                if on_crash is None:
                    raise
                return on_crash(error)  # while the run is still held


def train_pack(configs: list[ExperimentConfig], run_dirs: list[Path], sinks: list[EventSink],
               stop: threading.Event | None, *,
               on_locked: Callable[[int, RunLocked], dict[str, Any]],
               below: Path | None = None, config_notes: dict[str, Any] | None = None,
               on_crash: Callable[[int, Exception], dict[str, Any]] | None = None
               ) -> list[dict[str, Any]]:
    """`train_run` for the seeds of one recipe trained in one program (loop.train_packed): one
    summary per run, in order. The runs another process holds are passed over, each with
    `on_locked(index, error)`, which gives its summary; the others train together."""
    summaries: dict[int, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        for run_dir in run_dirs:
            stack.enter_context(removed_if_left_empty(run_dir, below=below))
        todo = []
        for index, (config, run_dir, sink) in enumerate(zip(configs, run_dirs, sinks)):
            finished = _checked(config, run_dir, sink)
            if finished is not None:
                summaries[index] = finished
            else:
                todo.append(index)
        if todo:
            from resdepth.training import loop

            claimed, refused = stack.enter_context(claim_runs([run_dirs[i] for i in todo]))
            for locked in refused:
                index = run_dirs.index(locked.run_dir)
                summaries[index] = on_locked(index, locked)
            chosen = [index for index in todo if run_dirs[index] in claimed]
            if chosen:
                try:
                    wired = [_wired(sinks[i], configs[i], run_dirs[i], config_notes) for i in chosen]
                    results = loop.train_packed([configs[i] for i in chosen],
                                                [run_dirs[i] for i in chosen], wired, stop)
                except InvalidChoice:
                    raise
                except Exception as error:  # a crash of the pack is recorded for each of its runs
                    if on_crash is None:
                        raise
                    results = [on_crash(i, error) for i in chosen]
                summaries.update(zip(chosen, results))
    return [summaries[index] for index in range(len(run_dirs))]


def _checked(config: ExperimentConfig, run_dir: Path, on_event: EventSink) -> dict[str, Any] | None:
    """Step 1 of the module docstring, less the lock: the saved summary of a completed run
    (announced to `on_event`), or None for a run to train."""
    ensure_writable(run_dir)
    check_same_run(run_dir, config)
    saved = completed_summary(run_dir)
    finished = saved.to_json() if saved is not None else None
    if finished is not None:
        total = config.optim.total_steps
        on_event(Event("already_completed", finished.get("steps_done") or total, total, finished))
    return finished


def _wired(on_event: EventSink, config: ExperimentConfig, run_dir: Path,
           config_notes: dict[str, Any] | None) -> EventSink:
    """`on_event`, with the TensorBoard writer when `run.tensorboard` is on, and adding
    `config_notes` to config.json at the run's start."""
    from resdepth.training.tensorboard_log import with_tensorboard

    sink = with_tensorboard(on_event, run_dir, config.run.tensorboard)
    if not config_notes:
        return sink

    def noting(event: Event) -> None:
        if event.kind == "start":  # config.json is written by then (training/loop.py)
            add_to_config_json(run_dir, config_notes)
        sink(event)

    return noting


def add_to_config_json(run_dir: Path, fields: dict[str, Any]) -> None:
    """Top-level `fields` added to the run's config.json (by process 0), each unless already
    there: they describe how the run was started (e.g. `--steps` scaling the schedule)."""
    import jax

    path = Path(run_dir) / CONFIG_FILE
    saved = read_json(path)
    if jax.process_index() != 0 or not isinstance(saved, dict):
        return
    missing = {key: value for key, value in fields.items() if key not in saved}
    if missing:
        write_json(path, {**saved, **missing})


@contextlib.contextmanager
def claim_runs(run_dirs: list[Path]) -> Iterator[tuple[list[Path], list[RunLocked]]]:
    """Holds the locks (rundir/lock.py) of those of `run_dirs` no other process holds while the
    block runs; yields (the run directories claimed, RunLocked for each of the others).

    In a multi-process run (jax.distributed) only process 0 takes the locks, the process that
    writes the run files, and tells the others which it got: all processes train the same runs.
    A packed session (several seeds in one program) claims its seeds' runs together.
    """
    maybe_initialize_distributed()
    import jax

    locks = [RunLock(run_dir) for run_dir in run_dirs]
    refused: dict[int, RunLocked] = {}
    failure: Exception | None = None
    if jax.process_index() == 0:
        for index, lock in enumerate(locks):
            try:
                lock.acquire()
            except RunLocked as locked:
                refused[index] = locked
            except Exception as error:  # every process must hear of it, or the others hang
                failure = error
                break
    try:
        if jax.process_count() > 1:
            import numpy as np
            from jax.experimental import multihost_utils

            answer = np.array([failure is not None] + [i not in refused for i in range(len(locks))],
                              np.int32)
            answer = np.asarray(multihost_utils.broadcast_one_to_all(answer))
            if answer[0] and failure is None:
                raise RunLocked(run_dirs[0], None)  # process 0 could not lock; it says why
            refused = {i: refused.get(i) or RunLocked(run_dirs[i], None)
                       for i in range(len(locks)) if not answer[i + 1]}
        if failure is not None:
            raise failure
        yield ([run_dir for i, run_dir in enumerate(run_dirs) if i not in refused],
               [refused[i] for i in sorted(refused)])
    finally:
        for lock in locks:
            lock.release()  # nothing for a lock not held


@contextlib.contextmanager
def claim_run(run_dir: Path) -> Iterator[None]:
    """Holds `run_dir`'s lock while the block runs, or raises RunLocked naming its holder."""
    with claim_runs([run_dir]) as (_, refused):
        if refused:
            raise refused[0]
        yield
