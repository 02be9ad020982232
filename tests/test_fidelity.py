"""The paper's experiment exactly: padding, the warm-up, grouped BatchNorm, and run identity."""

from __future__ import annotations

import json
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from typer.testing import CliRunner

from resdepth.training import step as steps
from resdepth.cli.app import app
from resdepth.config import load_config, parse_override
from resdepth.models.network import ConvBN, GroupedBatchNorm, ModelSpec, build_model, caffe_max_pool
from resdepth.rundir.directory import RunDirectory
from resdepth.training.session import train_run

from conftest import stop_at, tiny_config


# ---------------------------------------------------------------------------------- padding
def _receptive_pixels(fn, shape, out_pixel) -> set[tuple[int, int]]:
    """Input pixels (row, col) of a single-image `shape` that output `out_pixel` depends on."""
    def picked(x):
        y = fn(x)
        return jnp.sum(y[0, out_pixel[0], out_pixel[1], :])

    grad = jax.grad(picked)(jnp.ones(shape, jnp.float32))
    rows, cols = np.nonzero(np.any(np.asarray(grad[0]) != 0, axis=-1))
    return set(zip(rows.tolist(), cols.tolist()))


@pytest.mark.parametrize("size", [32, 16, 8])
def test_strided_branch_and_option_a_shortcut_see_the_same_pixel(size):
    """CIFAR stages 2-3: the first 3x3/2 conv of the branch is centred on the pixel that the
    option-A shortcut x[::2, ::2] reads. With "SAME" padding it was one pixel off."""
    model = build_model(ModelSpec("cifar", 20), seed=0)
    block = model.stages[1].first
    conv = block.layers[0].conv
    for out_pixel in [(0, 0), (1, size // 4), (size // 2 - 1, size // 2 - 1)]:
        seen = _receptive_pixels(lambda x: conv(x), (1, size, size, 16), out_pixel)
        centre = (2 * out_pixel[0], 2 * out_pixel[1])
        window = {(centre[0] + di, centre[1] + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)
                  if 0 <= centre[0] + di < size and 0 <= centre[1] + dj < size}
        assert seen == window, (out_pixel, sorted(seen))


def test_one_hot_image_reaches_branch_and_shortcut_at_the_same_output_pixel():
    """An image that is zero except one pixel at (2i, 2j): the shortcut carries it to output
    (i, j), and the strided conv's tap at its centre does too (and no other output pixel's
    centre tap). Fails on "SAME", which centres output (i, j) on (2i+1, 2j+1)."""
    from resdepth.models.network import zero_pad_shortcut

    model = build_model(ModelSpec("cifar", 20), seed=0)
    conv = model.stages[1].first.layers[0].conv
    kernel = np.zeros(conv.kernel.shape, np.float32)
    kernel[1, 1] = np.eye(16, 32)  # only the centre tap: output (i, j) = input at its centre
    conv.kernel[...] = jnp.asarray(kernel)
    image = np.zeros((1, 32, 32, 16), np.float32)
    image[0, 10, 14, 3] = 1.0
    branch = np.asarray(conv(jnp.asarray(image)))
    shortcut = np.asarray(zero_pad_shortcut(jnp.asarray(image), 2, 32))
    assert np.argwhere(branch[0, ..., 3]).tolist() == [[5, 7]]
    assert np.argwhere(shortcut[0, ..., 3]).tolist() == [[5, 7]]


def test_projection_shortcut_and_imagenet_stem_are_aligned():
    """Option B's 1x1/2 projection reads (2i, 2j) as the 3x3/2 conv's centre; the 7x7/2 stem
    pads 3 on each side; every conv is padded k//2 on both sides."""
    model = build_model(ModelSpec("imagenet", 18, shortcut="B", num_classes=10), seed=0)
    block = model.stages[1].first
    centre = _receptive_pixels(lambda x: block.projection.conv(x), (1, 16, 16, 64), (2, 3))
    assert centre == {(4, 6)}
    stem = _receptive_pixels(lambda x: model.stem.conv(x), (1, 32, 32, 3), (0, 0))
    assert stem == {(r, c) for r in range(4) for c in range(4)}  # rows/cols -3..3, clipped at 0
    for module in nnx.iter_graph(model):
        if isinstance(module[1], ConvBN):
            k = module[1].conv.kernel_size[0]
            assert module[1].conv.padding == ((k // 2, k // 2), (k // 2, k // 2))


def test_pool1_is_caffe_no_padding_rounding_up():
    x = jnp.arange(1 * 112 * 112, dtype=jnp.float32).reshape(1, 112, 112, 1)
    pooled = caffe_max_pool(x)
    assert pooled.shape == (1, 56, 56, 1)
    # Window (i, j) covers input rows/cols 2i..2i+2 (no padding in front).
    assert float(pooled[0, 0, 0, 0]) == float(x[0, 2, 2, 0])
    assert caffe_max_pool(jnp.zeros((1, 113, 113, 1))).shape == (1, 56, 56, 1)


# ---------------------------------------------------------------------------------- warm-up
def _rate(config, step, warm=True):
    return float(steps.learning_rate(config, jnp.int32(step), jnp.bool_(warm), jnp.float32(1)))


def test_warmup_that_never_switches_is_capped_and_never_masks_the_decays():
    config = load_config("cifar10", [parse_override("model.depth=110")])
    cap = config.optim.warmup_max_steps
    assert 400 < cap < 32_000  # the paper's "about 400 iterations", with room to spare
    assert _rate(config, 0) == pytest.approx(0.01)
    assert _rate(config, cap - 1) == pytest.approx(0.01)
    assert _rate(config, cap) == pytest.approx(0.1)
    assert _rate(config, 32_000) == pytest.approx(0.01)  # the decay, not the warm-up rate
    assert _rate(config, 48_000) == pytest.approx(0.001)


def test_a_decay_boundary_inside_the_warmup_still_applies():
    config = load_config("cifar10", [parse_override(t) for t in (
        "model.depth=110", "optim.warmup_max_steps=5000", "optim.lr_boundaries_steps=[3000, 4000]",
        "optim.total_steps=6000", "optim.warmup_learning_rate=0.02")])
    assert steps.warmup_end_step(config) == 3000
    assert steps.warmup_cap_reason(config) == "decay_boundary"
    assert _rate(config, 2999) == pytest.approx(0.02)
    assert _rate(config, 3000) == pytest.approx(0.01)
    assert _rate(config, 4000) == pytest.approx(0.001)


def _train_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["type"] == "train"]


def test_run_whose_error_never_falls_below_threshold_switches_at_the_cap(tmp_path, digits_data_dir):
    # Threshold 0.1% is never reached in 30 iterations: the cap (10) ends the warm-up, and
    # the decay at 20 applies; the rates are logged per interval of 5.
    config = tiny_config(digits_data_dir, "optim.warmup_min_depth=8", "optim.warmup_max_steps=10",
                         "optim.warmup_until_train_error=0.001", "optim.lr_boundaries_steps=[20]",
                         "optim.warmup_learning_rate=0.02", steps=30, name="cap")
    run_dir = RunDirectory.of(tmp_path, config).path
    summary = train_run(config, run_dir, stop=threading.Event())
    assert summary["warmup_switch_step"] == 10
    assert summary["warmup_switch_reason"] == "warmup_max_steps"
    rates = {row["step"]: row["learning_rate"] for row in _train_rows(run_dir)}
    assert rates == pytest.approx({5: 0.02, 10: 0.02, 15: 0.1, 20: 0.1, 25: 0.01, 30: 0.01})


def test_run_records_a_switch_on_measured_error(tmp_path, digits_data_dir):
    config = tiny_config(digits_data_dir, "optim.warmup_min_depth=8", "optim.warmup_until_train_error=1.0",
                         steps=10, name="switch")
    summary = train_run(config, RunDirectory.of(tmp_path, config).path, stop=threading.Event())
    assert summary["warmup_switch_step"] == 5
    assert summary["warmup_switch_reason"] == "train_error_below_threshold"
    plain = tiny_config(digits_data_dir, steps=5, name="switch", residual=False)
    assert train_run(plain, RunDirectory.of(tmp_path, plain).path,
                              stop=threading.Event())["warmup_switch_reason"] is None


# --------------------------------------------------------------------------- grouped BatchNorm
def test_grouped_batchnorm_normalizes_each_group_on_its_own():
    x = jax.random.normal(jax.random.key(0), (128, 4, 4, 3)) * jnp.arange(1, 129.0)[:, None, None, None]
    whole = nnx.BatchNorm(3, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    grouped0 = GroupedBatchNorm(3, 0, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(grouped0(x, use_running_average=False)),
                                  np.asarray(whole(x, use_running_average=False)))
    grouped = GroupedBatchNorm(3, 64, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    y = np.asarray(grouped(x, use_running_average=False))
    halves = [np.asarray(nnx.BatchNorm(3, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))(
        part, use_running_average=False)) for part in (x[:64], x[64:])]
    np.testing.assert_allclose(y, np.concatenate(halves), atol=2e-5)
    assert not np.allclose(y, np.asarray(whole(x, use_running_average=False)), atol=1e-2)
    # Running statistics: the mean over groups of each group's statistics.
    group_means = np.stack([np.asarray(x[:64]).mean((0, 1, 2)), np.asarray(x[64:]).mean((0, 1, 2))])
    np.testing.assert_allclose(np.asarray(grouped.mean[...]), 0.1 * group_means.mean(0), rtol=1e-4, atol=1e-5)


def test_cifar_default_is_the_papers_per_gpu_batch():
    assert load_config("cifar10").model.bn_group_size == 64
    assert load_config("table6").model.bn_group_size == 64
    assert load_config("imagenet").model.bn_group_size == 32


# ------------------------------------------------------------------------------ run identity
runner = CliRunner()


def _cli(tmp_path, data_dir, *args):
    return runner.invoke(app, ["train", "--dataset", "digits", "--depth", "8", "--out", str(tmp_path),
                               "--set", f"data.data_dir='{data_dir}'", "--set", "optim.batch_size=32",
                               "--set", "run.log_every_steps=5", "--set", "run.eval_every_steps=10",
                               "--set", "optim.lr_boundaries_steps=[]", *args])


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_finished_run_is_not_reported_for_a_longer_schedule(tmp_path, digits_data_dir):
    assert _cli(tmp_path, digits_data_dir, "--steps", "10").exit_code == 0
    line = _one_error_line(_cli(tmp_path, digits_data_dir, "--steps", "20"))
    assert "optim.total_steps 10 -> 20" in line and "--tag" in line
    # Settings that do not change results may differ; the finished run is reported as it is.
    again = _cli(tmp_path, digits_data_dir, "--steps", "10", "--set", "run.log_every_steps=2")
    assert again.exit_code == 0, again.output
    tagged = _cli(tmp_path, digits_data_dir, "--steps", "20", "--tag", "long")
    assert tagged.exit_code == 0, tagged.output
    summary = json.loads((tmp_path / "digits" / "resnet-8-A-seed0-long" / "summary.json").read_text())
    assert summary["steps_done"] == 20 and summary["status"] == "completed"
    saved = json.loads((tmp_path / "digits" / "resnet-8-A-seed0-long" / "config.json").read_text())
    assert len(saved["fingerprint"]) == 16 and saved["config"]["run"]["tag"] == "long"


def test_an_interrupted_run_cannot_resume_with_other_settings(tmp_path, digits_data_dir):
    config = tiny_config(digits_data_dir, name="digits", steps=40, depth=8)
    flag, sink = stop_at(10)
    summary = train_run(config, RunDirectory.of(tmp_path, config).path, sink, flag)
    assert summary["status"] == "interrupted"
    line = _one_error_line(_cli(tmp_path, digits_data_dir, "--steps", "5",
                                "--set", "optim.learning_rate=0.5", "--set", "run.eval_every_steps=10"))
    assert "optim.learning_rate" in line and "optim.total_steps" in line


def test_a_validation_run_is_never_mixed_with_the_test_run(tmp_path, digits_data_dir):
    assert _cli(tmp_path, digits_data_dir, "--steps", "5").exit_code == 0
    line = _one_error_line(_cli(tmp_path, digits_data_dir, "--steps", "5", "--val-split"))
    assert "data.val_split" in line
    result = _cli(tmp_path, digits_data_dir, "--steps", "5", "--val-split", "--tag", "val")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "digits" / "resnet-8-A-seed0-val" / "summary.json").read_text())
    assert summary["eval_split"] == "validation"
