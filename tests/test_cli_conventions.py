"""What people expect of a command line: --version, -h, examples in --help, --json, a clear start
of each run, a progress bar that fits 80 columns, no TensorFlow noise, a fast offline failure,
the persistent compilation cache, and a TensorFlow package that installs on every platform."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from rich.console import Console
from typer.main import get_command
from typer.testing import CliRunner

from resdepth.cli.app import RunDisplay, app
from resdepth.training.loop import Event

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "Generating splits", "Shuffling",
         "examples/s", "Dl Completed", "Retrying", "urllib3", "WARNING:absl", "Traceback")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


# ------------------------------------------------------------------ --version, -h, examples
def test_version_comes_from_the_package_metadata():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"resdepth {version('resdepth')}"


def _command_names() -> list[str]:
    return sorted(get_command(app).commands)


def test_every_help_takes_h_and_ends_with_real_examples():
    for args in [[], *([name] for name in _command_names())]:
        result = runner.invoke(app, [*args, "-h"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (args, result.output)
        assert result.stdout == runner.invoke(app, [*args, "--help"], env={"COLUMNS": "80"}).stdout
        lines = result.stdout.splitlines()
        assert all(len(line.rstrip()) <= 80 for line in lines)
        # The epilog follows the last panel of options or commands.
        last_panel = max(i for i, line in enumerate(lines) if line.startswith("╰"))
        epilog = [line.strip() for line in lines[last_panel + 1:] if line.strip()]
        assert any(f"resdepth {' '.join(args)}".strip() in line for line in epilog), (args, epilog)
        command = get_command(app) if not args else get_command(app).commands[args[0]]
        for paragraph in (command.epilog or "").split("\n\n"):
            if paragraph.startswith("resdepth "):  # an example: shown whole, on one line
                assert paragraph in epilog, (args, paragraph, epilog)


def test_help_has_no_type_tags_and_each_command_a_one_sentence_summary():
    wide = {"COLUMNS": "200"}
    for args in [[], *([name] for name in _command_names())]:
        text = runner.invoke(app, [*args, "--help"], env=wide).stdout
        tag = re.search(r"<(bool|str|int|float|path|Path|list\[\w+\])>", text)
        assert tag is None, (args, tag and tag.group(0))
    assert " N " in runner.invoke(app, ["train", "--help"], env=wide).stdout  # --depth N
    lines = runner.invoke(app, ["--help"], env=wide).stdout.splitlines()
    top = next(i for i, line in enumerate(lines) if "Commands" in line)
    bottom = next(i for i in range(top, len(lines)) if lines[i].startswith("╰"))
    rows = [line.strip("│").strip() for line in lines[top + 1:bottom]]
    names = [row.split()[0] for row in rows]  # a wrapped summary would start a row with a word
    assert sorted(names) == _command_names(), rows
    for row in rows:
        summary = row.split(None, 1)[1]
        assert summary.endswith("."), row


# ------------------------------------------------------------------------------ --json
def test_info_json_is_the_only_stdout():
    result = runner.invoke(app, ["info", "--depths", "20,110", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [row["depth"] for row in document["rows"]] == [20, 110]
    assert [row["params"] for row in document["rows"]] == [269_722, 1_727_962]
    assert document["rows"][0]["paper_params"] == 270_000 and document["shortcut"] == "A"
    assert [row["paper_params_label"] for row in document["rows"]] == ["0.27M", "1.7M"]
    assert "Table 6" in document["paper_sources"]["paper_params"]
    imagenet = json.loads(runner.invoke(app, ["info", "--dataset", "imagenet", "--depths", "50",
                                              "--json"]).stdout)
    assert imagenet["rows"][0]["params"] == 25_557_032


def test_sweep_dry_run_json():
    result = runner.invoke(app, ["sweep", "--experiment", "demo", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["experiment"] == "demo" and len(document["runs"]) == 4
    assert {"name", "arch", "depth", "seed", "params", "train_pflop"} <= set(document["runs"][0])
    assert document["total_train_pflop"] == pytest.approx(sum(r["train_pflop"] for r in document["runs"]))
    refused = runner.invoke(app, ["sweep", "--experiment", "demo", "--json"])
    assert refused.exit_code == 2 and "--dry-run" in refused.output


# ------------------------------------------------------------------- runs through the CLI
def _digits_args(data_dir: str, out: Path) -> list[str]:
    return ["--dataset", "digits", "--data-dir", data_dir, "--out", str(out), "--steps", "10",
            "--set", "optim.batch_size=32", "--set", "optim.lr_boundaries_steps=[]",
            "--set", "run.eval_every_steps=10", "--set", "run.log_every_steps=5"]


@pytest.fixture(scope="module")
def trained(digits_data_dir, tmp_path_factory):
    """One tiny digits run trained by `resdepth train` (no terminal: plain lines)."""
    out = tmp_path_factory.mktemp("cli-runs")
    args = _digits_args(digits_data_dir, out)
    result = runner.invoke(app, ["train", "--depth", "8", *args])
    assert result.exit_code == 0, result.output
    return out, args, result


def test_a_run_starts_with_devices_run_directory_and_compiling(trained):
    out, _, result = trained
    run_dir = out / "digits" / "resnet-8-A-seed0"
    assert f"resnet-8-A-seed0: cpu: 1 x cpu, run directory {run_dir}" in result.stdout
    assert "compiling the training step" in result.stdout
    assert result.stdout.index("compiling") < result.stdout.index("iter 5/10")
    assert "on a CPU" not in result.output  # digits is meant for a CPU


def test_a_finished_run_says_already_completed(trained):
    out, args, _ = trained
    run_dir = out / "digits" / "resnet-8-A-seed0"
    again = runner.invoke(app, ["train", "--depth", "8", *args])
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0] == f"already completed: {run_dir}"
    swept = runner.invoke(app, ["sweep", "--depths", "8", "--arch", "residual", "--seeds", "0", *args])
    assert swept.exit_code == 0, swept.output
    assert f"already completed: {run_dir}" in swept.stdout and "compiling" not in swept.stdout


def test_table_json(trained):
    out, _, _ = trained
    result = runner.invoke(app, ["table", str(out / "digits"), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["tables"] and all({"title", "columns", "rows"} <= set(t) for t in document["tables"])
    cells = [cell for t in document["tables"] for row in t["rows"] for cell in row.values()]
    assert "75,002" in cells  # the parameters of the digits ResNet-8 just trained
    assert Path(document["written"]).exists() and "wrote" in result.stderr


def _events(total: int) -> list[Event]:
    row = {"train_loss": 0.4123, "train_error": 0.1234, "learning_rate": 0.1, "images_per_s": 1234.0}
    return [Event("start", 0, total, {"params": 19_400_000, "resumed": False}),
            Event("eval", 31_000, total, {"test_error": 0.1021}),
            Event("train", 31_234, total, row)]


def test_progress_bar_fits_80_columns_with_the_iteration_count():
    screen = io.StringIO()
    terminal = Console(file=screen, width=80, force_terminal=True, color_system=None)
    label = "plain-1202-A-seed0-lr05"  # a long run name
    with RunDisplay(label, Path("results/table6") / label, "digits", out=terminal) as display:
        for event in _events(64_000):
            display(event)
    lines = [ANSI.sub("", line) for line in screen.getvalue().splitlines()]
    bar = [line for line in lines if "31234/64000" in line]
    assert bar, lines
    assert all(len(line) <= 80 for line in bar), bar
    assert "test 10.21% @31000" in bar[-1]  # the statistics fill what is left, most important first


def test_without_a_terminal_plain_lines_and_a_cpu_warning_for_cifar(capsys):
    log = io.StringIO()
    plain = Console(file=log, width=80)
    with RunDisplay("resnet-110-A-seed0", Path("results/x"), "cifar10", out=plain) as display:
        for event in _events(64_000):
            display(event)
    text = log.getvalue()
    # A line shows the test error of its own iteration only: 31000's is not 31234's.
    assert "resnet-110-A-seed0 iter 31234/64000 err 12.3%" in text and "10.21" not in text
    same = io.StringIO()
    with RunDisplay("resnet-110-A-seed0", Path("results/x"), "digits", out=Console(file=same, width=80)) as display:
        for event in [*_events(64_000), Event("eval", 64_000, 64_000, {"test_error": 0.0987}),
                      Event("train", 64_000, 64_000, _events(64_000)[-1].data)]:
            display(event)
    assert "resnet-110-A-seed0 iter 64000/64000 test 9.87% err 12.3%" in same.getvalue()
    assert "cpu: " in text and "compiling" in text and "\x1b" not in text
    warning = capsys.readouterr().err
    assert "warning: cifar10 on a CPU" in warning and len(warning.strip().splitlines()) == 1


# ------------------------------------------------- noise, offline, cache: real processes
def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "RESDEPTH_COMPILATION_CACHE")
           and not k.lower().endswith("_proxy")}
    return {**env, **extra}


def _resdepth(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resdepth", *args], capture_output=True,
                          text=True, env={**env, "PYTHONPATH": str(ROOT)}, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_no_tensorflow_noise_and_the_compilation_cache_is_reused(tmp_path):
    cache = tmp_path / "xdg-cache"
    env = _clean_env(XDG_CACHE_HOME=str(cache))
    args = ["train", "--dataset", "digits", "--depth", "8", "--steps", "5",
            "--set", "optim.lr_boundaries_steps=[]", "--set", "optim.batch_size=32",
            "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "out")]
    first = _resdepth(args, env, tmp_path)  # prepares the digits dataset too: TFDS's bars
    assert first.returncode == 0, first.stderr
    for text in (first.stdout, first.stderr):
        assert not [word for word in NOISE if word in text], text
    assert first.stderr == ""
    compiled = {path.name for path in (cache / "resdepth" / "jax").iterdir()}
    steps = {name for name in compiled if name.startswith(("jit_step", "jit_evaluate"))}
    assert len(steps) == 2, compiled

    second = _resdepth([*args, "--seed", "1"], env, tmp_path)  # same programs, other numbers
    assert second.returncode == 0 and second.stderr == "", second.stderr
    again = {path.name for path in (cache / "resdepth" / "jax").iterdir()}
    assert {name for name in again if name.startswith(("jit_step", "jit_evaluate"))} == steps


def test_offline_cifar10_fails_in_seconds_with_one_line(tmp_path):
    from resdepth.data.datasets import DOWNLOAD_URLS, unreachable

    env = _clean_env(RESDEPTH_COMPILATION_CACHE="0")
    if unreachable(DOWNLOAD_URLS["cifar10"]) is None:  # this machine is online: cut it off
        env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    started = time.monotonic()
    result = _resdepth(["train", "--dataset", "cifar10", "--steps", "1", "--set", "optim.lr_boundaries_steps=[]",
                        "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "out")], env, tmp_path)
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert seconds < 20, seconds
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not download or prepare cifar10")
    assert "Retrying" not in result.stderr + result.stdout and result.stdout == ""


def test_compilation_cache_folder_and_switch(tmp_path):
    from resdepth.runtime.jax_setup import compilation_cache_dir

    assert compilation_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "resdepth" / "jax"
    assert compilation_cache_dir({"HOME": "/h"}) == Path.home() / ".cache" / "resdepth" / "jax"
    for off in ("0", "off", "false"):
        assert compilation_cache_dir({"RESDEPTH_COMPILATION_CACHE": off}) is None
    assert compilation_cache_dir({"RESDEPTH_COMPILATION_CACHE": str(tmp_path / "c")}) == tmp_path / "c"
    assert compilation_cache_dir({"JAX_COMPILATION_CACHE_DIR": "/j"}) == Path("/j")


def test_descriptor_level_stderr_is_swallowed_and_replayed_on_failure(capfd):
    from resdepth.runtime.quiet import stderr_descriptor_captured

    with stderr_descriptor_captured():
        os.write(2, b"C++ start-up chatter\n")
    with pytest.raises(ImportError), stderr_descriptor_captured():
        os.write(2, b"why the import failed\n")
        raise ImportError("no such library")
    err = capfd.readouterr().err
    assert "chatter" not in err and "why the import failed" in err


# --------------------------------------------------------------------------- packaging
@pytest.mark.parametrize("system,machine,expected", [
    ("linux", "x86_64", "tensorflow-cpu"), ("win32", "AMD64", "tensorflow-cpu"),
    ("darwin", "arm64", "tensorflow"), ("linux", "aarch64", "tensorflow")])
def test_one_tensorflow_package_per_platform(system, machine, expected):
    from packaging.requirements import Requirement

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    environment = {"sys_platform": system, "platform_machine": machine}
    chosen = [requirement.name for requirement in map(Requirement, dependencies)
              if requirement.name in ("tensorflow", "tensorflow-cpu")
              and (requirement.marker is None or requirement.marker.evaluate(environment))]
    assert chosen == [expected]
