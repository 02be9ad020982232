"""Sweeps: grid and shards, skipping and resuming, failures recorded, Ctrl-C; and analyze."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from resdepth.config import load_config
from resdepth.training.sweep import GridPoint, expand_grid, parse_shard, run_sweep, shard

from conftest import tiny_config


def test_grid_follows_the_table6_experiment():
    config = load_config("table6")
    points = expand_grid(config)
    residual = sorted({p.depth for p in points if p.arch == "residual"})
    plain = sorted({p.depth for p in points if p.arch == "plain"})
    assert residual == [20, 32, 44, 56, 110, 1202] and plain == [20, 32, 44, 56, 110]
    assert sorted(p.seed for p in points if p.arch == "residual" and p.depth == 110) == [0, 1, 2, 3, 4]
    assert [p.seed for p in points if p.arch == "residual" and p.depth == 56] == [0]
    assert [p.seed for p in points if p.arch == "plain" and p.depth == 110] == [0]
    assert len(points) == len(set(points)) == 5 + 5 + 5  # plain, residual, and 4 more ResNet-110


def test_shards_are_disjoint_and_cover_the_grid():
    points = expand_grid(load_config("table6"))
    for count in (1, 2, 3, 7, 40):
        parts = [shard(points, index, count) for index in range(count)]
        flat = [p for part in parts for p in part]
        assert sorted(flat, key=str) == sorted(points, key=str)
        assert len(flat) == len(set(flat))
    assert parse_shard("2/5") == (2, 5)


def summaries_of(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/summary.json")}


def test_sweep_skips_done_resumes_interrupted_and_records_divergence(tmp_path, digits_data_dir):
    base = tiny_config(digits_data_dir, steps=20, name="grid")
    points = [GridPoint("plain", 8, 0), GridPoint("residual", 8, 0), GridPoint("residual", 8, 1)]
    seen = []

    def on_run(point, config, run_dir):
        seen.append(run_dir.name)
        return lambda event: None

    # First pass: the second run is interrupted at iteration 10, which stops the sweep.
    flag = threading.Event()

    def interrupting(point, config, run_dir):
        seen.append(run_dir.name)
        return (lambda e: flag.set() if e.kind == "train" and e.step >= 10 else None) \
            if point.arch == "residual" and point.depth == 8 else (lambda e: None)

    first = run_sweep(base, points, tmp_path, interrupting, flag)
    assert [s["status"] for s in first] == ["completed", "interrupted"]
    done_wall = summaries_of(tmp_path / "grid")["plain-8-seed0"]["wall_s"]

    seen.clear()
    second = run_sweep(base, points, tmp_path, on_run, threading.Event())
    assert [s["status"] for s in second] == ["completed"] * 3
    assert second[0]["wall_s"] == done_wall  # skipped, not retrained
    rows = [json.loads(l) for l in (tmp_path / "grid" / "resnet-8-A-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["type"] == "train"] == [5, 10, 15, 20]

    # A diverging run is recorded and the sweep goes on to the next.
    diverging = tiny_config(digits_data_dir, "optim.learning_rate=1e30", steps=20, name="bad")
    results = run_sweep(diverging, [GridPoint("plain", 8, 0), GridPoint("plain", 8, 1)], tmp_path,
                        on_run, threading.Event())
    assert [s["status"] for s in results] == ["diverged", "diverged"]
    assert set(summaries_of(tmp_path / "bad")) == {"plain-8-seed0", "plain-8-seed1"}


def test_a_crashing_run_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path, digits_data_dir, monkeypatch):
    import resdepth.training.loop as train

    real = train.train_and_evaluate

    def flaky(config, run_dir, on_event, stop, config_notes=None):
        if config.run.seed == 0:
            raise RuntimeError("simulated crash")
        return real(config, run_dir, on_event, stop, config_notes)

    monkeypatch.setattr(train, "train_and_evaluate", flaky)
    base = tiny_config(digits_data_dir, steps=5, name="crash")
    results = run_sweep(base, [GridPoint("plain", 8, 0), GridPoint("plain", 8, 1)], tmp_path,
                        lambda *a: (lambda e: None), threading.Event())
    assert [s["status"] for s in results] == ["failed", "completed"]
    saved = summaries_of(tmp_path / "crash")["plain-8-seed0"]
    assert saved["status"] == "failed" and "simulated crash" in saved["message"]


def test_ctrl_c_then_rerun_finishes_the_grid_with_nothing_lost_or_repeated(tmp_path, digits_data_dir):
    command = [sys.executable, "-m", "resdepth", "sweep", "--dataset", "digits", "--depths", "8",
               "--arch", "plain,residual", "--experiment", "digits", "--out", str(tmp_path),
               "--data-dir", digits_data_dir, "--steps", "40",
               "--set", "run.log_every_steps=5", "--set", "run.checkpoint_every_steps=1000",
               "--set", "optim.batch_size=32", "--set", "optim.lr_boundaries_steps=[20]"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    metrics = tmp_path / "digits" / "plain-8-seed0" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output
    interrupted = json.loads((tmp_path / "digits" / "plain-8-seed0" / "summary.json").read_text())
    assert interrupted["status"] == "interrupted" and interrupted["steps_done"] < 40
    assert not (tmp_path / "digits" / "resnet-8-A-seed0").exists()  # the sweep stopped there
    # The table's title counts every run of the sweep once, the interrupted one as interrupted.
    assert re.search(r"digits: 2 runs: 1 interrupted, 1 not started \(\d+ s\)", output), output

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert re.search(r"digits: 2 runs: 2 completed \(\d+ s\)", rerun.stdout), rerun.stdout
    for name in ("plain-8-seed0", "resnet-8-A-seed0"):
        run_dir = tmp_path / "digits" / name
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
        rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if r["type"] == "train"] == list(range(5, 41, 5))


def test_the_sweep_table_title_counts_every_run_by_status():
    from resdepth.cli.training import sweep_title

    summaries = [{"status": "completed"}, {"status": "interrupted"}]
    assert sweep_title("demo", summaries, 4, 12.3) == \
        "demo: 4 runs: 1 completed, 1 interrupted, 2 not started (12 s)"
    summaries = [{"status": "locked"}, {"status": "completed"}, {"status": "failed"}, {"status": "completed"}]
    assert sweep_title("grid", summaries, 4, 0) == "grid: 4 runs: 2 completed, 1 failed, 1 locked (0 s)"


def test_dry_run_lists_runs_with_parameters_and_cost():
    from typer.testing import CliRunner
    from resdepth.cli.app import app

    result = CliRunner().invoke(app, ["sweep", "--experiment", "table6", "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "resnet-1202-A-seed0" in result.output and "19,421,274" in result.output
    assert "resnet-110-A-seed4" in result.output and "plain-110-seed0" in result.output and "PFLOP" in result.output
    result = CliRunner().invoke(app, ["sweep", "--experiment", "table6", "--dry-run", "--shard", "0/2"],
                                env={"COLUMNS": "200"})
    assert "8 runs" in result.output


def test_analyze_gives_one_value_per_3x3_layer(recorded_runs):
    for depth in (8, 14):
        for name in (f"plain-{depth}-seed0", f"resnet-{depth}-A-seed0"):
            data = json.loads((recorded_runs / name / "layer_responses.json").read_text())
            assert len(data["layers"]) == depth - 1  # every conv is 3x3; the fc is not a conv
            assert data["layers"][0]["name"] == "stem"
            assert all(layer["std"] > 0 for layer in data["layers"])
