"""Running a grid safely: run locks, --shard auto, grid de-duplication, `status`, damaged
result files, no folder left by a run that fails before training, `evaluate` on folders.

All fast: training is replaced by a stand-in where the test is about what surrounds it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resdepth.errors import InvalidChoice
from resdepth.cli.app import app
from resdepth.config import load_config
from resdepth.rundir.lock import LOCK_FILE, RunLock, RunLocked, holder
from resdepth.training.sweep import GridPoint, expand_grid, resolve_shard, run_sweep

from conftest import tiny_config

HOST = socket.gethostname()


@pytest.fixture
def warnings_logged():
    """The warnings of resdepth's library loggers, as messages (the CLI shows them on stderr)."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("resdepth")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def hold_lock_in_subprocess(run_dir: Path) -> subprocess.Popen:
    """Another process holding `run_dir`'s lock until killed; returns once it holds it."""
    script = textwrap.dedent(f"""
        import sys, time
        from resdepth.rundir.lock import RunLock
        lock = RunLock({str(run_dir)!r}).acquire()  # kept: a dropped lock object unlocks
        print("held", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


# ------------------------------------------------------------------------------------ run lock
def test_a_run_lock_is_exclusive_names_its_holder_and_goes_with_its_process(tmp_path):
    run_dir = tmp_path / "exp" / "plain-20-seed0"
    with RunLock(run_dir) as lock:
        assert lock.held and holder(run_dir).host == HOST and holder(run_dir).pid == os.getpid()
        with pytest.raises(RunLocked, match=f"{HOST} pid {os.getpid()}"):
            RunLock(run_dir).acquire()
    assert holder(run_dir) is None and not (run_dir / LOCK_FILE).exists()

    other = hold_lock_in_subprocess(run_dir)
    try:
        with pytest.raises(RunLocked) as refused:
            RunLock(run_dir).acquire()
        assert refused.value.holder.pid == other.pid and refused.value.holder.host == HOST
    finally:
        other.kill()  # SIGKILL: no chance to clean up; the kernel drops the lock
        other.wait()
    assert (run_dir / LOCK_FILE).exists() and holder(run_dir) is None  # stale text, no holder
    with RunLock(run_dir):
        assert holder(run_dir).pid == os.getpid()


def test_train_on_a_locked_run_exits_2_naming_host_and_pid(tmp_path, digits_data_dir):
    config = tiny_config(digits_data_dir, residual=False, name="digits")
    run_dir = tmp_path / "digits" / "plain-8-seed0"
    other = hold_lock_in_subprocess(run_dir)
    try:
        result = CliRunner().invoke(app, [
            "train", "--dataset", "digits", "--depth", "8", "--plain", "--out", str(tmp_path),
            "--data-dir", digits_data_dir, "--steps", str(config.optim.total_steps),
            "--set", "optim.lr_boundaries_steps=[]"])
    finally:
        other.kill()
        other.wait()
    assert result.exit_code == 2, result.output
    assert f"{HOST} pid {other.pid}" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (run_dir / "metrics.jsonl").exists()


def test_train_refuses_a_locked_run_before_starting_jax(tmp_path):
    # The lock is checked before TensorFlow and JAX start: the refusal takes a moment.
    run_dir = tmp_path / "digits" / "plain-8-seed0"
    other = hold_lock_in_subprocess(run_dir)
    try:
        started = time.monotonic()
        result = subprocess.run(
            [str(Path(sys.executable).parent / "resdepth"), "train", "--dataset", "digits",
             "--depth", "8", "--plain", "--out", str(tmp_path), "--data-dir", str(tmp_path / "tfds"),
             "--steps", "20"], capture_output=True, text=True, timeout=60)
        seconds = time.monotonic() - started
    finally:
        other.kill()
        other.wait()
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {run_dir} is being trained by {HOST} pid {other.pid} since "
        f"{holder_since(result.stderr)}; wait for it, or stop that process"]
    assert seconds < 2, seconds
    assert not (tmp_path / "tfds").exists() and sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]


def holder_since(text: str) -> str:
    return text.split(" since ", 1)[1].split(";", 1)[0]


def stand_in_training(monkeypatch, calls: list[str]) -> None:
    """train_and_evaluate replaced by a run that completes at once (the sweep around it is real)."""
    import resdepth.training.loop as train

    def finished(config, run_dir, on_event=None, stop=None, config_notes=None):
        calls.append(run_dir.name)
        return {"name": run_dir.name, "status": "completed", "final_test_error": 0.1,
                "final_train_error": 0.05, "params": 1, "wall_s": 0.0}

    monkeypatch.setattr(train, "train_and_evaluate", finished)


def test_a_sweep_passes_over_a_locked_run_with_one_line(tmp_path, digits_data_dir, monkeypatch):
    calls: list[str] = []
    stand_in_training(monkeypatch, calls)
    other = hold_lock_in_subprocess(tmp_path / "digits" / "plain-8-seed0")
    try:
        result = CliRunner().invoke(app, [
            "sweep", "--dataset", "digits", "--depths", "8", "--arch", "plain", "--seeds", "0,1",
            "--out", str(tmp_path), "--data-dir", digits_data_dir], env={"COLUMNS": "200"})
    finally:
        other.kill()
        other.wait()
    assert result.exit_code == 0, result.output
    assert calls == ["plain-8-seed1"]
    assert f"plain-8-seed0: skipped, being trained by {HOST} pid {other.pid}" in result.stdout
    notes = [line for line in result.stdout.splitlines() if "skipped" in line]
    assert len(notes) == 1


def test_run_sweep_reports_locked_runs(tmp_path, digits_data_dir, monkeypatch):
    calls: list[str] = []
    stand_in_training(monkeypatch, calls)
    base = tiny_config(digits_data_dir, name="grid")
    notes: list[str] = []
    with RunLock(tmp_path / "grid" / "resnet-8-A-seed0"):
        summaries = run_sweep(base, [GridPoint("residual", 8, 0), GridPoint("plain", 8, 0)], tmp_path,
                              lambda *args: (lambda event: None), threading.Event(), on_note=notes.append)
    assert [s["status"] for s in summaries] == ["locked", "completed"]
    assert calls == ["plain-8-seed0"] and len(notes) == 1 and f"pid {os.getpid()}" in notes[0]


def test_a_packed_session_claims_the_free_runs_of_its_seeds(tmp_path):
    from resdepth.training.session import claim_runs

    seeds = [tmp_path / "exp" / f"resnet-8-A-seed{seed}" for seed in range(3)]
    with RunLock(seeds[1]):
        with claim_runs(seeds) as (claimed, refused):
            assert claimed == [seeds[0], seeds[2]] and [r.run_dir for r in refused] == [seeds[1]]
            assert holder(seeds[0]).pid == os.getpid() and holder(seeds[2]).pid == os.getpid()
    assert all(holder(run_dir) is None for run_dir in seeds)


# ----------------------------------------------------------------------------- shards and grid
@pytest.mark.parametrize("text, environ, expected", [
    ("3/8", {}, (3, 8)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "15"}, (4, 15)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "15",
              "SLURM_ARRAY_TASK_MIN": "1"}, (4, 15)),  # --array=1-15
    ("auto", {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
              "SLURM_ARRAY_TASK_STEP": "4"}, (2, 4)),  # --array=0-12:4
    ("auto/6", {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "15"}, (2, 6)),
    ("auto", {"JOB_COMPLETION_INDEX": "2", "RESDEPTH_SHARD_COUNT": "5"}, (2, 5)),
    ("auto/5", {"JOB_COMPLETION_INDEX": "4"}, (4, 5)),
])
def test_shard_auto_reads_the_scheduler(text, environ, expected):
    index, count, found = resolve_shard(text, environ)
    assert (index, count) == expected
    variable = ("SLURM_ARRAY_TASK_ID" if "SLURM_ARRAY_TASK_ID" in environ else
                "JOB_COMPLETION_INDEX" if environ else "")
    assert found.startswith(f"shard {index}/{count}") and variable in found


@pytest.mark.parametrize("text, environ, complaint", [
    ("auto", {}, "SLURM_ARRAY_TASK_ID"),
    ("auto", {"JOB_COMPLETION_INDEX": "1"}, "RESDEPTH_SHARD_COUNT"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "15", "SLURM_ARRAY_TASK_COUNT": "15"}, "0 <= part < count"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "15"}, "not a whole number"),
    ("auto/x", {"JOB_COMPLETION_INDEX": "1"}, "auto/N"),
    ("automatic", {}, "I/N, auto or auto/N"),
    ("5/3", {}, "0 <= I < N"),
])
def test_shard_auto_refuses_what_it_cannot_use(text, environ, complaint):
    with pytest.raises(InvalidChoice, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        resolve_shard(text, environ)


def dry_run(args: list[str], env: dict[str, str] | None = None):
    result = CliRunner().invoke(app, ["sweep", "--dataset", "digits", "--dry-run", "--json", *args],
                                env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_sweep_says_which_shard_auto_found_and_warns_when_it_is_empty():
    grid = ["--depths", "8,14", "--seeds", "0,1"]  # 2 archs x 2 depths x 2 seeds = 8 runs
    document, said = dry_run([*grid, "--shard", "auto"],
                             {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"})
    assert [run["name"] for run in document["runs"]] == ["plain-14-seed1", "resnet-14-A-seed1"]
    assert "shard 3/4 from SLURM_ARRAY_TASK_ID=3 of SLURM_ARRAY_TASK_COUNT=4: 2 of 8 runs" in said
    document, said = dry_run([*grid, "--shard", "auto/10"], {"JOB_COMPLETION_INDEX": "9"})
    assert document["runs"] == []
    assert "warning: shard 9/10 has no runs" in said


def test_repeated_grid_points_are_one_run():
    config = load_config("digits")
    config.sweep.archs, config.sweep.depths, config.sweep.seeds = ["residual", "plain", "residual"], [8, 8, 14], [0, 0]
    assert expand_grid(config) == [GridPoint("residual", 8, 0), GridPoint("residual", 14, 0),
                                   GridPoint("plain", 8, 0), GridPoint("plain", 14, 0)]
    document, _ = dry_run(["--depths", "8,8,14", "--seeds", "1,1", "--arch", "plain,plain"])
    assert [run["name"] for run in document["runs"]] == ["plain-8-seed1", "plain-14-seed1"]


# -------------------------------------------------------------------------------------- status
def write_run(folder: Path, name: str, *, summary: dict | None = None, rows: list[dict] = (),
              total_steps: int = 100, batch_size: int = 32) -> Path:
    """A run directory as training/loop.py writes it (config.json, metrics.jsonl, maybe summary.json)."""
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    config = load_config("digits").to_dict()
    config["optim"].update(total_steps=total_steps, batch_size=batch_size)
    config["name"] = folder.name
    config["run"]["seed"] = int(name.rsplit("seed", 1)[-1].split("-")[0]) if "seed" in name else 0
    (run_dir / "config.json").write_text(json.dumps({"config": config, "code_version": "test"}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps({"name": name, **summary}))
    return run_dir


def train_row(step: int, error: float, wall_s: float, images_per_s: float = 640.0) -> dict:
    return {"type": "train", "step": step, "epoch": step / 47, "learning_rate": 0.1,
            "train_loss": 1.0, "train_error": error, "images_per_s": images_per_s, "wall_s": wall_s}


def eval_row(step: int, error: float) -> dict:
    return {"type": "eval", "step": step, "epoch": step / 47, "test_loss": 1.0, "test_error": error}


@pytest.fixture
def study(tmp_path):
    """Two experiments: completed, failed, running (locked), resumed (interrupted summary, locked
    again), stopped (killed: a stale lock file), and interrupted runs."""
    results = tmp_path / "results"
    exp = results / "grid"
    done_rows = [train_row(50, 0.3, 10.0), eval_row(50, 0.35), train_row(100, 0.1, 20.0), eval_row(100, 0.12)]
    write_run(exp, "plain-8-seed0", rows=done_rows, summary={
        "status": "completed", "steps_done": 100, "total_steps": 100, "final_train_error": 0.1,
        "final_test_error": 0.12, "message": ""})
    write_run(exp, "plain-8-seed1", rows=done_rows[:2], summary={
        "status": "failed", "steps_done": 50, "total_steps": 100,
        "message": "RuntimeError: simulated crash"})
    running = write_run(exp, "resnet-8-A-seed0", rows=[train_row(20, 0.5, 4.0), train_row(40, 0.4, 8.0),
                                                       eval_row(40, 0.45)])
    resumed = write_run(exp, "resnet-8-A-seed1", rows=[train_row(50, 0.3, 10.0), train_row(60, 0.25, 14.0)],
                        summary={"status": "interrupted", "steps_done": 50, "total_steps": 100,
                                 "message": "interrupted at iteration 50; run the same command to resume"})
    stopped = write_run(exp, "resnet-14-A-seed0", rows=[train_row(10, 0.8, 2.0)])
    (stopped / LOCK_FILE).write_text(json.dumps({"host": "gone", "pid": 1, "since": ""}))
    write_run(results / "other", "plain-14-seed0", rows=[train_row(10, 0.8, 2.0)], summary={
        "status": "interrupted", "steps_done": 10, "total_steps": 100, "message": "interrupted at iteration 10"})
    locks = [RunLock(running).acquire(), RunLock(resumed).acquire()]
    yield results
    for lock in locks:
        lock.release()


def test_status_json_has_a_row_per_run_of_every_experiment(study):
    result = CliRunner().invoke(app, ["status", str(study), "--json"])
    assert result.exit_code == 0, result.output
    runs = {f"{row['experiment']}/{row['run']}": row for row in json.loads(result.stdout)["runs"]}
    assert {name: row["status"] for name, row in runs.items()} == {
        "grid/plain-8-seed0": "completed", "grid/plain-8-seed1": "failed",
        "grid/resnet-8-A-seed0": "running", "grid/resnet-8-A-seed1": "running",
        "grid/resnet-14-A-seed0": "stopped", "other/plain-14-seed0": "interrupted"}
    done = runs["grid/plain-8-seed0"]
    assert (done["steps_done"], done["total_steps"], done["train_error"], done["test_error"]) == (100, 100, 0.1, 0.12)
    assert done["eta_s"] is None and done["lock_host"] is None and done["message"] == ""
    assert runs["grid/plain-8-seed1"]["message"] == "RuntimeError: simulated crash"
    live = runs["grid/resnet-8-A-seed0"]
    assert (live["steps_done"], live["total_steps"], live["train_error"], live["test_error"]) == (40, 100, 0.4, 0.45)
    assert live["images_per_s"] == 640.0
    assert live["eta_s"] == pytest.approx(60 * (8.0 - 4.0) / 20)  # 60 iterations at 0.2 s each
    assert (live["lock_host"], live["lock_pid"]) == (HOST, os.getpid())
    resumed = runs["grid/resnet-8-A-seed1"]
    assert resumed["steps_done"] == 60 and resumed["message"] == ""  # live rows, not the old summary
    assert runs["grid/resnet-14-A-seed0"]["lock_host"] is None  # a dead holder holds nothing


def test_status_table_shows_runs_and_lock_holders(study):
    result = CliRunner().invoke(app, ["status", str(study / "grid")], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "6 runs" not in result.stdout and "5 runs" in result.stdout  # only this experiment
    assert f"{HOST} pid {os.getpid()}" in result.stdout and "simulated crash" in result.stdout
    assert "40/100" in result.stdout and "12 s" in result.stdout  # iterations and ETA


def test_status_of_a_folder_without_runs_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 2 and "no runs under" in result.stderr


# ------------------------------------------------------------------------ damaged result files
DAMAGED = {
    "truncated": ('{"status": "completed", "depth": 8, "fin', "not valid JSON"),
    "list": ('["completed"]', "holds a JSON list"),
    "wrong types": (json.dumps({"status": "completed", "depth": "x", "seed": [0],
                                "final_test_error": "low"}), "depth is 'x', not a whole number"),
}


@pytest.fixture
def damaged(tmp_path):
    """An experiment with one sound run and runs whose files are damaged in every way."""
    exp = tmp_path / "damaged"
    rows = [train_row(50, 0.3, 10.0), eval_row(50, 0.35), train_row(100, 0.1, 20.0), eval_row(100, 0.12)]
    good = {"status": "completed", "arch": "plain", "depth": 8, "seed": 0, "steps_done": 100,
            "total_steps": 100, "final_train_error": 0.1, "final_test_error": 0.12, "dataset": "digits"}
    write_run(exp, "plain-8-seed0", rows=rows, summary=good)
    for seed, (text, _) in enumerate(DAMAGED.values(), start=1):
        run_dir = write_run(exp, f"plain-8-seed{seed}", rows=rows)
        (run_dir / "summary.json").write_text(text)
    bad_config = write_run(exp, "resnet-8-A-seed0", rows=rows, summary={**good, "arch": "residual"})
    (bad_config / "config.json").write_text(json.dumps({"config": {"model": "deep", "run": {"seed": "0"}}}))
    bad_rows = write_run(exp, "resnet-8-A-seed1", rows=rows, summary={**good, "arch": "residual", "seed": 1})
    with (bad_rows / "metrics.jsonl").open("a") as handle:
        handle.write('{"type": "train", "st\n[1, 2]\n{"type": "eval", "step": "ten", "test_error": 0.1}\n')
        handle.write(json.dumps(eval_row(110, 0.2)) + "\n" + '{"type": "tra')  # last: being written
    return exp


def test_damaged_files_are_warned_about_by_name_and_the_rest_is_read(damaged, warnings_logged):
    from resdepth.results.reading import load_runs

    runs = {run.name: run for run in load_runs(damaged)}
    assert set(runs) == {"plain-8-seed0", "plain-8-seed1", "plain-8-seed2", "plain-8-seed3",
                         "resnet-8-A-seed0", "resnet-8-A-seed1"}
    for seed, (_, complaint) in enumerate(DAMAGED.values(), start=1):
        assert any(str(damaged / f"plain-8-seed{seed}" / "summary.json") in message and complaint in message
                   for message in warnings_logged), (complaint, warnings_logged)
    assert runs["plain-8-seed3"].depth == 20 and runs["plain-8-seed3"].seed == 3  # from config.json
    # Its status and final errors are damaged: how it ended is unknown, never "completed".
    assert runs["plain-8-seed3"].final_test_error is None and runs["plain-8-seed3"].status == "damaged"
    assert any(str(damaged / "resnet-8-A-seed0" / "config.json") in m and "model is" in m
               for m in warnings_logged)
    assert runs["resnet-8-A-seed0"].arch == "residual"
    [rows_warning] = [m for m in warnings_logged if "metrics.jsonl" in m]
    assert "skipped 3 malformed rows" in rows_warning and "line 5" in rows_warning
    assert [p.step for p in runs["resnet-8-A-seed1"].evals] == [50, 100, 110]
    assert all("\n" not in message for message in warnings_logged)


@pytest.mark.parametrize("command", [["status"], ["table"], ["plot"]])
def test_commands_go_on_past_damaged_files_with_one_line_warnings(damaged, command):
    result = CliRunner().invoke(app, [*command, str(damaged)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("plain-8-seed1/summary.json: not valid JSON" in line for line in warnings), result.stderr
    assert any("plain-8-seed2/summary.json: holds a JSON list" in line for line in warnings)
    assert "Traceback" not in result.output


# --------------------------------------------------------------- failing before training
def test_a_run_failing_before_training_leaves_no_folder(tmp_path, digits_data_dir):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    out = tmp_path / "results"
    out.mkdir()
    config = tiny_config(str(not_a_folder / "tfds"), name="nodata")
    with pytest.raises(InvalidChoice, match="could not download or prepare digits"):
        run_sweep(config, [GridPoint("plain", 8, 0)], out, lambda *args: (lambda event: None),
                  threading.Event())
    assert list(out.iterdir()) == []  # neither the run's folder nor the experiment's

    result = CliRunner().invoke(app, [
        "train", "--dataset", "digits", "--depth", "8", "--out", str(tmp_path / "new"),
        "--data-dir", str(not_a_folder / "tfds"), "--steps", "5", "--set", "optim.lr_boundaries_steps=[]"])
    assert result.exit_code == 2 and "could not download or prepare digits" in result.stderr
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------ evaluate
def test_evaluate_takes_experiment_folders_and_passes_over_files(tmp_path, monkeypatch):
    import resdepth.evaluate.imagenet as imagenet_eval

    evaluated = []

    def fake_evaluate(run_dir, mode, data_dir=None, manual_dir=None, limit=None):
        evaluated.append((run_dir.name, mode))
        return {"top1_error": 0.2, "top5_error": 0.05, "center_top1_error": 0.25,
                "center_top5_error": 0.07, "count": 10}

    monkeypatch.setattr(imagenet_eval, "evaluate_run", fake_evaluate)
    exp = tmp_path / "table3"
    for name in ("resnet-34-B-seed0", "resnet-34-C-seed0"):
        write_run(exp, name)
    (exp / "table.md").write_text("| table |")
    (exp / "figure4.png").write_bytes(b"png")
    (exp / "failed-early").mkdir()
    (exp / "failed-early" / "summary.json").write_text('{"status": "failed"}')  # no config.json

    expected = [("resnet-34-B-seed0", "multiscale"), ("resnet-34-C-seed0", "multiscale")]
    result = CliRunner().invoke(app, ["evaluate", *map(str, sorted(exp.iterdir())), "--mode", "multiscale"])
    assert result.exit_code == 0, result.output
    assert evaluated == expected
    assert "2 files passed over" in result.stderr and "table.md" in result.stderr
    assert "resnet-34-B-seed0: multiscale top-1 20.00%" in result.stdout

    evaluated.clear()
    result = CliRunner().invoke(app, ["evaluate", str(exp), str(exp / "resnet-34-B-seed0"),
                                      "--mode", "multiscale"])
    assert result.exit_code == 0 and evaluated == expected  # each run once

    result = CliRunner().invoke(app, ["evaluate", str(exp / "table.md"), str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no such folder" in result.stderr
