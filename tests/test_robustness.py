"""A run across two processes equals the one-process run; a sweep killed at any moment loses
and repeats nothing.

Both start real `resdepth` processes on this machine, so each takes tens of seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from resdepth.rundir.record import read_run

from conftest import tiny_config, xla_flags

WORKER = Path(__file__).with_name("distributed_worker.py")
# Variables that would make a child process join some other multi-process run.
_LAUNCH_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "RESDEPTH_DISTRIBUTED",
                     "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")


def child_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _LAUNCH_VARIABLES}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu", **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_params(run_dir: Path, config) -> tuple[int, list[np.ndarray]]:
    """(step, parameter arrays) of a run's latest Orbax checkpoint, restored on this process's
    devices whatever mesh wrote it."""
    from resdepth.training import step as steps
    from resdepth.training.mesh import make_mesh
    from resdepth.rundir.checkpoints import abstract_like
    from resdepth.rundir.directory import RunDirectory
    from resdepth.models.network import build_model
    from resdepth.training.step import model_spec

    mesh = make_mesh()
    _, state = steps.init_state(config, build_model(model_spec(config, 10), config.run.seed, 1), mesh)
    checkpointer = RunDirectory(run_dir).checkpointer(config.run.keep_checkpoints)
    try:
        restored = checkpointer.restore_latest(abstract_like(state))
    finally:
        checkpointer.close()
    return restored.step, [np.asarray(leaf) for leaf in jax.tree.leaves(restored.state.params)]


@pytest.mark.slow
def test_two_processes_train_exactly_as_one_and_only_process_0_writes(tmp_path, digits_data_dir):
    from resdepth.training.sweep import GridPoint, run_sweep

    steps, port = 10, free_port()
    env = child_env(XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=2"),
                    RESDEPTH_COMPILATION_CACHE="0")
    workers = [subprocess.Popen([sys.executable, str(WORKER), str(index), str(port), digits_data_dir,
                                 str(tmp_path / "two"), str(steps)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for index in (0, 1)]
    try:
        # The one-process run, here and meanwhile, through the same sweep and train loop.
        # A small rate: 4 devices sum gradients and BN statistics in another order than 1, and
        # at 0.1 training amplifies that rounding past 1e-5 within 10 iterations (jax 0.12).
        config = tiny_config(digits_data_dir, "optim.learning_rate=0.01", steps=steps, name="distributed")
        [one] = run_sweep(config, [GridPoint("residual", 8, 0)], tmp_path / "one",
                          lambda *args: (lambda event: None), threading.Event())
        outputs = [worker.communicate(timeout=240) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    reports = {report["process"]: report for report in
               (json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs)}
    assert reports[0]["processes"] == 2 and reports[0]["devices"] == 4  # 2 processes x 2 CPUs
    # Process 0 wrote the run's files; process 1 none (Orbax writes checkpoints collectively).
    assert reports[0]["written"] == ["config.json", "metrics.jsonl", "signals.jsonl", "summary.json"]
    assert reports[1]["written"] == []

    two_dir = tmp_path / "two" / "distributed" / "resnet-8-A-seed0"
    one_dir = tmp_path / "one" / "distributed" / "resnet-8-A-seed0"
    assert sorted(p.name for p in two_dir.iterdir()) == ["checkpoints", "config.json",
                                                         "metrics.jsonl", "signals.jsonl", "summary.json"]
    two_summary = json.loads((two_dir / "summary.json").read_text())
    assert two_summary["status"] == one["status"] == "completed"
    assert two_summary["steps_done"] == one["steps_done"] == steps
    two_rows, one_rows = metric_rows(two_dir), metric_rows(one_dir)
    assert [(r["type"], r["step"]) for r in two_rows] == [(r["type"], r["step"]) for r in one_rows]
    for two_row, one_row in zip(two_rows, one_rows):
        for key in ("train_loss", "train_error", "test_loss", "test_error"):
            if key in one_row:
                assert two_row[key] == pytest.approx(one_row[key], abs=1e-5), (key, one_row["step"])
    # The layer signals of the batch split over 2 processes are those of the batch on one.
    two_signals, one_signals = (read_run(run_dir).signals for run_dir in (two_dir, one_dir))
    assert two_signals.steps == one_signals.steps and len(two_signals.steps) > 2
    for key in ("weight_grad_rms", "weight_rms", "response_grad_rms", "response_std"):
        np.testing.assert_allclose(getattr(two_signals, key), getattr(one_signals, key), rtol=1e-4,
                                   err_msg=key)
    two_step, two_params = checkpoint_params(two_dir, config)
    one_step, one_params = checkpoint_params(one_dir, config)
    assert two_step == one_step == steps
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(two_params, one_params)) < 1e-5


SWEEP_STEPS = 40


def sweep_command(out: Path, data_dir: str) -> list[str]:
    """Plain and residual 8 on digits, 40 iterations, a checkpoint at every logged row."""
    return [sys.executable, "-m", "resdepth", "sweep", "--dataset", "digits", "--depths", "8",
            "--arch", "plain,residual", "--experiment", "digits", "--out", str(out),
            "--data-dir", data_dir, "--steps", str(SWEEP_STEPS), "--set", "optim.batch_size=32",
            "--set", "optim.lr_boundaries_steps=[20]", "--set", "run.log_every_steps=5",
            "--set", "run.eval_every_steps=10", "--set", "run.checkpoint_every_steps=5"]


def rows_written(experiment: Path) -> int:
    total = 0
    for metrics in experiment.glob("*/metrics.jsonl"):
        try:
            total += metrics.read_bytes().count(b"\n")
        except OSError:
            pass
    return total


@pytest.mark.slow
def test_a_sweep_killed_at_random_moments_ends_as_if_never_killed(tmp_path, digits_data_dir):
    # One compilation cache for every process here: the reruns load the steps, not compile them.
    env = child_env(RESDEPTH_COMPILATION_CACHE=str(tmp_path / "jax-cache"))
    baseline = subprocess.Popen(sweep_command(tmp_path / "whole", digits_data_dir), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_dir = tmp_path / "killed" / "digits"
    rng = random.Random(1234)
    kills = []
    try:
        for _ in range(3):
            # Kill once a few more metrics rows have appeared, then a random instant later: in
            # a step, an evaluation, a metrics append, a checkpoint or summary write, a start-up.
            target = rows_written(killed_dir) + rng.randint(1, 5)
            delay = rng.uniform(0.0, 0.4)
            process = subprocess.Popen(sweep_command(tmp_path / "killed", digits_data_dir), env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 180
            while process.poll() is None and rows_written(killed_dir) < target and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills.append((target, round(delay, 2), process.returncode))
        final = subprocess.run(sweep_command(tmp_path / "killed", digits_data_dir), env=env,
                               capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
        whole_output = baseline.communicate(timeout=300)[0]
        assert baseline.returncode == 0, whole_output[-3000:]
    finally:
        baseline.kill()
    assert any(code == -signal.SIGKILL for *_, code in kills), kills  # it was killed, mid-sweep

    whole_dir = tmp_path / "whole" / "digits"
    for name in ("plain-8-seed0", "resnet-8-A-seed0"):
        whole = json.loads((whole_dir / name / "summary.json").read_text())
        again = json.loads((killed_dir / name / "summary.json").read_text())
        for key in ("status", "steps_done", "final_train_error", "final_test_error",
                    "final_test_loss", "params", "fingerprint"):
            assert again[key] == whole[key], (name, key, kills)
        whole_rows, again_rows = metric_rows(whole_dir / name), metric_rows(killed_dir / name)
        # Every row once, in order, with the numbers of the run that was never killed.
        assert [r["step"] for r in again_rows if r["type"] == "train"] == list(range(5, 41, 5))
        assert [r["step"] for r in again_rows if r["type"] == "eval"] == list(range(10, 41, 10))
        for key in ("type", "step", "learning_rate", "train_loss", "train_error", "test_loss",
                    "test_error"):
            assert [r.get(key) for r in again_rows] == [r.get(key) for r in whole_rows], (name, key)
        assert not (killed_dir / name / "run.lock").exists()  # the last sweep released its lock
