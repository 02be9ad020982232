"""Trains runs that are already open (training/session.py checked and claimed them) from their
start or latest checkpoint to summary.json.

`train_and_evaluate(config, run_dir, on_event)` trains one run; `train_runs` several together,
through a `Trainer` (training/trainer.py: one run alone, or what the sweep plugs in). The loop owns
the side effects of training: loading data, the compiled steps of `training/step.py`,
metrics.jsonl, evaluations, Orbax checkpoints, the warm-up switch, divergence and interruption.
It never prints: progress goes to `on_event` as `Event`s, which the CLI renders.

`train_runs` goes through these phases, one function each (runs trained together go through
each of them together):

  _open_session      data, models, and each state restored from its newest readable checkpoint
                     (runs saved at different iterations fall back to training one at a time)
  _Session.start     the metrics after the checkpoint dropped, "start" events, warm-up bookkeeping
  _Session.train     the iterations; after each call, where their intervals fall:
                       _log         a "train" row per run (divergence, the warm-up switch)
                       _signals     a signals.jsonl row per run for each iteration of the call
                                    that measured its layer signals (training/signals.py)
                       _evaluate    an "eval" row per run (the plateau rule)
                       _checkpoint  an Orbax checkpoint per run (also when stopped)
  _Session.finish    each run's status, summary.json (`_summary`) and "end" event
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp

from resdepth.errors import InvalidChoice
from resdepth.rundir.checkpoints import Checkpointer, abstract_like
from resdepth.models.complexity import count_params
from resdepth.config import ExperimentConfig
from resdepth.models.network import build_model
from resdepth.rundir.directory import RunDirectory
from resdepth.rundir.identity import fingerprint
from resdepth.rundir.metrics import MetricsLog
from resdepth.rundir.signals import SignalsLog
from resdepth.rundir.summary import Summary
from resdepth.training import step as steps
from resdepth.training.signals import layer_names, measured_steps
from resdepth.training.events import Event, EventSink
from resdepth.training.mesh import host_value, make_mesh
from resdepth.training.sources import make_source
from resdepth.training.trainer import Alone, Trainer, TrainerFactory
from resdepth.runtime.backend import current_backend


def warmup_should_end(warmup_active: bool, interval_train_error: float, threshold: float) -> bool:
    """§4.2: leave the warm-up at the first logging interval whose training error is below 80%."""
    return warmup_active and interval_train_error < threshold


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each iteration, so the run
    checkpoints and exits cleanly instead of dying mid-write."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: flag.set())
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_devices(config: ExperimentConfig) -> None:
    """The one setting that depends on the machine (config.py validated the rest)."""
    devices = jax.device_count()
    if config.optim.batch_size % devices:
        raise InvalidChoice(f"batch size {config.optim.batch_size} must be divisible by the "
                            f"{devices} devices that share it")


@dataclasses.dataclass
class HostState:
    """A run's host-side bookkeeping, saved in each of its checkpoints so a resumed run goes on
    where it stopped. In the checkpoint it is the JSON dict of `to_dict`, the dict checkpoints
    have always held; `from_dict` reads those of older versions too."""

    warmup_switch_step: int | None = None  # the iteration the warm-up ended (None: not yet, or none)
    # "still_active", "train_error_below_threshold", "warmup_max_steps" or "decay_boundary"
    # (docs/run-directory.md); None for a net without the warm-up.
    warmup_switch_reason: str | None = None
    wall_s: float = 0.0  # seconds of training before this session
    best_eval_error: float | None = None  # the plateau rule: the best held-out error so far ...
    evals_since_best: int = 0  # ... and the evaluations since it

    def to_dict(self) -> dict[str, Any]:
        saved = dataclasses.asdict(self)
        if saved["warmup_switch_reason"] is None:  # absent, as it always was, without a warm-up
            del saved["warmup_switch_reason"]
        return saved

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "HostState":
        """A checkpoint's dict: missing keys take their defaults, unknown ones are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in names})


@dataclasses.dataclass
class _Run:
    """One run of a training session: its files, its net, the host-side bookkeeping that goes
    into checkpoints, and how it ended."""

    config: ExperimentConfig
    run_dir: Path
    on_event: EventSink
    graphdef: Any = None  # its net (plain or residual), which evaluates it
    checkpointer: Checkpointer | None = None
    metrics: MetricsLog | None = None
    signals: SignalsLog | None = None
    layers: tuple[list[str], list[str]] = ([], [])  # its weighted and 3x3 layers' names
    host: HostState = dataclasses.field(default_factory=HostState)
    status: str = "running"
    message: str = ""
    steps_done: int | None = None  # where it stopped early (diverged); None: where the session did
    last_train_error: float | None = None
    resumed: bool = False
    params: int = 0  # parameters of its net

    @property
    def active(self) -> bool:
        return self.status == "running"

    def note(self, step: int, message: str) -> None:
        self.on_event(self.note_event(step, message))

    def note_event(self, step: int, message: str) -> Event:
        return Event("note", step, self.config.optim.total_steps, {"message": message})


def train_and_evaluate(config: ExperimentConfig, run_dir: Path,
                       on_event: EventSink = lambda event: None,
                       stop: threading.Event | None = None,
                       config_notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trains (or resumes) one open run to its end, a stop or its divergence; its summary."""
    return train_runs([config], [run_dir], [on_event], stop, config_notes=config_notes)[0]


def train_runs(configs: list[ExperimentConfig], run_dirs: list[Path], sinks: list[EventSink],
               stop: threading.Event | None, make_trainer: TrainerFactory = Alone,
               config_notes: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Open runs trained together by the Trainer `make_trainer` builds (one run: Alone), through
    the phases of this module's docstring; one summary per run, in the order given.
    `config_notes` go into each run's config.json (how the run was started)."""
    runs = [_Run(config, run_dir, sink) for config, run_dir, sink in zip(configs, run_dirs, sinks)]
    session = _open_session(runs, make_trainer, config_notes)
    if session is None:
        # Runs saved at different iterations (a checkpoint of one was unreadable) cannot share
        # a program: each goes on alone, which gives the same numbers.
        return [train_runs([run.config], [run.run_dir], [run.on_event], stop,
                           config_notes=config_notes)[0] for run in runs]
    session.start()
    with (stop_on_signals() if stop is None else contextlib.nullcontext(stop)) as flag:
        session.train(flag)
    return session.finish()


def _open_session(runs: list[_Run], make_trainer: TrainerFactory,
                  config_notes: dict[str, Any] | None) -> "_Session | None":
    """The trainer, the data source, the models and each run's state, restored from its newest
    readable checkpoint (or fresh); config.json written. None when the states were saved at
    different iterations (their checkpointers closed again)."""
    config = runs[0].config
    _check_devices(config)
    mesh, backend = make_mesh(), current_backend()  # the one place a run asks for its backend
    trainer = make_trainer([run.config for run in runs], mesh, backend)
    source = make_source(config, mesh, backend)
    writes = jax.process_index() == 0
    states = []
    for run in runs:
        spec = steps.model_spec(run.config, source.num_classes, backend)
        model = build_model(spec, run.config.run.seed, in_channels=source.in_channels)
        run.params = count_params(model)
        run.graphdef, state = steps.init_state(run.config, model, mesh)
        del model
        files = RunDirectory(run.run_dir)
        files.write_config(run.config, config_notes)
        run.checkpointer = files.checkpointer(run.config.run.keep_checkpoints)
        run.metrics = files.metrics_log(enabled=writes)
        run.signals = files.signals_log(enabled=writes)
        states.append(_restore(run, state))
    start_steps = {int(trainer.values(state, "step")[0]) for state in states}
    if len(start_steps) > 1:
        for run in runs:
            run.checkpointer.close()
        return None
    (start_step,) = start_steps
    return _Session(runs, config, mesh, source, trainer, trainer.join(states), start_step)


def _restore(run: _Run, fresh: steps.TrainState) -> steps.TrainState:
    """The run's state and HostState from its newest readable checkpoint, with a note for each
    newer one that could not be read; `fresh` when there is none."""
    restored = run.checkpointer.restore_latest(abstract_like(fresh))
    if restored is None:
        return fresh
    for bad_step, reason in restored.skipped:
        run.note(bad_step, f"checkpoint {bad_step} unreadable ({reason}); using the previous one")
    if restored.state is None:
        return fresh
    run.host, run.resumed = HostState.from_dict(restored.host), True
    return restored.state


@dataclasses.dataclass
class _Session:
    """Runs trained together by one Trainer (one run alone, or several in one program)."""

    runs: list[_Run]
    config: ExperimentConfig  # the recipe they share (the first run's config)
    mesh: Any
    source: Any  # training/sources.py
    trainer: Trainer
    state: Any  # the trainer's: a TrainState for one run alone
    step: int  # iterations done
    started: float = 0.0  # time.time() when this session's training began
    interval_start: float = 0.0  # ... and when the current logging interval began
    per_call: int = 1
    warmup_cap: int = 0

    @property
    def total(self) -> int:
        return self.config.optim.total_steps

    def wall(self, run: _Run) -> float:
        """The run's training seconds: its earlier sessions' and this one's."""
        return run.host.wall_s + time.time() - self.started

    def run_state(self, position: int) -> steps.TrainState:
        return self.trainer.state_of(self.state, position)

    def start(self) -> None:
        """Drops each run's metrics rows after its checkpoint, sends its "start" event and sets
        up its warm-up bookkeeping; the step compiles at its first call."""
        for position, run in enumerate(self.runs):
            run.metrics.truncate_after(self.step)
            run.signals.truncate_after(self.step)
            run.layers = layer_names(run.graphdef, self.run_state(position))
            run.signals.start(*run.layers)
            run.last_train_error = _last_value(run.metrics.rows(), "train", "train_error")
            run.on_event(Event("start", self.step, self.total,
                               {"params": run.params, "resumed": run.resumed}))
        self.trainer.compile(self.source, [run.graphdef for run in self.runs], self.step)
        self.per_call = _steps_per_call(self.config, self.source.backend)
        self.started = self.interval_start = time.time()
        self.warmup_cap = steps.warmup_end_step(self.config)
        if not steps.uses_warmup(self.config):
            return
        for run in self.runs:
            if run.host.warmup_switch_step is None:
                run.host.warmup_switch_reason = run.host.warmup_switch_reason or "still_active"
                if self.warmup_cap <= self.step:  # a cap of 0: no warm-up iteration at all
                    run.host.warmup_switch_step = self.warmup_cap
                    run.host.warmup_switch_reason = steps.warmup_cap_reason(self.config)

    def train(self, stop: threading.Event) -> None:
        """Iterations until the end, a stop (Ctrl-C) or the divergence of every run; after each
        call the log, evaluation and checkpoint steps where their intervals fall."""
        every = self.config.run
        while self.step < self.total and any(run.active for run in self.runs):
            count = _chunk_size(self.step, self.total, every, self.per_call)
            self.state, signals = self.trainer.train(self.state, self.step, count)
            before, self.step = self.step, self.step + count
            self._note_warmup_cap(before)
            last = self.step == self.total
            logging = self.step % every.log_every_steps == 0 or last
            events = self._log() if logging else []
            self._signals(signals, before)
            if self.step % every.eval_every_steps == 0 or last:
                self._evaluate()
            for run, event in events:  # after the evaluation of the same iteration (see Event)
                run.on_event(event)
            stopping = stop.is_set()
            if self.step % every.checkpoint_every_steps == 0 or last or stopping:
                self._checkpoint()
            if stopping:
                for run in self.runs:
                    if run.active:
                        run.status = "interrupted"
                        run.message = (f"interrupted at iteration {self.step}; "
                                       "run the same command to resume")
                return

    def _note_warmup_cap(self, before: int) -> None:
        """Records a warm-up still active when the last call passed the cap."""
        if not before < self.warmup_cap <= self.step:
            return
        threshold = self.config.optim.warmup_until_train_error
        for run in self.runs:
            if run.active and run.host.warmup_switch_reason == "still_active":
                # `learning_rate` already ends the warm-up at the cap; this records it.
                reason = steps.warmup_cap_reason(self.config)
                run.host.warmup_switch_step, run.host.warmup_switch_reason = self.warmup_cap, reason
                run.note(self.warmup_cap, f"warm-up over at iteration {self.warmup_cap} "
                                          f"({reason.replace('_', ' ')}): the training error never "
                                          f"fell below {threshold:.0%}")

    def _log(self) -> list[tuple[_Run, Event]]:
        """A "train" row per active run into metrics.jsonl (a non-finite loss: the run has
        diverged; an error below the threshold: the warm-up ends), the interval sums zeroed.
        Returns the events to send, which wait for the iteration's evaluation."""
        # Reading the sums waits for the interval's iterations (dispatch is asynchronous),
        # so the clock is read after them.
        loss_sums, error_sums, seen, warm, scales = (self.trainer.values(self.state, field) for field in (
            "loss_sum", "error_sum", "examples_seen", "warmup_active", "lr_scale"))
        elapsed = time.time() - self.interval_start
        threshold = self.config.optim.warmup_until_train_error
        events: list[tuple[_Run, Event]] = []
        for position, run in enumerate(self.runs):
            if not run.active:
                continue
            row = {"type": "train", "step": self.step, "epoch": self.source.epoch(self.step),
                   "learning_rate": _logged_rate(self.config, self.step - 1, bool(warm[position]),
                                                 scales[position]),
                   "train_loss": loss_sums[position] / seen[position],
                   "train_error": error_sums[position] / seen[position],
                   "images_per_s": seen[position] / max(elapsed, 1e-9), "wall_s": self.wall(run)}
            run.metrics.append(row)
            events.append((run, Event("train", self.step, self.total, row)))
            run.last_train_error = row["train_error"]
            if not math.isfinite(row["train_loss"]):
                run.status, run.steps_done = "diverged", self.step
                run.message = f"training loss became {row['train_loss']} at iteration {self.step}"
                continue
            if warmup_should_end(run.host.warmup_switch_reason == "still_active",
                                 row["train_error"], threshold):
                warm[position] = False
                run.host.warmup_switch_step = self.step
                run.host.warmup_switch_reason = "train_error_below_threshold"
                events.append((run, run.note_event(self.step, (
                    f"warm-up over at iteration {self.step}: training error "
                    f"{row['train_error']:.1%} < {threshold:.0%}"))))
        zeros = [0.0] * len(self.runs)
        self.state = self.trainer.with_values(self.state, warmup_active=warm, loss_sum=zeros,
                                              error_sum=zeros, examples_seen=zeros)
        self.interval_start = time.time()
        return events

    def _signals(self, signals: Any, before: int) -> None:
        """A signals.jsonl row per active run for each iteration of the call that trained
        iterations before + 1 .. self.step and measured its layer signals (training/signals.py
        `measured_steps`), sent as a "signals" event; `signals` is what the trainer's call
        returned."""
        flags = measured_steps(self.config, before, self.step - before)
        rows = [(offset, before + 1 + offset) for offset, flag in enumerate(flags) if flag]
        if not rows:  # nothing to read: the call's outputs are never waited for
            return
        for position, run in enumerate(self.runs):
            if not run.active:
                continue
            of_run = {name: host_value(values)
                      for name, values in self.trainer.signals_of(signals, position).items()}
            weighted, responses = run.layers
            for offset, step in rows:
                values = {name: array[offset] for name, array in of_run.items()}
                run.signals.append_signals(step, values)
                run.on_event(Event("signals", step, self.total, {
                    "weighted": weighted, "responses": responses,
                    **{name: [float(value) for value in array] for name, array in values.items()}}))

    def _evaluate(self) -> None:
        """An "eval" row per active run, into metrics.jsonl and sent at once."""
        for position, run in enumerate(self.runs):
            if not run.active:
                continue
            row = {"type": "eval", "step": self.step, "epoch": self.source.epoch(self.step),
                   **self.source.evaluate(self.run_state(position), run.graphdef)}
            run.metrics.append(row)
            run.on_event(Event("eval", self.step, self.total, row))
            scales = self.trainer.values(self.state, "lr_scale")
            scale = _plateau_scale(self.config, scales[position], run.host, row, run.on_event,
                                   self.step)
            if scale != scales[position]:
                scales[position] = scale
                self.state = self.trainer.with_values(self.state, lr_scale=scales)

    def _checkpoint(self) -> None:
        """An Orbax checkpoint per active run: its state and its HostState."""
        for position, run in enumerate(self.runs):
            if run.active:
                host = dataclasses.replace(run.host, wall_s=self.wall(run))
                run.checkpointer.save(self.step, self.run_state(position), host.to_dict())

    def finish(self) -> list[dict[str, Any]]:
        """Each run's status ("completed" unless it diverged or was interrupted), its
        summary.json and "end" event; one summary per run."""
        writes = jax.process_index() == 0
        results = []
        for run in self.runs:
            if run.active:
                run.status = "completed"
            run.checkpointer.close()
            summary = _summary(run, self, run.metrics.rows() if writes else [])
            if writes:
                RunDirectory(run.run_dir).write_summary(summary)
            run.on_event(Event("end", self.step, self.total, summary.to_json()))
            results.append(summary.to_json())
        return results


def _summary(run: _Run, session: _Session, rows: list[dict[str, Any]]) -> Summary:
    """A run's summary.json (docs/run-directory.md): what was trained, how it ended, its final
    errors (of the last evaluation, for a completed run) and its bookkeeping."""
    config, model = run.config, run.config.model

    def final(key: str) -> float | None:
        return _last_value(rows, "eval", key) if run.status == "completed" else None

    return Summary(
        status=run.status, name=run.run_dir.name, experiment=config.name,
        dataset=config.data.dataset, arch="residual" if model.residual else "plain",
        depth=model.depth, shortcut=model.shortcut, seed=config.run.seed, params=run.params,
        total_steps=config.optim.total_steps,
        steps_done=session.step if run.steps_done is None else run.steps_done,
        final_train_error=run.last_train_error, final_test_error=final("test_error"),
        final_test_loss=final("test_loss"), final_test_top5_error=final("test_top5_error"),
        wall_s=session.wall(run), warmup_switch_step=run.host.warmup_switch_step,
        warmup_switch_reason=run.host.warmup_switch_reason,
        # A --val-split run tests on 5k held-out training images: never a test error.
        eval_split="validation" if config.data.val_split else "test",
        fingerprint=fingerprint(config.to_dict()),
        message=run.message, **session.trainer.recorded())


def _steps_per_call(config: ExperimentConfig, backend: str) -> int:
    """run.steps_per_call, with 0 meaning 1 on CPU and a logging interval on accelerators."""
    if config.run.steps_per_call:
        return config.run.steps_per_call
    return 1 if backend == "cpu" else config.run.log_every_steps


def _chunk_size(step: int, total: int, run: Any, per_call: int) -> int:
    """Iterations in the next call: `per_call`, never past the next logging, evaluation or
    checkpoint point or the end; a shorter call is a power of two, so at most
    log2(per_call) + 2 programs are compiled."""
    room = min(total, *((step // every + 1) * every for every in (
        run.log_every_steps, run.eval_every_steps, run.checkpoint_every_steps))) - step
    if room >= per_call:
        return per_call
    return 1 << (room.bit_length() - 1)


def _logged_rate(config: ExperimentConfig, step: int, warmup_active: bool, lr_scale: float) -> float:
    """The learning rate of iteration `step`, computed on the host, to float32's 7 digits."""
    rate = steps.learning_rate(config, jnp.int32(step), jnp.bool_(warmup_active), jnp.float32(lr_scale))
    return float(f"{float(rate):.7g}")


def _plateau_scale(config: ExperimentConfig, scale: float, host: HostState,
                   eval_row: dict[str, Any], on_event: EventSink, step: int) -> float:
    """A run's learning-rate scale after an evaluation under the "divide by 10 when the error
    plateaus" schedule (§3.4); `scale` on other schedules.

    It reads the row's `holdout_error`, the error of training images held out of training
    (training/sources.py), never `test_error`: the test/validation set is what the tables report. The
    rate is divided after `plateau_patience_evals` evaluations in a row that do not beat the best
    holdout error so far by more than `plateau_threshold`.
    """
    optim = config.optim
    if optim.lr_schedule != "plateau":
        return scale
    error = eval_row["holdout_error"]
    best = host.best_eval_error
    if best is None or error < best - optim.plateau_threshold:
        host.best_eval_error, host.evals_since_best = error, 0
        return scale
    host.evals_since_best += 1
    if host.evals_since_best < optim.plateau_patience_evals:
        return scale
    host.evals_since_best = 0
    on_event(Event("note", step, optim.total_steps, {
        "message": f"held-out training error plateaued at {error:.2%}: learning rate "
                   f"x{optim.lr_decay_factor}"}))
    return scale * optim.lr_decay_factor


def _last_value(rows: list[dict[str, Any]], kind: str, key: str) -> float | None:
    for row in reversed(rows):
        if row.get("type") == kind:
            return row.get(key)
    return None
