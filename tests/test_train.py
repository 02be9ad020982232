"""The training engine: recipe, data, determinism, resume, parallelism, divergence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resdepth.training import step as steps
from resdepth.training.mesh import make_mesh
from resdepth.data.augment import random_crop_flip
from resdepth.config import load_config, parse_override
from resdepth.data.datasets import BatchOrder, load_dataset
from resdepth.rundir.identity import run_name
from resdepth.rundir.directory import RunDirectory
from resdepth.training.loop import warmup_should_end
from resdepth.training.session import train_run

from conftest import stop_at, tiny_config, xla_flags

WALL_FIELDS = ("images_per_s", "wall_s")


def metric_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_wall(rows):
    return [{k: v for k, v in row.items() if k not in WALL_FIELDS} for row in rows]


def final_params(run_dir, config):
    from resdepth.rundir.checkpoints import abstract_like
    from resdepth.models.network import build_model
    from resdepth.training.step import model_spec

    _, state = steps.init_state(config, build_model(model_spec(config, 10), 0, 1), make_mesh())
    restored = RunDirectory(run_dir).checkpointer(2).restore_latest(abstract_like(state))
    return jax.tree.map(np.asarray, jax.device_get((restored.state.params, restored.state.batch_stats,
                                                    restored.state.opt_state)))


def test_digits_resnet8_learns_to_under_10_percent_test_error(tmp_path, digits_data_dir):
    config = load_config("digits", [parse_override(t) for t in (
        f"data.data_dir='{digits_data_dir}'", "model.depth=8", "optim.total_steps=300",
        "optim.lr_boundaries_steps=[150, 225]", "run.eval_every_steps=100")])
    summary = train_run(config, RunDirectory.of(tmp_path, config).path, stop=threading.Event())
    assert summary["status"] == "completed" and summary["steps_done"] == 300
    assert summary["final_test_error"] < 0.10
    rows = metric_rows(tmp_path / "digits" / "resnet-8-A-seed0")
    assert summary["final_test_error"] == [r for r in rows if r["type"] == "eval"][-1]["test_error"]


def test_cifar10_end_to_end_through_tfds_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    config = load_config("cifar10", [parse_override(t) for t in (
        f"data.data_dir='{tmp_path / 'tfds'}'", "model.depth=8", "optim.total_steps=4",
        "optim.lr_boundaries_steps=[]", "optim.batch_size=16", "run.log_every_steps=2", "run.eval_every_steps=4",
        "run.eval_batch_size=32")])
    with tfds.testing.mock_data(num_examples=64):
        data = load_dataset(config.data)
        assert data.train_images.shape == (64, 32, 32, 3) and data.train_images.dtype == np.uint8
        assert data.mean_image.shape == (32, 32, 3)
        summary = train_run(config, tmp_path / "run", stop=threading.Event())
    assert summary["status"] == "completed" and 0 <= summary["final_test_error"] <= 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["data"]["dataset"] == "cifar10" and saved["code_version"]


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, digits_data_dir):
    # Depth 14: each stage scans a stacked block, whose state must come back exactly too.
    config = tiny_config(digits_data_dir, "run.eval_every_steps=6", depth=14, steps=24, name="whole")
    whole = RunDirectory.of(tmp_path, config).path
    train_run(config, whole, stop=threading.Event())

    config = tiny_config(digits_data_dir, "run.eval_every_steps=6", depth=14, steps=24, name="split")
    split = RunDirectory.of(tmp_path, config).path
    # Stop after iteration 12, in the middle of a logging interval (rows every 5 iterations), so
    # the interval's running sums must come back from the checkpoint too.
    flag, sink = stop_at(12, kind="eval")
    first = train_run(config, split, on_event=sink, stop=flag)
    assert first["status"] == "interrupted" and first["steps_done"] == 12
    final = train_run(config, split, stop=threading.Event())
    assert final["status"] == "completed"

    assert without_wall(metric_rows(split)) == without_wall(metric_rows(whole))
    # The layer signals too: iteration 1's row, then one per logging row, none twice.
    signals = (split / "signals.jsonl").read_text()
    assert signals == (whole / "signals.jsonl").read_text() and signals.count('"step": 20,') == 1
    steps_logged = [(r["type"], r["step"]) for r in metric_rows(split)]
    assert len(steps_logged) == len(set(steps_logged))
    whole_state, split_state = final_params(whole, config), final_params(split, config)
    assert len(jax.tree.leaves(whole_state)) == len(jax.tree.leaves(split_state)) > 0
    for a, b in zip(jax.tree.leaves(whole_state), jax.tree.leaves(split_state)):
        assert np.array_equal(a, b)
    # A finished run is recognised, not retrained.
    assert train_run(config, split, stop=threading.Event())["wall_s"] == final["wall_s"]


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, digits_data_dir):
    config = tiny_config(digits_data_dir, steps=20, name="corrupt")
    run_dir = RunDirectory.of(tmp_path, config).path
    flag, sink = stop_at(20)
    train_run(config, run_dir, stop=threading.Event())
    (run_dir / "summary.json").unlink()  # pretend the run died after its last checkpoint ...
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"type": "train", "step": 2')  # ... in the middle of writing a row
    for path in (run_dir / "checkpoints" / "20").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    notes = []
    summary = train_run(config, run_dir, on_event=lambda e: notes.append(e) if e.kind == "note" else None,
                                 stop=threading.Event())
    assert any("checkpoint 20 unreadable" in e.data["message"] for e in notes)
    assert summary["status"] == "completed" and summary["steps_done"] == 20
    rows = metric_rows(run_dir)
    assert [r["step"] for r in rows if r["type"] == "train"] == [5, 10, 15, 20]


def test_learning_rate_schedule_at_the_papers_boundaries():
    config = load_config("cifar10")
    rate = lambda step: float(steps.learning_rate(config, jnp.int32(step), jnp.bool_(False), jnp.float32(1)))  # noqa: E731
    expected = {0: 0.1, 31_999: 0.1, 32_000: 0.01, 47_999: 0.01, 48_000: 0.001, 63_999: 0.001}
    for step, value in expected.items():
        assert rate(step) == pytest.approx(value, rel=1e-6)
    warm = float(steps.learning_rate(config, jnp.int32(5), jnp.bool_(True), jnp.float32(1)))
    assert warm == pytest.approx(0.01)
    assert config.optim.total_steps == 64_000 and config.optim.batch_size == 128


def test_warmup_is_only_for_deep_nets_and_switches_on_measured_error(tmp_path, digits_data_dir):
    assert warmup_should_end(True, 0.79, 0.8) and not warmup_should_end(True, 0.8, 0.8)
    assert not warmup_should_end(False, 0.1, 0.8)
    config = load_config("cifar10", [parse_override("model.depth=110")])
    assert steps.uses_warmup(config)
    assert not steps.uses_warmup(load_config("cifar10", [parse_override("model.depth=56")]))

    # A digits net forced into the warm-up (min depth 8); logging every 2 iterations.
    config = tiny_config(digits_data_dir, "optim.warmup_min_depth=8", "run.log_every_steps=2",
                         steps=40, name="warmup")
    run_dir = RunDirectory.of(tmp_path, config).path
    summary = train_run(config, run_dir, stop=threading.Event())
    rows = [r for r in metric_rows(run_dir) if r["type"] == "train"]
    first_below = next(r["step"] for r in rows if r["train_error"] < 0.8)
    assert summary["warmup_switch_step"] == first_below
    for row in rows:
        expected = 0.01 if row["step"] <= first_below else 0.1
        assert row["learning_rate"] == pytest.approx(expected), row


def test_augmentation_crops_inside_padding_flips_half_and_leaves_test_images_alone():
    images = jax.random.uniform(jax.random.key(0), (4000, 8, 8, 1))
    out, offsets, flipped = random_crop_flip(jax.random.key(1), images, pad_pixels=4, flip=True)
    assert out.shape == images.shape
    assert int(offsets.min()) >= 0 and int(offsets.max()) <= 8
    assert len(np.unique(np.asarray(offsets))) > 5
    assert 0.45 < float(flipped.mean()) < 0.55
    # Reconstruct one view by hand.
    i = 7
    padded = np.pad(np.asarray(images[i]), ((4, 4), (4, 4), (0, 0)))
    dy, dx = np.asarray(offsets[i])
    view = padded[dy:dy + 8, dx:dx + 8]
    if bool(flipped[i]):
        view = view[:, ::-1]
    assert np.array_equal(np.asarray(out[i]), view)
    _, _, never = random_crop_flip(jax.random.key(1), images, pad_pixels=4, flip=False)
    assert not bool(never.any())


def test_eval_uses_the_single_original_view(tmp_path, digits_data_dir):
    config = tiny_config(digits_data_dir, steps=2)
    data = load_dataset(config.data)
    from resdepth.models.network import build_model
    from resdepth.training.sources import DeviceResidentSource
    from resdepth.training.step import model_spec

    mesh = make_mesh()
    graphdef, state = steps.init_state(config, build_model(model_spec(config, 10), 0, 1), mesh)
    source = DeviceResidentSource(config, mesh, data)
    source.compile(graphdef, 0)
    error = source.evaluate(state, graphdef)["test_error"]
    # The same numbers by hand: the model on the mean-subtracted, unaugmented test images.
    from flax import nnx
    model = nnx.merge(graphdef, state.params, state.batch_stats)
    logits = model(jnp.asarray(data.test_images, jnp.float32) - data.mean_image, train=False)
    assert error == pytest.approx(float(jnp.mean(jnp.argmax(logits, -1) != data.test_labels)))


def test_data_order_follows_seed_and_step_alone():
    order = BatchOrder(seed=3, dataset_size=100, batch_size=32)
    again = BatchOrder(seed=3, dataset_size=100, batch_size=32)
    assert np.array_equal(order.indices(7), again.indices(7))
    epoch0 = np.concatenate([order.indices(s) for s in range(3)] + [order.indices(3)[:4]])
    assert sorted(epoch0) == list(range(100))  # the first 100 samples are one permutation
    assert not np.array_equal(order.indices(0), BatchOrder(4, 100, 32).indices(0))


def test_forced_nan_is_reported_as_diverged(tmp_path, digits_data_dir):
    config = tiny_config(digits_data_dir, "optim.learning_rate=1e30", steps=20, name="nan")
    run_dir = RunDirectory.of(tmp_path, config).path
    summary = train_run(config, run_dir, stop=threading.Event())
    assert summary["status"] == "diverged" and summary["steps_done"] < 20
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["status"] == "diverged" and "loss became" in saved["message"]
    assert metric_rows(run_dir)  # rows written before the divergence are kept


FOUR_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from resdepth.training import step as steps
    from resdepth.config import load_config, parse_override
    from resdepth.models.network import build_model
    from resdepth.training.step import model_spec
    from resdepth.training.mesh import batch_sharded, make_mesh, replicated, to_global as _to_global
    assert jax.device_count() == 4
    # Batch 128 in BatchNorm groups of 64 (the paper's two GPUs): on 4 devices each group
    # spans two devices' shares, and must be normalized exactly as on one device.
    config = load_config("digits", [parse_override("model.depth=8"), parse_override("optim.batch_size=128"),
                                    parse_override("model.bn_group_size=64")])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 256).astype(np.int32)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = make_mesh(devices)
        graphdef, state = steps.init_state(config, build_model(model_spec(config, 10), 0, 1), mesh)
        rep = replicated(mesh)
        data = steps.DeviceDataset(_to_global(images, rep), _to_global(labels, rep),
                                   _to_global(images.mean(0).astype(np.float32), rep))
        train_step = steps.make_train_step(config, graphdef, mesh)
        for step in range(4):
            indices = _to_global(np.arange(step * 128, step * 128 + 128) % 256, batch_sharded(mesh))
            state = train_step(state, data, indices, np.bool_(step == 0))[0]
        assert len(state.params["head"]["kernel"].sharding.device_set) == len(devices)
        leaves = [np.asarray(x) for x in jax.tree.leaves(state.params)]
        results.append({"loss": float(state.loss_sum) / float(state.examples_seen),
                        "params": [x.ravel().tolist() for x in leaves]})
    one, four = results
    diff = max(float(np.max(np.abs(np.array(a) - np.array(b)))) for a, b in zip(one["params"], four["params"]))
    print(json.dumps({"loss_one": one["loss"], "loss_four": four["loss"], "max_param_diff": diff}))
""")


def test_one_device_and_four_devices_agree_with_grouped_batchnorm():
    env = {**os.environ, "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4"),
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", FOUR_DEVICE_SCRIPT], env=env, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert numbers["loss_one"] == pytest.approx(numbers["loss_four"], abs=1e-5)
    assert numbers["max_param_diff"] < 1e-5


def test_run_name_says_architecture_depth_shortcut_and_seed():
    config = load_config("cifar10", [parse_override("model.depth=56"), parse_override("run.seed=2")])
    assert run_name(config) == "resnet-56-A-seed2"
    config.model.residual = False
    assert run_name(config) == "plain-56-seed2"
