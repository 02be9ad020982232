"""The run directory as one owner (rundir/directory.py): config.json's one writer and reader, a
damaged checkpoint named in one line without the checkpoint library's tracebacks, and a write
that fails (a full disk, a read-only folder) stopping the run with one line, exit code 2, no
partial checkpoint left, and the same command resuming once the cause is gone.

The full disk is real where the tests may mount a tmpfs (root in a container that allows it);
/dev/full (which refuses every write with ENOSPC) stands in for it at the file level everywhere.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from resdepth.errors import InvalidChoice
from resdepth.rundir.directory import RunConflict, RunDirectory
from resdepth.rundir.metrics import MetricsLog, read_metrics
from resdepth.rundir.storage import WriteFailed, write_json
from resdepth.rundir.summary import Summary

ROOT = Path(__file__).resolve().parents[1]
RUN = "resnet-8-A-seed0"
# 100 iterations, checkpoints at 50 and 100 (each about 0.7 MB for depth 8).
TRAIN = ["train", "--dataset", "digits", "--depth", "8", "--steps", "100",
         "--set", "run.checkpoint_every_steps=50"]
LIBRARY_NOISE = ("Traceback", "Event loop is closed", "absl", "orbax", "Exception ignored")


def resdepth(*args: str, data_dir: str) -> subprocess.CompletedProcess:
    """The CLI in a process of its own: what a user's terminal shows, file descriptors and all."""
    return subprocess.run([sys.executable, "-m", "resdepth", *args, "--data-dir", data_dir],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def rows_without_timing(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("wall_s", "images_per_s")}
            for row in read_metrics(run_dir / "metrics.jsonl")]


def assert_quiet(result: subprocess.CompletedProcess) -> None:
    for noise in LIBRARY_NOISE:
        assert noise not in result.stdout + result.stderr, result.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir) -> Path:
    """A results folder holding one completed 100-iteration run (checkpoints 50 and 100)."""
    out = tmp_path_factory.mktemp("trained")
    result = resdepth(*TRAIN, "--out", str(out), data_dir=digits_data_dir)
    assert result.returncode == 0, result.stderr
    return out


# ------------------------------------------------------------------------------- config.json
def test_config_json_is_written_once_and_notes_only_add_what_it_lacks(tmp_path, digits_data_dir):
    config = tiny_config(digits_data_dir)
    run = RunDirectory.of(tmp_path, config)
    assert run.path == tmp_path / "tiny" / RUN
    run.ensure_writable()
    run.write_config(config, notes={"lr_boundaries_scaled": [1, 2]})
    saved = run.read_config()
    assert saved["config"] == config.to_dict() and saved["lr_boundaries_scaled"] == [1, 2]
    assert {"fingerprint", "recipe_fingerprint", "precision_names", "code_version",
            "jax_version", "devices"} <= set(saved)
    other = tiny_config(digits_data_dir, "optim.learning_rate=0.5")
    run.write_config(other, notes={"lr_boundaries_scaled": [9], "added": 1})
    again = run.read_config()
    assert again["config"] == config.to_dict()  # never rewritten by a later config
    assert again["lr_boundaries_scaled"] == [1, 2] and again["added"] == 1
    run.check_same_run(config)
    with pytest.raises(RunConflict, match="optim.learning_rate"):
        run.check_same_run(other)


def test_a_run_whose_config_json_is_unreadable_is_refused_with_one_line(tmp_path, digits_data_dir):
    config = tiny_config(digits_data_dir)
    run = RunDirectory.of(tmp_path, config).ensure_writable()
    run.config_path.write_bytes(b'{"config": {"model": ')  # cut short
    with pytest.raises(RunConflict) as refused:
        run.check_same_run(config)
    message = str(refused.value)
    assert "config.json cannot be read" in message and "not valid JSON" in message
    assert "\n" not in message and str(run.path) in message
    with pytest.raises(InvalidChoice, match="not valid JSON"):
        run.trained_config()
    # A completed run is recognised as finished (and left alone) whatever its config.json holds.
    run.write_summary(Summary(status="completed", name=run.name, steps_done=30))
    run.check_same_run(config)


def test_the_metrics_log_reads_its_rows_as_read_run_does(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"type": "train", "step": 5, "train_error": float("nan")})
    log.append({"type": "eval", "step": 10, "test_error": 0.5})
    with (tmp_path / "metrics.jsonl").open("a") as handle:
        handle.write('"debris"\n{"type": "train", "step": 1')  # a bad row, a half-written one
    assert log.rows() == list(read_metrics(tmp_path / "metrics.jsonl", warn=False)) == [
        {"type": "train", "step": 5, "train_error": None},
        {"type": "eval", "step": 10, "test_error": 0.5}]
    log.truncate_after(5)
    assert [row["step"] for row in log.rows()] == [5]


def test_a_failed_summary_keeps_what_the_run_knew_and_the_last_logged_iteration(tmp_path, digits_data_dir):
    config = tiny_config(digits_data_dir, residual=False, seed=3)
    run = RunDirectory.of(tmp_path, config).ensure_writable()
    run.write_summary(Summary(status="interrupted", name=run.name, params=1234, steps_done=10))
    run.metrics_log().append({"type": "train", "step": 20, "train_error": 0.5})
    failed = run.failed_summary(config, "RuntimeError: boom", traceback="Traceback ...")
    assert (failed.status, failed.params, failed.steps_done, failed.arch, failed.seed) == (
        "failed", 1234, 20, "plain", 3)
    assert failed.message == "RuntimeError: boom" and failed.to_json()["traceback"] == "Traceback ..."


# ------------------------------------------------------------------------------- write failures
def test_a_metrics_row_that_cannot_be_written_is_one_line_naming_the_folder():
    # /dev/full refuses every write with ENOSPC, as a full disk does.
    with pytest.raises(WriteFailed) as failed:
        MetricsLog(Path("/dev/full")).append({"type": "train", "step": 1})
    assert isinstance(failed.value, InvalidChoice)  # the CLI prints one line, exit code 2
    assert str(failed.value) == (
        "cannot write to /dev: No space left on device; free space on /dev (or make it "
        "writable) or choose another --out, then run the same command to resume")


def test_a_json_file_that_cannot_be_written_leaves_nothing_behind(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(WriteFailed, match=f"cannot write to {tmp_path}: Read-only file system"):
        write_json(tmp_path / "summary.json", {"status": "completed"})
    assert list(tmp_path.iterdir()) == []


def _mount_tiny_disk(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_a_full_disk_stops_the_run_with_one_line_and_the_same_command_resumes(
        tmp_path, trained, digits_data_dir):
    disk = tmp_path / "disk"
    if not _mount_tiny_disk(disk, "1m"):
        pytest.skip("cannot mount a tmpfs here (not root, or not allowed in this container)")
    try:
        command = [*TRAIN, "--out", str(disk)]
        full = resdepth(*command, data_dir=digits_data_dir)
        run_dir = disk / "digits" / RUN
        assert full.returncode == 2, full.stderr
        assert_quiet(full)
        [line] = [line for line in full.stderr.splitlines() if line.startswith("error:")]
        assert line == (f"error: cannot write to {run_dir}: No space left on device; free space on "
                        f"{run_dir} (or make it writable) or choose another --out, then run the "
                        f"same command to resume")
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["50"]  # no partial
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        resumed = resdepth(*command, data_dir=digits_data_dir)
        assert resumed.returncode == 0, resumed.stderr
        assert_quiet(resumed)
        assert "from iteration 50 (resumed)" in resumed.stdout
        assert rows_without_timing(run_dir) == rows_without_timing(trained / "digits" / RUN)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_failed_saves_abandoned_futures_are_not_reported_when_collected(caplog):
    """CI saw this once after the one line of a full disk: a future Orbax abandoned, collected
    at exit, logged "Future exception was never retrieved" with TensorStore's error. Importing
    the checkpoints module drops such reports for the whole process, and only Orbax's."""
    import resdepth.rundir.checkpoints  # noqa: F401  (installs the filter on asyncio's logger)

    loop = asyncio.new_event_loop()

    def abandon(message: str) -> None:
        future = loop.create_future()
        future.set_exception(ValueError(message))
        del future
        gc.collect()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        abandon('RESOURCE_EXHAUSTED: Error writing "opt_state.0" in OCDBT database at local file '
                '"/out/digits/resnet-8-A-seed0/checkpoints/100.orbax-checkpoint-tmp/state": '
                "No space left on device [os_error_code='28']")
        abandon("a failure of someone else's")
    loop.close()
    reports = [record.getMessage() for record in caplog.records]
    assert len(reports) == 1, reports
    assert "Future exception was never retrieved" in reports[0]
    assert "someone else's" in reports[0]


# A TensorStore write still pending when its event loop closes, as Orbax leaves them after a failed
# save: when the write finishes, its callback meets the closed loop, and TensorStore hands
# "RuntimeError: Event loop is closed" to sys.unraisablehook from its own thread.
_A_WRITE_FINISHING_AFTER_ITS_LOOP = """
import asyncio, sys, tempfile, time
import numpy as np, tensorstore as ts
if sys.argv[1] == "with-resdepth":
    import resdepth.rundir.checkpoints
store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": tempfile.mkdtemp()}},
                create=True, dtype=ts.float32, shape=[2048, 2048]).result()
pending = []
async def write():
    pending.append(store.write(np.random.rand(2048, 2048).astype(np.float32)))
    await pending[0]
loop = asyncio.new_event_loop()
loop.create_task(write())
loop.run_until_complete(asyncio.sleep(0))  # the write has started and awaits on this loop
loop.close()
pending[0].result()
time.sleep(1)  # the write's callbacks run on TensorStore's thread as it finishes
"""


def test_a_write_finishing_after_orbax_closed_its_loop_is_not_reported():
    """CI saw this once after the one line of a full disk: a write of the failed save finished
    after Orbax had closed the event loop awaiting it, and its "Event loop is closed" traceback
    reached stderr. Importing the checkpoints module drops such reports for the whole process;
    without it the same script prints one (the test's control)."""
    def run(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", _A_WRITE_FINISHING_AFTER_ITS_LOOP, mode],
                              capture_output=True, text=True, check=True, cwd=ROOT).stderr

    assert "RuntimeError: Event loop is closed" in run("plain")
    quiet = run("with-resdepth")
    assert "Event loop is closed" not in quiet and "Traceback" not in quiet, quiet


def test_only_orbaxs_late_reports_are_dropped():
    """A closed loop's error from TensorStore's completion callback and an abandoned coroutine of
    Orbax's are dropped; any other unraisable report, a closed loop's included when it did not
    come from such a callback, still reaches the hook that was there before."""
    from resdepth.rundir.checkpoints import _without_orbax_late_reports

    reported = []
    hook = _without_orbax_late_reports(reported.append)

    class Unraisable:
        def __init__(self, error: BaseException, obj: object = None):
            self.exc_type, self.exc_value, self.exc_traceback = type(error), error, error.__traceback__
            self.err_msg, self.object = None, obj

    def raised(call) -> BaseException:
        try:
            call()
        except BaseException as error:  # noqa: BLE001  (the error is the result)
            return error
        raise AssertionError("did not raise")

    def coroutine_in(filename: str):
        namespace: dict = {}
        exec(compile("async def work():\n    pass\n", filename, "exec"), namespace)
        return namespace["work"]()

    loop = asyncio.new_event_loop()
    loop.close()
    in_python = raised(lambda: loop.call_soon_threadsafe(print))
    # As TensorStore's thread calls it: the traceback starts in call_soon_threadsafe.
    from_callback = raised(lambda: loop.call_soon_threadsafe(print))
    frames = from_callback.__traceback__
    while frames.tb_frame.f_code.co_name != "call_soon_threadsafe":
        frames = frames.tb_next
    from_callback = from_callback.with_traceback(frames)
    orbaxs, someone_elses = (coroutine_in(f"/site-packages/{name}/work.py")
                             for name in ("orbax/checkpoint", "elsewhere"))
    failure = raised(lambda: 1 / 0)

    hook(Unraisable(from_callback))
    hook(Unraisable(failure, obj=orbaxs))
    assert reported == []
    others = [Unraisable(in_python), Unraisable(failure, obj=someone_elses), Unraisable(failure)]
    for other in others:
        hook(other)
    assert reported == others
    orbaxs.close()
    someone_elses.close()


# ------------------------------------------------------------------------------- damaged checkpoints
# The two files whose damage made Orbax and TensorStore print hundreds of lines (the others fail
# the same way, through the same reader: each case costs a training run in a subprocess).
@pytest.mark.parametrize("damaged_file", ["state/manifest.ocdbt", "state/array_metadatas/process_0"])
def test_a_damaged_newest_checkpoint_is_one_line_and_no_library_traceback(
        tmp_path, trained, digits_data_dir, damaged_file):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    run_dir = out / "digits" / RUN
    (run_dir / "summary.json").unlink()  # as if killed after its last checkpoint
    (run_dir / "checkpoints" / "100" / damaged_file).write_bytes(b"garbage")
    result = resdepth(*TRAIN, "--out", str(out), data_dir=digits_data_dir)
    assert result.returncode == 0, result.stderr
    assert_quiet(result)
    named = [line for line in (result.stdout + result.stderr).splitlines() if "checkpoint 100" in line]
    assert len(named) == 1 and "unreadable" in named[0] and "using the previous one" in named[0]
    assert "from iteration 50 (resumed)" in result.stdout
    assert rows_without_timing(run_dir) == rows_without_timing(trained / "digits" / RUN)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
