"""Shared fixtures: the embedded digits prepared once, and a small experiment of real runs.

Every run here goes through the same code as a full run (TFDS loading, the compiled
data-parallel step, Orbax checkpoints); only the nets and schedules are tiny.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tests compile some hundreds of small programs and run each for a few iterations, so
# compiling dominates the suite's time, and LLVM's optimizations (XLA:CPU's default backend
# level is 3) take most of each compile while saving little on tiny nets. At level 0 XLA runs
# the same HLO passes and emits plainer machine code, which rounds some results differently in
# their last bits: a test compares runs made here, under these flags (the commands it starts
# inherit them), never against numbers a user's level-3 build printed.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def xla_flags(*flags: str) -> str:
    """XLA_FLAGS for a command a test starts: the tests' own flags and `flags`."""
    return " ".join((os.environ.get("XLA_FLAGS", ""), *flags)).strip()


if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = xla_flags(TEST_XLA_FLAGS)
# One persistent compilation cache for the session, in a temporary folder (never ~/.cache),
# shared by this process and the commands tests start: many tests compile the same small
# programs, and every compile after the first loads them. Tests of the cache give it a folder
# of their own.
# Under pytest-xdist the workers inherit the controller's folder and share it.
SESSION_COMPILATION_CACHE = os.environ.get("RESDEPTH_TESTS_COMPILATION_CACHE", "")
if not ("PYTEST_XDIST_WORKER" in os.environ and SESSION_COMPILATION_CACHE):
    SESSION_COMPILATION_CACHE = tempfile.mkdtemp(prefix="resdepth-tests-jax-cache-")
    os.environ["RESDEPTH_TESTS_COMPILATION_CACHE"] = SESSION_COMPILATION_CACHE
    atexit.register(shutil.rmtree, SESSION_COMPILATION_CACHE, ignore_errors=True)
os.environ["RESDEPTH_COMPILATION_CACHE"] = SESSION_COMPILATION_CACHE

import jax  # noqa: E402

from resdepth.runtime.jax_setup import enable_compilation_cache  # noqa: E402

enable_compilation_cache()

# Strict dtype promotion catches accidental float64/weak-type mixing in library code.
jax.config.update("jax_numpy_dtype_promotion", "strict")

from resdepth.config import ExperimentConfig, load_config, parse_override  # noqa: E402


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder `build(folder)` fills once per test session: under pytest-xdist the first worker
    to ask builds it in the session's shared temporary folder while the others wait (flock)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent  # pytest-N/, above each worker's popen-gwK/
    folder, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory) -> str:
    """A TFDS data dir with resdepth_digits prepared (about 5 s, once per session)."""
    from resdepth.data.datasets import load_dataset

    def prepare(folder: Path) -> None:
        config = load_config("digits").data
        config.data_dir = str(folder)
        load_dataset(config)

    return str(built_once(tmp_path_factory, "tfds", prepare))


@contextlib.contextmanager
def lowerings() -> Iterator[list[tuple[str, str]]]:
    """(program, thread name) for each program JAX lowers inside the block, "jit(name)": a
    program lowered twice was compiled, or loaded from the cache, twice."""
    seen: list[tuple[str, str]] = []
    recording = [True]

    def listener(event: str, duration: float, **details) -> None:
        if recording[0] and event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            seen.append((details.get("fun_name", ""), threading.current_thread().name))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        recording[0] = False  # JAX has no public way to remove a listener


def tiny_config(data_dir: str, *overrides: str, depth: int = 8, residual: bool = True,
                steps: int = 30, seed: int = 0, name: str = "tiny") -> ExperimentConfig:
    """A digits experiment of `steps` iterations at batch 32, logged every 5."""
    texts = [f"name='{name}'", f"data.data_dir='{data_dir}'", f"model.depth={depth}",
             f"model.residual={'true' if residual else 'false'}", f"run.seed={seed}",
             f"optim.total_steps={steps}", "optim.batch_size=32", "optim.lr_boundaries_steps=[]",
             "run.log_every_steps=5", "run.eval_every_steps=10", "run.checkpoint_every_steps=10",
             *overrides]
    return load_config("digits", [parse_override(text) for text in texts])


def one_line_error(result) -> str:
    """The one "error:" line of a CLI result that exited 2 without a traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def stop_at(step: int, kind: str = "train") -> tuple[threading.Event, callable]:
    """A stop flag and an event sink that raises it once the run reports `step`."""
    flag = threading.Event()

    def sink(event):
        if event.kind == kind and event.step >= step:
            flag.set()

    return flag, sink


@pytest.fixture(scope="session")
def recorded_runs(tmp_path_factory, digits_data_dir) -> Path:
    """An experiment folder of real tiny digits runs: plain/residual 8 and 14 (seed 0) and
    residual 8 seed 1, 30 iterations each, with layer responses for the seed-0 runs."""
    from resdepth.evaluate.analyze import analyze_run
    from resdepth.rundir.directory import RunDirectory
    from resdepth.training.session import train_run

    def record(out: Path) -> None:
        for depth, residual, seed in ((8, False, 0), (8, True, 0), (14, False, 0), (14, True, 0),
                                      (8, True, 1)):
            config = tiny_config(digits_data_dir, depth=depth, residual=residual, seed=seed,
                                 steps=30, name="recorded")
            run_dir = RunDirectory.of(out, config).path
            summary = train_run(config, run_dir, stop=threading.Event())
            assert summary["status"] == "completed"
            if seed == 0:
                analyze_run(run_dir)

    return built_once(tmp_path_factory, "results", record) / "recorded"


# The longest test files first, as measured (`make test` with a start and end time per test):
# pytest-xdist (`make test`, with --no-loadscope-reorder: its default orders files by their
# number of tests instead) hands whole files to its two workers in this order, each taking the
# next when it is nearly done, so what is left at the end is short and neither worker idles while
# the other finishes a long file. The first two need nothing the other builds: the second builds
# recorded_runs, which the files after it share. Files not named keep their order, after these.
LONG_FILES_FIRST = (
    "test_robustness.py", "test_results_plots_tables.py", "test_run_directory.py",
    "test_train.py", "test_sweep.py", "test_models.py", "test_cpu_conv.py", "test_packed_net.py",
    "test_fidelity.py", "test_cli_conventions.py", "test_imagenet.py", "test_packed.py",
    "test_signals.py", "test_run_session.py", "test_operations.py", "test_readme.py",
    "test_digits_first_use.py", "test_honest_results.py", "test_new_user.py",
    "test_signals_results.py", "test_figures.py", "test_device_scripts.py",
    "test_damaged_runs.py", "test_peer_and_profile.py", "test_report.py")


def pytest_collection_modifyitems(items) -> None:
    rank = {name: index for index, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file
