"""What a newcomer meets first (issue 22): where the dataset came from when a run cannot get
it, what --dry-run says of the data and of the time on a CPU, an experiment file made by
`resdepth config`, options given wrong or empty, and a Ctrl-C in the first seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resdepth.cli.app import app
from resdepth.data.datasets import DOWNLOAD_URLS

from conftest import one_line_error

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
# A proxy nobody listens on: the download probe fails at once, as on an offline machine.
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
ON_CPU = {"JAX_PLATFORMS": "cpu", "COLUMNS": "200"}


# ------------------------------------------- 2. where the dataset choice came from, offline
@pytest.mark.parametrize("text", ["", "# my settings\n[optim]\ntotal_steps = 10\n"],
                         ids=["empty", "nearly-empty"])
def test_an_offline_failure_names_the_file_that_named_no_dataset(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    Path("mine.toml").write_text(text)
    args = ["train", "--experiment", "mine.toml", "--data-dir", str(tmp_path / "tfds"),
            "--out", str(tmp_path / "out"), "--set", "optim.lr_boundaries_steps=[]"]
    line = one_line_error(runner.invoke(app, args, env=OFFLINE))
    assert line.startswith("error: could not download or prepare cifar10"), line
    assert "mine.toml names no dataset" in line and "the default" in line and "--dataset" in line


def test_an_offline_failure_without_dataset_or_experiment_says_cifar10_is_the_default(tmp_path):
    args = ["train", "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "out")]
    line = one_line_error(runner.invoke(app, args, env=OFFLINE))
    assert "cifar10 because no --dataset or --experiment was given" in line, line
    named = one_line_error(runner.invoke(app, [*args, "--dataset", "cifar10"], env=OFFLINE))
    assert "because" not in named  # named on the command line: nothing to explain


# ------------------------------------------------------------- 3. --dry-run says of the data
def test_dry_run_says_cifar10_is_not_prepared_and_what_the_first_run_downloads(tmp_path):
    folder = tmp_path / "tfds"
    result = runner.invoke(app, ["sweep", "--dataset", "cifar10", "--depths", "20,56,110",
                                 "--data-dir", str(folder), "--dry-run"], env=ON_CPU)
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("data: "))
    assert line.startswith(f"data: cifar10 is not prepared in {folder}: the first run downloads "
                           f"{DOWNLOAD_URLS['cifar10']} (about 162 MB)"), line
    assert not folder.exists()  # a dry run makes no folder


def test_dry_run_says_where_the_digits_are_prepared(digits_data_dir):
    result = runner.invoke(app, ["sweep", "--dataset", "digits", "--depths", "8", "--dry-run",
                                 "--json", "--data-dir", digits_data_dir], env=ON_CPU)
    data = json.loads(result.stdout)["data"]
    assert data["prepared"] and data["folder"].startswith(digits_data_dir), data


def test_dry_run_says_which_imagenet_archives_are_missing(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    args = ["sweep", "--dataset", "imagenet", "--depths", "18", "--arch", "residual", "--dry-run",
            "--data-dir", str(tmp_path / "tfds"), "--set", f"data.manual_dir='{manual}'"]
    lacking = runner.invoke(app, args, env=ON_CPU)
    assert lacking.exit_code == 0, lacking.output
    assert (f"data: imagenet is not prepared in {tmp_path / 'tfds'}: {manual} lacks "
            f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar") in lacking.stdout
    for archive in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        (manual / archive).touch()
    ready = json.loads(runner.invoke(app, [*args, "--json"], env=ON_CPU).stdout)["data"]
    assert not ready["prepared"] and ready["first_run"] == (
        f"the first run prepares it from the archives in {manual} (hours, once)")


# ----------------------------------------------- 4 and 7. the option that is wrong, or empty
@pytest.mark.parametrize("args,expected", [
    (["--depths", "8", "--seeds", "0,x"], "--seeds must be comma-separated integers, got '0,x'"),
    (["--depths", ""], "--depths must name at least one integer, got ''"),
    (["--depths", "8", "--seeds", ""], "--seeds must name at least one integer, got ''"),
])
def test_a_wrong_or_empty_grid_option_is_named(args, expected):
    # --dry-run: the code before issue 22 ran the experiment's grid for an empty --depths.
    line = one_line_error(runner.invoke(app, ["sweep", "--dataset", "digits", *args, "--dry-run"]))
    assert line == f"error: {expected}"


# --------------------------------------------- 5. an experiment file made by `resdepth config`
def test_a_file_made_by_config_is_named_after_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = runner.invoke(app, ["config", "--dataset", "digits", "--set", "optim.total_steps=1000"])
    assert made.exit_code == 0 and 'name = "digits"' in made.stdout
    Path("mine.toml").write_text(made.stdout)
    result = runner.invoke(app, ["sweep", "--experiment", "mine.toml", "--depths", "8",
                                 "--arch", "residual", "--dry-run", "--json"], env=ON_CPU)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["experiment"] == "mine"  # results/mine, not results/digits
    assert result.stderr.strip() == ('mine.toml: named "mine" after the file, not "digits" as it '
                                     "says: that is the digits experiment's name, whose runs it "
                                     "would meet (--set name=digits keeps it)")
    kept = runner.invoke(app, ["sweep", "--experiment", "mine.toml", "--depths", "8", "--dry-run",
                               "--json", "--set", "name='digits'"], env=ON_CPU)
    assert json.loads(kept.stdout)["experiment"] == "digits" and kept.stderr == ""
    Path("study.toml").write_text('name = "study"\n[data]\ndataset = "digits"\n')  # its own name
    own = runner.invoke(app, ["sweep", "--experiment", "study.toml", "--depths", "8", "--dry-run",
                              "--json"], env=ON_CPU)
    assert json.loads(own.stdout)["experiment"] == "study" and own.stderr == ""


# ----------------------------------------------------------------- 6. a CPU grid, in minutes
def test_dry_run_of_a_cpu_grid_is_in_cpu_minutes_at_the_measured_cpu_rate():
    args = ["sweep", "--dataset", "digits", "--depths", "20", "--arch", "residual", "--dry-run"]
    result = runner.invoke(app, args, env=ON_CPU)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "params" in line)
    assert "CPU min" in header and "GPU h" not in header
    assert "about 0.25 CPU-minutes one run at a time on this machine's CPU" in result.stdout
    assert "measured on 2 CPU cores (jax 0.12, docs/benchmarks.md)" in result.stdout
    assert "0.00 PFLOP" not in result.stdout and "0.0 GPU-hours" not in result.stdout
    # 400 iterations at the digits ResNet-20's 37.6 ms an iteration (docs/benchmarks.md).
    run = json.loads(runner.invoke(app, [*args, "--json"], env=ON_CPU).stdout)["runs"][0]
    assert run["cpu_minutes"] == pytest.approx(400 * 0.0376 / 60)
    for gpu_args, env in ((["--gpu", "H200"], ON_CPU), ([], {**ON_CPU, "JAX_PLATFORMS": "cuda"})):
        on_gpu = runner.invoke(app, [*args, *gpu_args], env=env)
        header = next(line for line in on_gpu.stdout.splitlines() if "params" in line)
        assert "GPU h" in header and "CPU-minutes" not in on_gpu.stdout, on_gpu.output


def test_a_cpu_grid_no_cpu_rate_fits_says_its_cpu_time_is_not_estimated():
    result = runner.invoke(app, ["sweep", "--dataset", "imagenet", "--depths", "18", "--arch",
                                 "residual", "--dry-run"], env=ON_CPU)
    assert result.exit_code == 0, result.output
    assert ("JAX has no GPU here, and no CPU rate is measured for imagenet at batch 256 in "
            "bfloat16: CPU time is not estimated") in result.stdout


# --------------------------------------------------------------- 8. Ctrl-C in the first seconds
INTERRUPTED_AT_IMPORT = textwrap.dedent("""
    # `resdepth ARGS...`, sent SIGINT once TensorFlow's import has loaded its C++ library: the
    # moment it writes its absl and oneDNN start-up lines.
    import os, runpy, signal, sys, threading, time

    def interrupt() -> None:
        while "tensorflow.python.framework.ops" not in sys.modules:
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    sys.argv[0] = "resdepth"
    runpy.run_module("resdepth", run_name="__main__")
""")


def test_ctrl_c_during_tensorflows_import_is_one_interrupted_line_and_exit_130(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=str(ROOT), RESDEPTH_COMPILATION_CACHE="0")
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_AT_IMPORT, "train", "--dataset", "digits", "--depth", "8",
         "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "tfds")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 130, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == ""  # neither absl's nor oneDNN's lines, nor a traceback
    assert result.stdout == "resnet-8-A-seed0: interrupted; run the same command to resume\n"
    assert not (tmp_path / "out" / "digits" / "resnet-8-A-seed0").exists()
