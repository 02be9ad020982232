"""One experiment from start (or its latest checkpoint) to summary.json.

`train_and_evaluate(config, run_dir, on_event)` owns every side effect of a run: loading data,
the compiled steps of `step.py`, metrics.jsonl, evaluations, Orbax checkpoints, the warm-up
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

from resdepth.architectures import InvalidChoice, family_of
from resdepth.checkpoints import Checkpointer, abstract_like
from resdepth.complexity import count_params
from resdepth.config import ExperimentConfig
from resdepth.models import ModelSpec, build_model
from resdepth.run_files import (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, MetricsLog, check_same_run,
                                code_version, ensure_writable, read_json, write_json)
from resdepth.run_identity import fingerprint, recipe_fingerprint
from resdepth import step as steps
from resdepth.sources import host_value, make_source


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


def train_and_evaluate(config: ExperimentConfig, run_dir: Path,
                       on_event: EventSink = lambda event: None,
                       stop: threading.Event | None = None) -> dict[str, Any]:
    """Runs (or resumes, or recognises as finished) one experiment; returns its summary.

    A finished run (summary status "completed") is returned as it is, untouched.
    """
    maybe_initialize_distributed()
    writes = jax.process_index() == 0
    ensure_writable(run_dir)
    check_same_run(run_dir, config)
    previous = read_json(run_dir / SUMMARY_FILE)
    if previous and previous.get("status") == "completed":
        return previous
    _validate(config)

    mesh = steps.make_mesh()
    source = make_source(config, mesh)
    spec = model_spec(config, source.num_classes)
    model = build_model(spec, config.run.seed, in_channels=source.in_channels)
    params_count = count_params(model)
    graphdef, state = steps.init_state(config, model, mesh)
    del model
    _save_config(run_dir, config, writes)

    checkpointer = Checkpointer(run_dir, config.run.keep_checkpoints)
    metrics = MetricsLog(run_dir / METRICS_FILE, enabled=writes)
    host: dict[str, Any] = {"warmup_switch_step": None, "wall_s": 0.0,
                            "best_eval_error": None, "evals_since_best": 0}
    restored = checkpointer.restore_latest(abstract_like(state))
    if restored is not None:
        for bad_step, reason in restored.skipped:
            on_event(Event("note", bad_step, config.optim.total_steps,
                           {"message": f"checkpoint {bad_step} unreadable ({reason}); using the previous one"}))
        if restored.state is not None:
            state, host = restored.state, {**host, **restored.host}
    start_step = int(host_value(state.step))
    metrics.truncate_after(start_step)

    source.compile(graphdef, start_step)

    total = config.optim.total_steps
    summary: dict[str, Any] = {
        "name": run_dir.name, "experiment": config.name, "dataset": config.data.dataset,
        "arch": "residual" if config.model.residual else "plain", "depth": config.model.depth,
        "shortcut": config.model.shortcut, "seed": config.run.seed, "params": params_count,
        "total_steps": total, "final_test_error": None, "final_test_loss": None,
        "final_train_error": None, "final_test_top5_error": None, "message": "",
        # A --val-split run tests on 5k held-out training images: never a test error.
        "eval_split": "validation" if config.data.val_split else "test",
        "fingerprint": fingerprint(config.to_dict())}
    last_train_error = _last_value(metrics.rows(), "train", "train_error")
    on_event(Event("start", start_step, total, {"params": params_count, "resumed": restored is not None
                                                and restored.state is not None}))

    session_start = time.time()
    interval_start, status, step = time.time(), "running", start_step

    def wall() -> float:
        return host["wall_s"] + time.time() - session_start

    def checkpoint() -> None:
        checkpointer.save(step, state, {**host, "wall_s": wall()})

    warmup_cap = steps.warmup_end_step(config)
    if steps.uses_warmup(config) and host["warmup_switch_step"] is None:
        host.setdefault("warmup_switch_reason", "still_active")
        if warmup_cap <= start_step:  # a cap of 0: no warm-up iteration at all
            host["warmup_switch_step"], host["warmup_switch_reason"] = warmup_cap, steps.warmup_cap_reason(config)
    with (stop_on_signals() if stop is None else contextlib.nullcontext(stop)) as stop_flag:
        while step < total:
            state = source.train_step(state, step)
            step += 1
            if step == warmup_cap and host.get("warmup_switch_reason") == "still_active":
                # `learning_rate` already ends the warm-up at the cap; this only records it.
                reason = steps.warmup_cap_reason(config)
                host["warmup_switch_step"], host["warmup_switch_reason"] = step, reason
                on_event(Event("note", step, total, {
                    "message": f"warm-up over at iteration {step} ({reason.replace('_', ' ')}): "
                               "the training error never fell below "
                               f"{config.optim.warmup_until_train_error:.0%}"}))
            if step % config.run.log_every_steps == 0 or step == total:
                loss_sum, error_sum, seen, warmup_active = (float(host_value(v)) for v in (
                    state.loss_sum, state.error_sum, state.examples_seen, state.warmup_active))
                elapsed = time.time() - interval_start
                rate = _logged_rate(config, step - 1, bool(warmup_active),
                                    float(host_value(state.lr_scale)))
                row = {"type": "train", "step": step, "epoch": source.epoch(step),
                       "learning_rate": rate, "train_loss": loss_sum / seen,
                       "train_error": error_sum / seen, "images_per_s": seen / max(elapsed, 1e-9),
                       "wall_s": wall()}
                metrics.append(row)
                on_event(Event("train", step, total, row))
                last_train_error = row["train_error"]
                state = dataclasses.replace(state, **steps.fresh_interval_sums(mesh))
                interval_start = time.time()
                if not math.isfinite(row["train_loss"]):
                    status = "diverged"
                    summary["message"] = f"training loss became {row['train_loss']} at iteration {step}"
                    break
                if warmup_should_end(host.get("warmup_switch_reason") == "still_active", row["train_error"],
                                     config.optim.warmup_until_train_error):
                    state = dataclasses.replace(
                        state, warmup_active=steps.replicated_scalar(False, jnp.bool_, mesh))
                    host["warmup_switch_step"] = step
                    host["warmup_switch_reason"] = "train_error_below_threshold"
                    on_event(Event("note", step, total, {
                        "message": f"warm-up over at iteration {step}: training error "
                                   f"{row['train_error']:.1%} < {config.optim.warmup_until_train_error:.0%}"}))
            if step % config.run.eval_every_steps == 0 or step == total:
                row = {"type": "eval", "step": step, "epoch": source.epoch(step), **source.evaluate(state)}
                metrics.append(row)
                on_event(Event("eval", step, total, row))
                state = _plateau_update(config, state, host, row, mesh, on_event, step)
            if step % config.run.checkpoint_every_steps == 0 or step == total:
                checkpoint()
            if stop_flag.is_set():
                checkpoint()
                status = "interrupted"
                summary["message"] = f"interrupted at iteration {step}; run the same command to resume"
                break
        else:
            status = "completed"

    checkpointer.close()
    rows = metrics.rows() if writes else []
    summary.update({
        "status": status, "steps_done": step, "wall_s": wall(),
        "warmup_switch_step": host["warmup_switch_step"],
        "warmup_switch_reason": host.get("warmup_switch_reason"),
        "final_train_error": last_train_error,
    })
    if status == "completed":
        summary["final_test_error"] = _last_value(rows, "eval", "test_error")
        summary["final_test_loss"] = _last_value(rows, "eval", "test_loss")
        summary["final_test_top5_error"] = _last_value(rows, "eval", "test_top5_error")
    if writes:
        write_json(run_dir / SUMMARY_FILE, summary)
    on_event(Event("end", step, total, summary))
    return summary


def _logged_rate(config: ExperimentConfig, step: int, warmup_active: bool, lr_scale: float) -> float:
    """The learning rate of iteration `step`, computed on the host, to float32's 7 digits."""
    rate = steps.learning_rate(config, jnp.int32(step), jnp.bool_(warmup_active), jnp.float32(lr_scale))
    return float(f"{float(rate):.7g}")


def _plateau_update(config: ExperimentConfig, state: steps.TrainState, host: dict[str, Any],
                    eval_row: dict[str, Any], mesh, on_event: EventSink, step: int) -> steps.TrainState:
    """The "divide by 10 when the error plateaus" schedule (§3.4), decided on evaluations.

    It reads the row's `holdout_error`, the error of training images held out of training
    (sources.py), never `test_error`: the test/validation set is what the tables report. The
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
