"""One experiment from start (or its latest checkpoint) to summary.json.

`train_and_evaluate(config, run_dir, on_event)` owns every side effect of a run: loading data,
the compiled steps of `training/step.py`, metrics.jsonl, evaluations, Orbax checkpoints, the warm-up
switch, divergence and interruption. It never prints: progress goes to `on_event` as
`Event`s, which the CLI renders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

from resdepth.errors import InvalidChoice
from resdepth.models.architectures import family_of
from resdepth.training.checkpoints import Checkpointer, abstract_like
from resdepth.models.complexity import count_params
from resdepth.config import ExperimentConfig
from resdepth.models.network import ModelSpec, build_model
from resdepth.rundir.files import (
    CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, MetricsLog, check_same_run, code_version,
    ensure_writable, read_json, write_json)
from resdepth.rundir.identity import fingerprint, recipe_fingerprint
from resdepth.training import step as steps
from resdepth.training.sources import host_value, make_source


@dataclasses.dataclass
class Event:
    """Progress of a run. kind: start | train | eval | note | end; `data` holds the row."""

    kind: str
    step: int
    total_steps: int
    data: dict[str, Any]


EventSink = Callable[[Event], None]


def model_spec(config: ExperimentConfig, num_classes: int) -> ModelSpec:
    model = config.model
    return ModelSpec(family_of(config.data.dataset), model.depth, model.residual, model.shortcut,
                     num_classes, model.compute_dtype, model.remat, model.bn_group_size)


def warmup_should_end(warmup_active: bool, interval_train_error: float, threshold: float) -> bool:
    """§4.2: leave the warm-up at the first logging interval whose training error is below 80%."""
    return warmup_active and interval_train_error < threshold


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when launched as one (SLURM, a TPU pod, or JAX_COORDINATOR_*)."""
    launched = (os.environ.get("JAX_COORDINATOR_ADDRESS")
                or int(os.environ.get("SLURM_NTASKS", "1")) > 1
                or os.environ.get("RESDEPTH_DISTRIBUTED") == "1")
    if launched and not jax.distributed.is_initialized():
        jax.distributed.initialize()


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


def _save_config(run_dir: Path, config: ExperimentConfig, writes: bool) -> None:
    if writes and not (run_dir / CONFIG_FILE).exists():
        settings = config.to_dict()
        write_json(run_dir / CONFIG_FILE, {
            "config": settings, "fingerprint": fingerprint(settings),
            "recipe_fingerprint": recipe_fingerprint(settings), "code_version": code_version(),
            "jax_version": jax.__version__, "devices": [str(d) for d in jax.devices()]})


def _validate(config: ExperimentConfig) -> None:
    devices = jax.device_count()
    if config.optim.batch_size % devices:
        raise InvalidChoice(f"batch size {config.optim.batch_size} must be divisible by the "
                            f"{devices} devices that share it")
    for name in ("total_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
        section = config.optim if name == "total_steps" else config.run
        if getattr(section, name) < 1:
            raise InvalidChoice(f"{name} must be at least 1")


@dataclasses.dataclass
class _Run:
    """One run of a training session (a packed session has one per seed): its files, the
    host-side bookkeeping that goes into checkpoints, and its summary."""

    config: ExperimentConfig
    run_dir: Path
    on_event: EventSink
    checkpointer: Checkpointer | None = None
    metrics: MetricsLog | None = None
    host: dict[str, Any] = dataclasses.field(default_factory=dict)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: str = "running"
    last_train_error: float | None = None
    resumed: bool = False

    @property
    def active(self) -> bool:
        return self.status == "running"

    def note(self, step: int, message: str) -> None:
        self.on_event(Event("note", step, self.config.optim.total_steps, {"message": message}))


def train_and_evaluate(config: ExperimentConfig, run_dir: Path,
                       on_event: EventSink = lambda event: None,
                       stop: threading.Event | None = None) -> dict[str, Any]:
    """Runs (or resumes, or recognises as finished) one experiment; returns its summary.

    A finished run (summary status "completed") is returned as it is, untouched.
    """
    return train_runs([config], [run_dir], [on_event], stop, packed=False)[0]


def train_packed(configs: list[ExperimentConfig], run_dirs: list[Path], sinks: list[EventSink],
                 stop: threading.Event | None = None) -> list[dict[str, Any]]:
    """Trains several seeds of one recipe in one compiled program; one summary per run.

    The configs must differ in `run.seed` alone. The state gets a leading seed axis and the
    pure step is `jax.vmap`ped over it; each seed keeps its own initialization, data order and
    augmentation, and its own run directory, metrics, summary and checkpoints, so each resumes
    (packed or alone) exactly as a run trained alone would.
    """
    return train_runs(configs, run_dirs, sinks, stop, packed=True)


def train_runs(configs: list[ExperimentConfig], run_dirs: list[Path], sinks: list[EventSink],
               stop: threading.Event | None, packed: bool) -> list[dict[str, Any]]:
    """The training loop behind train_and_evaluate (one run) and train_packed (several)."""
    maybe_initialize_distributed()
    writes = jax.process_index() == 0
    summaries: dict[int, dict[str, Any]] = {}
    runs: dict[int, _Run] = {}
    for index, (config, run_dir, sink) in enumerate(zip(configs, run_dirs, sinks)):
        ensure_writable(run_dir)
        check_same_run(run_dir, config)
        previous = read_json(run_dir / SUMMARY_FILE)
        if isinstance(previous, dict) and previous.get("status") == "completed":
            summaries[index] = previous
        else:
            runs[index] = _Run(config, run_dir, sink)
    if not runs:
        return [summaries[index] for index in range(len(configs))]
    packed = packed and len(runs) > 1
    config = next(iter(runs.values())).config
    _validate(config)
    if packed:
        _check_packable(config, [run.config for run in runs.values()])

    mesh = steps.make_mesh()
    source = make_source(config, mesh, [run.config.run.seed for run in runs.values()] if packed else None)
    spec = model_spec(config, source.num_classes)
    states, graphdef, params_count = [], None, 0
    for run in runs.values():
        model = build_model(spec, run.config.run.seed, in_channels=source.in_channels)
        params_count = count_params(model)
        graphdef, state = steps.init_state(run.config, model, mesh)
        del model
        _save_config(run.run_dir, run.config, writes)
        run.checkpointer = Checkpointer(run.run_dir, run.config.run.keep_checkpoints)
        run.metrics = MetricsLog(run.run_dir / METRICS_FILE, enabled=writes)
        run.host = {"warmup_switch_step": None, "wall_s": 0.0, "best_eval_error": None,
                    "evals_since_best": 0}
        restored = run.checkpointer.restore_latest(abstract_like(state))
        if restored is not None:
            for bad_step, reason in restored.skipped:
                run.note(bad_step, f"checkpoint {bad_step} unreadable ({reason}); using the previous one")
            if restored.state is not None:
                state, run.host, run.resumed = restored.state, {**run.host, **restored.host}, True
        states.append(state)
    start_steps = {int(host_value(state.step)) for state in states}
    if len(start_steps) > 1:
        # Seeds saved at different iterations (a checkpoint of one was unreadable) cannot share
        # a program: each goes on alone, which gives the same numbers.
        for run in runs.values():
            run.checkpointer.close()
        for index, run in runs.items():
            summaries[index] = train_runs([run.config], [run.run_dir], [run.on_event], stop, False)[0]
        return [summaries[index] for index in range(len(configs))]
    (start_step,) = start_steps
    state = steps.pack_states(states, mesh) if packed else states[0]
    del states
    ordered = list(runs.values())

    total = config.optim.total_steps
    for run in ordered:
        run.metrics.truncate_after(start_step)
        run.last_train_error = _last_value(run.metrics.rows(), "train", "train_error")
        run.summary = {
            "name": run.run_dir.name, "experiment": run.config.name, "dataset": config.data.dataset,
            "arch": "residual" if config.model.residual else "plain", "depth": config.model.depth,
            "shortcut": config.model.shortcut, "seed": run.config.run.seed, "params": params_count,
            "total_steps": total, "final_test_error": None, "final_test_loss": None,
            "final_train_error": None, "final_test_top5_error": None, "message": "",
            # A --val-split run tests on 5k held-out training images: never a test error.
            "eval_split": "validation" if config.data.val_split else "test",
            "fingerprint": fingerprint(run.config.to_dict()),
            "packed_seeds": len(ordered) if packed else 1}
        run.on_event(Event("start", start_step, total, {"params": params_count, "resumed": run.resumed}))

    source.compile(graphdef, start_step)
    per_call = _steps_per_call(config)

    def run_state(position: int) -> steps.TrainState:
        return steps.seed_slice(state, position) if packed else state

    session_start = time.time()
    interval_start, step = time.time(), start_step

    def wall(run: _Run) -> float:
        return run.host["wall_s"] + time.time() - session_start

    def checkpoint(run: _Run, position: int) -> None:
        run.checkpointer.save(step, run_state(position), {**run.host, "wall_s": wall(run)})

    warmup_cap = steps.warmup_end_step(config)
    for run in ordered:
        if steps.uses_warmup(config) and run.host["warmup_switch_step"] is None:
            run.host.setdefault("warmup_switch_reason", "still_active")
            if warmup_cap <= start_step:  # a cap of 0: no warm-up iteration at all
                run.host["warmup_switch_step"] = warmup_cap
                run.host["warmup_switch_reason"] = steps.warmup_cap_reason(config)

    with (stop_on_signals() if stop is None else contextlib.nullcontext(stop)) as stop_flag:
        while step < total and any(run.active for run in ordered):
            count = _chunk_size(step, total, config.run, per_call)
            state = source.train_steps(state, step, count)
            before, step = step, step + count
            for run in ordered:
                if (before < warmup_cap <= step and run.active
                        and run.host.get("warmup_switch_reason") == "still_active"):
                    # `learning_rate` already ends the warm-up at the cap; this records it.
                    reason = steps.warmup_cap_reason(config)
                    run.host["warmup_switch_step"], run.host["warmup_switch_reason"] = warmup_cap, reason
                    run.note(warmup_cap, f"warm-up over at iteration {warmup_cap} "
                                         f"({reason.replace('_', ' ')}): the training error never "
                                         f"fell below {config.optim.warmup_until_train_error:.0%}")
            if step % config.run.log_every_steps == 0 or step == total:
                # Reading the sums waits for the interval's iterations (dispatch is asynchronous),
                # so the clock is read after them.
                loss_sums, error_sums, seen, warm, scales = (steps.seed_values(state, field) for field in (
                    "loss_sum", "error_sum", "examples_seen", "warmup_active", "lr_scale"))
                elapsed = time.time() - interval_start
                for position, run in enumerate(ordered):
                    if not run.active:
                        continue
                    row = {"type": "train", "step": step, "epoch": source.epoch(step),
                           "learning_rate": _logged_rate(config, step - 1, bool(warm[position]),
                                                         scales[position]),
                           "train_loss": loss_sums[position] / seen[position],
                           "train_error": error_sums[position] / seen[position],
                           "images_per_s": seen[position] / max(elapsed, 1e-9), "wall_s": wall(run)}
                    run.metrics.append(row)
                    run.on_event(Event("train", step, total, row))
                    run.last_train_error = row["train_error"]
                    if not math.isfinite(row["train_loss"]):
                        run.status = "diverged"
                        run.summary["steps_done"] = step
                        run.summary["message"] = f"training loss became {row['train_loss']} at iteration {step}"
                        continue
                    if warmup_should_end(run.host.get("warmup_switch_reason") == "still_active",
                                         row["train_error"], config.optim.warmup_until_train_error):
                        warm[position] = False
                        run.host["warmup_switch_step"] = step
                        run.host["warmup_switch_reason"] = "train_error_below_threshold"
                        run.note(step, f"warm-up over at iteration {step}: training error "
                                       f"{row['train_error']:.1%} < {config.optim.warmup_until_train_error:.0%}")
                zeros = [0.0] * len(ordered)
                state = steps.replace_per_seed(state, mesh, warmup_active=warm, loss_sum=zeros,
                                               error_sum=zeros, examples_seen=zeros)
                interval_start = time.time()
            if step % config.run.eval_every_steps == 0 or step == total:
                for position, run in enumerate(ordered):
                    if not run.active:
                        continue
                    row = {"type": "eval", "step": step, "epoch": source.epoch(step),
                           **source.evaluate(run_state(position))}
                    run.metrics.append(row)
                    run.on_event(Event("eval", step, total, row))
                    if not packed:  # packs are refused the plateau schedule (_check_packable)
                        state = _plateau_update(config, state, run.host, row, mesh, run.on_event, step)
            stopping = stop_flag.is_set()
            if step % config.run.checkpoint_every_steps == 0 or step == total or stopping:
                for position, run in enumerate(ordered):
                    if run.active:
                        checkpoint(run, position)
            if stopping:
                for run in ordered:
                    if run.active:
                        run.status = "interrupted"
                        run.summary["message"] = f"interrupted at iteration {step}; run the same command to resume"
                break
    for run in ordered:
        if run.active:
            run.status = "completed"

    results = []
    for run in ordered:
        run.checkpointer.close()
        rows = run.metrics.rows() if writes else []
        summary = run.summary
        summary.update({
            "status": run.status, "steps_done": summary.get("steps_done", step), "wall_s": wall(run),
            "warmup_switch_step": run.host["warmup_switch_step"],
            "warmup_switch_reason": run.host.get("warmup_switch_reason"),
            "final_train_error": run.last_train_error,
        })
        if run.status == "completed":
            summary["final_test_error"] = _last_value(rows, "eval", "test_error")
            summary["final_test_loss"] = _last_value(rows, "eval", "test_loss")
            summary["final_test_top5_error"] = _last_value(rows, "eval", "test_top5_error")
        if writes:
            write_json(run.run_dir / SUMMARY_FILE, summary)
        run.on_event(Event("end", step, total, summary))
        results.append(summary)
    for index, summary in zip(runs, results):
        summaries[index] = summary
    return [summaries[index] for index in range(len(configs))]


def _check_packable(config: ExperimentConfig, configs: list[ExperimentConfig]) -> None:
    """Packed runs share one program: the same recipe, seeds apart, the steps schedule."""
    recipes = {recipe_fingerprint(each.to_dict()) for each in configs}
    if len(recipes) > 1:
        raise ValueError("packed runs must differ in run.seed alone")
    if config.optim.lr_schedule != "steps":
        raise InvalidChoice("packed seeds need lr_schedule 'steps' (a plateau decides per run)")


def _steps_per_call(config: ExperimentConfig) -> int:
    """run.steps_per_call, with 0 meaning 1 on CPU and a logging interval on accelerators."""
    if config.run.steps_per_call:
        return config.run.steps_per_call
    return 1 if jax.default_backend() == "cpu" else config.run.log_every_steps


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


def _plateau_update(config: ExperimentConfig, state: steps.TrainState, host: dict[str, Any],
                    eval_row: dict[str, Any], mesh, on_event: EventSink, step: int) -> steps.TrainState:
    """The "divide by 10 when the error plateaus" schedule (§3.4), decided on evaluations.

    It reads the row's `holdout_error`, the error of training images held out of training
    (training/sources.py), never `test_error`: the test/validation set is what the tables report. The
    rate is divided after `plateau_patience_evals` evaluations in a row that do not beat the best
    holdout error so far by more than `plateau_threshold`.
    """
    optim = config.optim
    if optim.lr_schedule != "plateau":
        return state
    error = eval_row["holdout_error"]
    best = host["best_eval_error"]
    if best is None or error < best - optim.plateau_threshold:
        host["best_eval_error"], host["evals_since_best"] = error, 0
        return state
    host["evals_since_best"] += 1
    if host["evals_since_best"] < optim.plateau_patience_evals:
        return state
    host["evals_since_best"] = 0
    scale = float(host_value(state.lr_scale)) * optim.lr_decay_factor
    on_event(Event("note", step, optim.total_steps, {
        "message": f"held-out training error plateaued at {error:.2%}: learning rate "
                   f"x{optim.lr_decay_factor}"}))
    return dataclasses.replace(state, lr_scale=steps.replicated_scalar(scale, jnp.float32, mesh))


def _last_value(rows: list[dict[str, Any]], kind: str, key: str) -> float | None:
    for row in reversed(rows):
        if row.get("type") == kind:
            return row.get(key)
    return None
