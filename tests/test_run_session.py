"""A run through the CLI and training/session.py: what its lines show, how --steps scales the
schedule, how host state comes back from checkpoints old and new."""

from __future__ import annotations

import json
import re
import threading

import pytest
from typer.testing import CliRunner

from resdepth.cli.app import app
from resdepth.config import ConfigError, load_config, parse_override, scale_schedule
from resdepth.training.loop import HostState
from resdepth.training.session import train_run
from resdepth.rundir.directory import RunDirectory

from conftest import stop_at, tiny_config


def test_each_line_shows_the_test_error_of_its_own_iteration(tmp_path, digits_data_dir):
    # Without a terminal: plain lines. No --set for the drops: --steps scales digits' 200, 300 of 400.
    result = CliRunner().invoke(app, [
        "train", "--dataset", "digits", "--depth", "8", "--steps", "40",
        "--set", "run.eval_every_steps=20", "--data-dir", digits_data_dir, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "digits" / "resnet-8-A-seed0"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = {row["step"]: row["test_error"] for row in rows if row["type"] == "eval"}
    assert sorted(evaluated) == [20, 40]
    lines = [line for line in result.stdout.splitlines() if " iter " in line]
    shown = [int(re.search(r" iter (\d+)/40 ", line).group(1)) for line in lines]
    assert shown == [10, 20, 30, 40]
    for step, line in zip(shown, lines):
        test = re.search(r" test (\S+)% ", line)
        if step in evaluated:
            assert test and test.group(1) == f"{100 * evaluated[step]:.2f}", line
        else:
            assert test is None, line  # never an older evaluation's
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"iter 40/40 test {100 * summary['final_test_error']:.2f}% " in lines[-1]

    # --steps 40 put the drops at the same fractions of the run, said so, and recorded it.
    said = "--steps 40: learning-rate drops at 20, 30 (the experiment's 200, 300 of 400, scaled)"
    assert said in result.stderr
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["config"]["optim"]["lr_boundaries_steps"] == [20, 30]
    assert saved["config"]["optim"]["total_steps"] == 40
    assert saved["lr_boundaries_scaled"] == {
        "total_steps": 40, "lr_boundaries_steps": [20, 30],
        "from_total_steps": 400, "from_lr_boundaries_steps": [200, 300]}
    rates = {row["step"]: row["learning_rate"] for row in rows if row["type"] == "train"}
    assert rates == pytest.approx({10: 0.1, 20: 0.1, 30: 0.01, 40: 0.001})


def test_scale_schedule_moves_the_drops_only():
    cifar = load_config("cifar10")
    assert scale_schedule(cifar, 10_000) == {
        "total_steps": 10_000, "lr_boundaries_steps": [5000, 7500],
        "from_total_steps": 64_000, "from_lr_boundaries_steps": [32_000, 48_000]}
    assert cifar.optim.total_steps == 10_000 and cifar.optim.warmup_max_steps == 2000  # the cap stays
    digits = load_config("digits")
    assert scale_schedule(digits, 600)["lr_boundaries_steps"] == [300, 450]
    digits = load_config("digits")
    assert scale_schedule(digits, 401)["lr_boundaries_steps"] == [201, 301]  # 200.5, 300.75: half up
    imagenet = load_config("imagenet")
    before = imagenet.optim.lr_boundaries_steps
    scaled = scale_schedule(imagenet, imagenet.optim.total_steps // 2)
    assert scaled["lr_boundaries_steps"] == [b // 2 for b in before]
    same = load_config("digits")
    assert scale_schedule(same, 400) is None and same.optim.lr_boundaries_steps == [200, 300]
    none = load_config("digits", [parse_override("optim.lr_boundaries_steps=[]")])
    assert scale_schedule(none, 50) is None and none.optim.total_steps == 50
    with pytest.raises(ConfigError, match="scaled to 2 iterations, fall at 1, 2"):
        scale_schedule(load_config("digits"), 2)


def dry_run(*args: str):
    result = CliRunner().invoke(app, ["sweep", "--dataset", "digits", "--dry-run", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_steps_scales_the_drops_unless_set_gives_them():
    document, said = dry_run("--steps", "600")
    assert document["total_steps"] == 600 and document["lr_boundaries_steps"] == [300, 450]
    assert "--steps 600: learning-rate drops at 300, 450 (the experiment's 200, 300 of 400, scaled)" in said
    document, said = dry_run("--steps", "600", "--set", "optim.lr_boundaries_steps=[100]")
    assert document["lr_boundaries_steps"] == [100] and "scaled" not in said  # --set wins
    document, said = dry_run("--set", "optim.total_steps=600")
    assert document["lr_boundaries_steps"] == [200, 300] and "scaled" not in said  # literal
    cifar = CliRunner().invoke(app, ["sweep", "--dataset", "cifar10", "--depths", "20", "--arch",
                                     "residual", "--dry-run", "--json", "--steps", "10000"])
    assert cifar.exit_code == 0, cifar.output  # refused before: drops at 32000, 48000 past the end
    assert json.loads(cifar.stdout)["lr_boundaries_steps"] == [5000, 7500]


def test_host_state_reads_old_checkpoint_dicts_and_writes_the_same_dict():
    old = {"warmup_switch_step": None, "wall_s": 12.5, "best_eval_error": None, "evals_since_best": 0}
    host = HostState.from_dict(old)
    assert host == HostState(wall_s=12.5) and host.to_dict() == old
    warm = {**old, "warmup_switch_step": 300, "warmup_switch_reason": "train_error_below_threshold"}
    assert HostState.from_dict(warm).to_dict() == warm
    assert HostState.from_dict({"wall_s": 1.0, "from_a_later_version": 3}) == HostState(wall_s=1.0)


def test_a_run_resumes_from_a_checkpoint_with_an_old_style_host_dict(tmp_path, digits_data_dir):
    config = tiny_config(digits_data_dir, "optim.warmup_min_depth=8", "optim.warmup_until_train_error=0.001",
                         "optim.warmup_max_steps=100", steps=10, name="old")
    run_dir = RunDirectory.of(tmp_path, config).path
    flag, sink = stop_at(5)
    assert train_run(config, run_dir, sink, flag)["status"] == "interrupted"
    host_file = run_dir / "checkpoints" / "5" / "host" / "metadata"  # Orbax's JsonSave
    saved = json.loads(host_file.read_text())
    assert saved == {"warmup_switch_step": None, "warmup_switch_reason": "still_active",
                     "wall_s": saved["wall_s"], "best_eval_error": None, "evals_since_best": 0}
    # The dict as the untyped `run.host` of earlier versions wrote it (keys in its order).
    host_file.write_text(json.dumps({"warmup_switch_step": None, "wall_s": 1000.0,
                                     "best_eval_error": None, "evals_since_best": 0,
                                     "warmup_switch_reason": "still_active"}))
    summary = train_run(config, run_dir, stop=threading.Event())
    assert summary["status"] == "completed" and summary["wall_s"] >= 1000.0
    assert summary["warmup_switch_reason"] == "still_active" and summary["warmup_switch_step"] is None
