"""The life of a run, in one place: check it, claim it, wire TensorBoard, train it, clean up.

`train_run` is what `resdepth train` and each run of a sweep go through; `train_runs` the same
for runs the sweep trains together (its `make_trainer`: training/trainer.py). In order:

1. the cheap checks, before JAX or TensorFlow start: the folder is writable and holds no run of
   another config; a completed run is returned as saved (an "already_completed" event says so);
   a run another process holds is refused (RunLocked: one line, exit 2 in the CLI) at once;
2. `prepare()`, the caller's heavy set-up (the CLI's TensorFlow and JAX start-up);
3. the run's lock (rundir/lock.py), held while it trains: `claim_runs`;
4. the event sink, with the TensorBoard writer when `run.tensorboard` is on;
5. training (training/loop.py, which writes config.json with `config_notes`); a crash goes to
   `on_crash` when the caller records crashes (a sweep) and is raised otherwise;
6. a run that fails before it wrote anything leaves no empty folder behind (`below`: the
   folders strictly below it go too, if the run created them).

No JAX at import: the checks of step 1 must be fast.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from resdepth.config import ExperimentConfig
from resdepth.errors import InvalidChoice
from resdepth.rundir.directory import RunDirectory
from resdepth.rundir.lock import RunLock, RunLocked, holder, removed_if_left_empty
from resdepth.training.events import Event, EventSink
from resdepth.training.tensorboard_log import with_tensorboard
from resdepth.training.processes import launched_as_several_processes, maybe_initialize_distributed

if TYPE_CHECKING:  # JAX would start with it: the checks before `prepare` must be fast
    from resdepth.training.trainer import TrainerFactory


def train_run(config: ExperimentConfig, run_dir: Path, on_event: EventSink = lambda event: None,
              stop: threading.Event | None = None, *, below: Path | None = None,
              prepare: Callable[[], None] | None = None,
              config_notes: dict[str, Any] | None = None,
              on_crash: Callable[[Exception], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Trains, resumes or returns as finished the run of `config` in `run_dir`: its summary.

    RunLocked when another process holds the run. `stop`: a flag that interrupts the run
    (None: Ctrl-C and SIGTERM do). See the module docstring for the steps and the options.
    """
    return train_runs([config], [run_dir], [on_event], stop, below=below,
                      prepare=prepare, config_notes=config_notes,
                      on_crash=None if on_crash is None else lambda index, error: on_crash(error)
                      )[0]


def train_runs(configs: list[ExperimentConfig], run_dirs: list[Path], sinks: list[EventSink],
               stop: threading.Event | None, *,
               on_locked: Callable[[int, RunLocked], dict[str, Any]] | None = None,
               make_trainer: TrainerFactory | None = None, below: Path | None = None,
               prepare: Callable[[], None] | None = None,
               config_notes: dict[str, Any] | None = None,
               on_crash: Callable[[int, Exception], dict[str, Any]] | None = None
               ) -> list[dict[str, Any]]:
    """`train_run` for runs trained together by the trainer `make_trainer` builds (None: one
    run alone): one summary per run, in order. The runs another process holds are passed
    over, each with `on_locked(index, error)`, which gives its summary (None: RunLocked is
    raised); the others train together."""
    if on_locked is None:
        on_locked = _refuse
    summaries: dict[int, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        for run_dir in run_dirs:
            stack.enter_context(removed_if_left_empty(run_dir, below=below))
        todo = []
        for index, (config, run_dir, sink) in enumerate(zip(configs, run_dirs, sinks)):
            finished = _checked(config, run_dir, sink)
            # Before `prepare`, so a taken run is refused in a moment. In a multi-process run
            # the processes decide together, once JAX has joined them (claim_runs).
            held = None if launched_as_several_processes() else holder(run_dir)
            if finished is not None:
                summaries[index] = finished
            elif held is not None:
                summaries[index] = on_locked(index, RunLocked(run_dir, held))
            else:
                todo.append(index)
        if todo:
            if prepare is not None:
                prepare()
            from resdepth.training import loop  # here: JAX starts with it, after `prepare`

            claimed, refused = stack.enter_context(claim_runs([run_dirs[i] for i in todo]))
            for locked in refused:
                index = run_dirs.index(locked.run_dir)
                summaries[index] = on_locked(index, locked)
            chosen = [index for index in todo if run_dirs[index] in claimed]
            if chosen:
                try:
                    wired = [with_tensorboard(sinks[i], run_dirs[i], configs[i].run.tensorboard)
                             for i in chosen]
                    if len(chosen) == 1:
                        (index,) = chosen
                        results = [loop.train_and_evaluate(configs[index], run_dirs[index],
                                                           wired[0], stop, config_notes)]
                    else:
                        results = loop.train_runs([configs[i] for i in chosen],
                                                  [run_dirs[i] for i in chosen], wired, stop,
                                                  make_trainer, config_notes)
                except InvalidChoice:
                    raise  # a user error (no dataset, say) is never recorded as a crash
                except Exception as error:  # a crash of runs trained together is each one's
                    if on_crash is None:
                        raise
                    results = [on_crash(i, error) for i in chosen]  # while the runs are held
                summaries.update(zip(chosen, results))
    return [summaries[index] for index in range(len(run_dirs))]


def _refuse(index: int, locked: RunLocked) -> dict[str, Any]:
    raise locked


def _checked(config: ExperimentConfig, run_dir: Path, on_event: EventSink) -> dict[str, Any] | None:
    """Step 1 of the module docstring, less the lock: the saved summary of a completed run
    (announced to `on_event`), or None for a run to train."""
    files = RunDirectory(run_dir).ensure_writable()
    files.check_same_run(config)
    saved = files.completed_summary()
    finished = saved.to_json() if saved is not None else None
    if finished is not None:
        total = config.optim.total_steps
        on_event(Event("already_completed", finished.get("steps_done") or total, total, finished))
    return finished


@contextlib.contextmanager
def claim_runs(run_dirs: list[Path]) -> Iterator[tuple[list[Path], list[RunLocked]]]:
    """Holds the locks (rundir/lock.py) of those of `run_dirs` no other process holds while the
    block runs; yields (the run directories claimed, RunLocked for each of the others).

    In a multi-process run (jax.distributed) only process 0 takes the locks, the process that
    writes the run files, and tells the others which it got: all processes train the same runs.
    Runs trained together are claimed together.
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
