"""TensorBoard event files: the metrics.jsonl and signals.jsonl rows, read back with
TensorFlow's own record reader.

The writer is tensorboardX; the reader here is TensorFlow's (TFRecordDataset, which checks each
record's checksums, and the Event protocol buffer), so the files are checked by the reference
implementation of the format, not by the code that wrote them.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from resdepth.rundir.metrics import read_metrics
from resdepth.rundir.signals import LAYER_LISTS, read_signals
from resdepth.training.tensorboard_log import (
    TENSORBOARD_DIR, TensorBoardLog, scalars, signal_scalars, with_tensorboard)
from resdepth.training.loop import Event

runner = CliRunner()


def read_events(folder: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} as TensorBoard shows it: the latest value per step, and a file's
    SessionLog.START at step s hiding the points at and after s of the files before it."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    sessions = []  # each file's events, in the order the files were started
    for path in Path(folder).glob("events.out.tfevents.*"):
        events = [event_pb2.Event.FromString(record.numpy())
                  for record in tf.data.TFRecordDataset(str(path))]
        sessions.append((events[0].wall_time, events))
    assert sessions, f"no event files in {folder}"
    values: dict[str, dict[int, float]] = {}
    for _, events in sorted(sessions, key=lambda session: session[0]):
        for event in events:
            if event.session_log.status == event_pb2.SessionLog.START:
                for points in values.values():
                    for step in [s for s in points if s >= event.step]:
                        del points[step]
            for value in event.summary.value:
                values.setdefault(value.tag, {})[event.step] = value.simple_value
    return values


def expected_points(rows: list[dict]) -> dict[str, dict[int, float]]:
    expected: dict[str, dict[int, float]] = {}
    for row in rows:
        for tag, value in scalars(row).items():
            expected.setdefault(tag, {})[row["step"]] = value
    return expected


def assert_same_points(read: dict, expected: dict) -> None:
    assert set(read) == set(expected)
    for tag, points in expected.items():
        assert sorted(read[tag]) == sorted(points), tag
        for step, value in points.items():  # event files hold float32
            assert math.isclose(read[tag][step], value, rel_tol=1e-6, abs_tol=1e-9), (tag, step)


def test_scalars_are_the_numeric_fields_of_a_row_tagged_by_row_type():
    row = {"type": "eval", "step": 20, "epoch": 1.5, "test_loss": 0.25, "test_error": 0.125,
           "note": "text", "flag": True}
    assert scalars(row) == {"eval/epoch": 1.5, "eval/test_loss": 0.25, "eval/test_error": 0.125}


def test_a_run_writes_its_metrics_rows_as_events(digits_data_dir, tmp_path):
    """A real run with run.tensorboard: each tag's points are the rows of metrics.jsonl."""
    from resdepth.training.session import train_run

    config = tiny_config(digits_data_dir, "run.tensorboard=true", steps=20)
    run_dir = tmp_path / "run"
    summary = train_run(config, run_dir, with_tensorboard(lambda e: None, run_dir, True),
                                 threading.Event())
    assert summary["status"] == "completed"
    rows = list(read_metrics(run_dir / "metrics.jsonl"))
    expected = expected_points(rows)
    assert {"train/train_error", "train/learning_rate", "eval/test_error"} <= set(expected)
    # The "signals" events: signals.jsonl's rows, a scalar per layer and quantity.
    signals = read_signals(run_dir / "signals.jsonl")
    for row, step in enumerate(signals.steps):
        for tag, value in signal_scalars({
                "weighted": signals.weighted, "responses": signals.responses,
                **{quantity: getattr(signals, quantity)[row] for quantity in LAYER_LISTS}}).items():
            expected.setdefault(tag, {})[step] = value
    assert "signals/response_grad_rms/stem" in expected
    assert_same_points(read_events(run_dir / TENSORBOARD_DIR), expected)


def test_a_resumed_run_replaces_the_points_after_its_checkpoint(tmp_path):
    """Killed at iteration 20 with a checkpoint at 10: metrics.jsonl drops rows 15 and 20 on
    resuming. While the resumed run is at 15, TensorBoard shows its row 15 and no row 20: the
    dead session's points after the checkpoint are purged, not left standing."""
    first = TensorBoardLog(tmp_path)
    first(Event("start", 0, 30, {"params": 1, "resumed": False}))
    for step, error in ((5, 0.9), (10, 0.8), (15, 0.7), (20, 0.65)):
        first(Event("train", step, 30, {"train_error": error}))
    first.close()  # then killed: no "end" event
    second = TensorBoardLog(tmp_path)
    second(Event("start", 10, 30, {"params": 1, "resumed": True}))
    second(Event("train", 15, 30, {"train_error": 0.6}))
    second.close()
    assert len(list((tmp_path / TENSORBOARD_DIR).iterdir())) == 2  # one file per session
    assert read_events(tmp_path / TENSORBOARD_DIR) == {
        "train/train_error": pytest.approx({5: 0.9, 10: 0.8, 15: 0.6})}


def fake_training(rows: list[dict]):
    """A stand-in for train_and_evaluate that reports `rows` as a run would, and records them."""

    def fake(config, run_dir, on_event=lambda e: None, stop=None, config_notes=None):
        total = config.optim.total_steps
        run_dir.mkdir(parents=True, exist_ok=True)
        on_event(Event("start", 0, total, {"params": 1, "resumed": False}))
        for row in rows:
            (run_dir / "metrics.jsonl").open("a").write(json.dumps(row) + "\n")
            on_event(Event(row["type"], row["step"], total, dict(row)))
        summary = {"name": run_dir.name, "status": "completed", "final_test_error": 0.25,
                   "final_train_error": 0.5, "wall_s": 1.0, "params": 1}
        on_event(Event("end", total, total, summary))
        return summary

    return fake


ROWS = [{"type": "train", "step": 5, "epoch": 0.1, "learning_rate": 0.1, "train_loss": 2.0,
         "train_error": 0.75, "images_per_s": 100.0, "wall_s": 1.0},
        {"type": "eval", "step": 10, "epoch": 0.2, "test_loss": 1.5, "test_error": 0.25},
        {"type": "train", "step": 10, "epoch": 0.2, "learning_rate": 0.1, "train_loss": 1.0,
         "train_error": 0.5, "images_per_s": 120.0, "wall_s": 2.0}]


SHORT = ["--steps", "10", "--set", "optim.lr_boundaries_steps=[]"]


@pytest.mark.parametrize("command", [
    ["train", "--dataset", "digits", "--depth", "8", "--tensorboard"],
    ["sweep", "--dataset", "digits", "--depths", "8", "--arch", "plain", "--tensorboard"],
    ["train", "--dataset", "digits", "--depth", "8", "--set", "run.tensorboard=true"],
])
def test_tensorboard_flag_and_setting_write_the_rows(command, tmp_path, monkeypatch):
    from resdepth.training import loop as train

    monkeypatch.setattr(train, "train_and_evaluate", fake_training(ROWS))
    result = runner.invoke(app(), [*command, *SHORT, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [events] = list(tmp_path.glob(f"*/*/{TENSORBOARD_DIR}"))
    assert_same_points(read_events(events), expected_points(ROWS))


def test_without_the_flag_no_event_files(tmp_path, monkeypatch):
    from resdepth.training import loop as train

    monkeypatch.setattr(train, "train_and_evaluate", fake_training(ROWS))
    result = runner.invoke(app(), ["train", "--dataset", "digits", "--depth", "8", *SHORT,
                                   "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert list(tmp_path.glob(f"*/*/{TENSORBOARD_DIR}")) == []


def test_only_process_zero_writes(tmp_path, monkeypatch):
    import jax

    monkeypatch.setattr(jax, "process_index", lambda: 1)
    log = TensorBoardLog(tmp_path)
    for row in ROWS:
        log(Event(row["type"], row["step"], 10, row))
    log(Event("end", 10, 10, {}))
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def app():
    from resdepth.cli.app import app

    return app


# ---- signals: one scalar per layer and quantity --------------------------------------------

SIGNALS = {"weighted": ["stem", "stage1.block0.conv1", "head"],
           "responses": ["stem", "stage1.block0.conv1"],
           "weight_grad_rms": [0.5, None, 0.25], "weight_rms": [1.0, 2.0, 3.0],
           "response_grad_rms": [0.125, 0.0625], "response_std": [1.5, float("nan")]}


def test_signal_scalars_are_tagged_by_quantity_and_layer_and_skip_what_is_not_finite():
    assert signal_scalars(SIGNALS) == {
        "signals/weight_grad_rms/stem": 0.5, "signals/weight_grad_rms/head": 0.25,
        "signals/weight_rms/stem": 1.0, "signals/weight_rms/stage1.block0.conv1": 2.0,
        "signals/weight_rms/head": 3.0,
        "signals/response_grad_rms/stem": 0.125,
        "signals/response_grad_rms/stage1.block0.conv1": 0.0625,
        "signals/response_std/stem": 1.5}


def test_signals_events_are_written_beside_the_rows(tmp_path):
    log = TensorBoardLog(tmp_path)
    log(Event("start", 0, 10, {"params": 1, "resumed": False}))
    log(Event("signals", 0, 10, SIGNALS))
    later = {**SIGNALS, "response_grad_rms": [0.5, 0.001]}
    log(Event("train", 10, 10, {"train_error": 0.5}))
    log(Event("signals", 10, 10, later))
    log(Event("end", 10, 10, {}))

    read = read_events(tmp_path / TENSORBOARD_DIR)

    assert read["signals/response_grad_rms/stage1.block0.conv1"] == pytest.approx(
        {0: 0.0625, 10: 0.001})
    assert read["signals/weight_grad_rms/head"] == pytest.approx({0: 0.25, 10: 0.25})
    assert "signals/weight_grad_rms/stage1.block0.conv1" not in read  # None: no point
    assert read["train/train_error"] == pytest.approx({10: 0.5})
    assert len(read) == len(signal_scalars(SIGNALS)) + 1


def test_the_console_shows_nothing_of_a_signals_event(tmp_path):
    import io

    from rich.console import Console

    from resdepth.cli.display import RunDisplay

    out = io.StringIO()
    display = RunDisplay("plain-8-seed0", tmp_path, "digits", out=Console(file=out))
    with display:
        sink = with_tensorboard(display, tmp_path, True)  # as `train --tensorboard` chains them
        sink(Event("signals", 0, 10, SIGNALS))
        sink(Event("note", 0, 10, {"message": "still here"}))
        sink(Event("end", 10, 10, {}))
    assert out.getvalue() == "plain-8-seed0: still here\n"
    assert (tmp_path / TENSORBOARD_DIR).is_dir()
