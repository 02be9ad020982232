"""The command line: bad input is one line and exit code 2; info shows the paper's numbers."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from resdepth.cli.app import app
from resdepth.config import ConfigError, load_config, parse_override

from conftest import one_line_error

runner = CliRunner()


@pytest.mark.parametrize("args,expected", [
    (["info", "--depths", "21"], "6n+2"),
    (["info", "--dataset", "imagenet", "--depths", "20"], "18, 34, 50, 101, 152"),
    (["info", "--dataset", "mnist"], "cifar10, digits, imagenet"),
    (["info", "--shortcut", "D"], "A, B or C"),
    (["info", "--depths", "20,x"], "comma-separated integers"),
    (["info", "--depths", ","], "--depths must name at least one integer"),
    (["sweep", "--dataset", "digits", "--seeds", "0,x", "--dry-run"],
     "--seeds must be comma-separated integers"),
    (["train", "--dataset", "mnist"], "cifar10, digits, imagenet"),
    (["train", "--dataset", "digits", "--depth", "21"], "6n+2"),
    (["train", "--dataset", "digits", "--shortcut", "Z"], "A, B or C"),
    (["train", "--dataset", "digits", "--set", "optim.bogus=1"], "unknown config key optim.bogus"),
    (["train", "--dataset", "digits", "--set", "optim.total_steps='many'"], "must be int"),
    (["sweep", "--dataset", "cifar10", "--depths", "20,21", "--dry-run"], "6n+2"),
    (["sweep", "--dataset", "digits", "--shard", "3/2", "--dry-run"], "0 <= I < N"),
    (["sweep", "--dataset", "digits", "--arch", "dense", "--dry-run"], "plain or residual"),
    (["plot", "/nonexistent/results"], "nonexistent"),
    (["table", "/nonexistent/results"], "nonexistent"),
    (["analyze", "/nonexistent/run"], "no such folder"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, expected):
    assert expected in one_line_error(runner.invoke(app, args))


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = one_line_error(runner.invoke(app, ["train", "--dataset", "digits", "--out", str(blocker / "x")]))
    assert "cannot write" in line and "--out" in line


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import tensorflow_datasets.core.download.downloader as downloader

    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)
    proxy = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    result = runner.invoke(app, ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "tfds"),
                                 "--out", str(tmp_path / "out"), "--steps", "1",
                                 "--set", "optim.lr_boundaries_steps=[]"], env=proxy)
    line = one_line_error(result)
    assert "could not download" in line and "cifar10" in line


def test_info_shows_our_counts_beside_the_papers():
    result = runner.invoke(app, ["info", "--depths", "20,110"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # Ours exact, the paper's as Table 6 prints them (it gives no exact counts).
    assert result.output.count("269,722") == 1 and result.output.count("1,727,962") == 1
    assert "paper params (Table 6)" in result.output
    assert "0.27M" in result.output and "1.7M" in result.output
    result = runner.invoke(app, ["info", "--dataset", "imagenet", "--depths", "50"], env={"COLUMNS": "200"})
    assert "25,557,032" in result.output and "3.86e9" in result.output and "3.8e9" in result.output
    row = next(line for line in result.output.splitlines() if "25,557,032" in line)
    # Table 1 gives FLOPs, no parameters: no all-dash column of the paper's parameters (issue 22).
    assert row.count("25,557,032") == 1 and "paper params" not in result.output


@pytest.mark.parametrize("command", [["train", "--depth", "9"], ["sweep", "--depths", "9", "--dry-run"],
                                     ["info", "--depths", "9"]])
def test_a_bad_digits_depth_names_digits(command):
    line = one_line_error(runner.invoke(app, [command[0], "--dataset", "digits", *command[1:]]))
    assert "digits" in line and "6n+2" in line and "CIFAR depth" not in line, line


def test_help_is_fast_and_imports_no_tensorflow_or_jax():
    code = ("import sys, runpy; sys.argv=['resdepth', '--help']\n"
            "try:\n    runpy.run_module('resdepth', run_name='__main__')\nexcept SystemExit: pass\n"
            "print([m for m in ('tensorflow', 'jax', 'tensorflow_datasets') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "sweep" in result.stdout and "train" in result.stdout


def test_config_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(ConfigError, match="unknown config key model.width"):
        load_config("cifar10", [parse_override("model.width=3")])
    with pytest.raises(ConfigError, match="must be bool"):
        load_config("cifar10", [parse_override("model.residual=1")])
    with pytest.raises(ConfigError, match="must be list"):
        load_config("cifar10", [parse_override("optim.lr_boundaries_steps=5")])
    with pytest.raises(ConfigError, match="no experiment file"):
        load_config("no-such-experiment")
    config = load_config("cifar10", [parse_override("optim.learning_rate=1"), parse_override("data.data_dir=/tmp/x")])
    assert config.optim.learning_rate == 1.0 and isinstance(config.optim.learning_rate, float)
    assert config.data.data_dir == "/tmp/x"


def test_experiment_files_all_load():
    from pathlib import Path

    names = {path.stem: load_config(str(path)).name for path in Path("experiments").glob("*.toml")}
    assert names.pop("table4") == "table3"  # Table 4 tests the Table 3 runs; it trains nothing new
    assert all(stem == name for stem, name in names.items())


def test_experiments_are_found_outside_the_repository(tmp_path, monkeypatch):
    # An installed resdepth carries its experiment files: the demo runs from any folder.
    monkeypatch.chdir(tmp_path)
    assert load_config("demo").sweep.depths == [20, 56]
    assert load_config("table6").optim.lr_boundaries_steps == [32000, 48000]
