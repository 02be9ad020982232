"""ImageNet input (§3.4) and the paper's test modes, on tfds.testing.mock_data.

mock_data serves random JPEGs of random small sizes for imagenet2012 without any files. Datasets
are always iterated: `tfds.load(..., batch_size=-1)` under mock_data aborts the process.
"""

from __future__ import annotations

import json

import itertools
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from resdepth.data import imagenet_input, multicrop
from resdepth.config import DataConfig


IMAGENET = DataConfig(dataset="imagenet")


def take(iterator, count):
    return list(itertools.islice(iterator, count))


def by_label(batch):
    return {int(label): image for label, image in zip(batch["labels"], batch["images"])}


def test_train_batches_shapes_labels_and_fresh_augmentation_each_epoch():
    with tfds.testing.mock_data(num_examples=4):
        imagenet_input.require_imagenet("", "")  # mock_data needs no files
        imagenet_input.prepare_imagenet(IMAGENET)  # and preparing is a no-op
        epoch0, epoch1 = take(imagenet_input.train_batches(IMAGENET, 4, seed=0), 2)
        plain0, plain1 = take(imagenet_input.train_batches(
            DataConfig(dataset="imagenet", augment=False), 4, seed=0), 2)
    assert epoch0["images"].shape == (4, 224, 224, 3) and epoch0["images"].dtype == np.float32
    assert epoch0["labels"].dtype == np.int32
    assert np.all((epoch0["labels"] >= 0) & (epoch0["labels"] < 1000))
    # Each epoch holds the same 4 examples (mock labels are distinct), reshuffled.
    views0, views1 = by_label(epoch0), by_label(epoch1)
    assert len(views0) == 4 and views0.keys() == views1.keys()
    for label in views0:  # a new scale, crop, flip and lighting for the same image
        assert not np.allclose(views0[label], views1[label])
    plain_views0, plain_views1 = by_label(plain0), by_label(plain1)
    for label in plain_views0:  # without augmentation: the same centre view every epoch
        np.testing.assert_array_equal(plain_views0[label], plain_views1[label])
    # Mean-subtracted 0-255 pixels: the augmented views stay near that range.
    assert -200 < epoch0["images"].min() and epoch0["images"].max() < 200


def test_resume_gives_the_batch_of_the_uninterrupted_run():
    with tfds.testing.mock_data(num_examples=6):  # 3 steps per epoch at batch 2
        run = take(imagenet_input.train_batches(IMAGENET, 2, seed=3), 5)
        resumed = take(imagenet_input.train_batches(IMAGENET, 2, seed=3, start_step=4), 1)[0]
        other_seed = take(imagenet_input.train_batches(IMAGENET, 2, seed=4), 1)[0]
    np.testing.assert_array_equal(resumed["labels"], run[4]["labels"])
    np.testing.assert_array_equal(resumed["images"], run[4]["images"])
    assert not np.allclose(other_seed["images"], run[0]["images"])


def test_eval_images_and_prefetch_to_device():
    with tfds.testing.mock_data(num_examples=3):
        examples = list(imagenet_input.eval_images(IMAGENET))
        batches = take(imagenet_input.train_batches(IMAGENET, 1, seed=0, image_size=32), 3)
    assert len(examples) == 3
    for image, label in examples:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert isinstance(label, int) and 0 <= label < 1000
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    on_device = list(imagenet_input.prefetch_to_device(iter(batches), 2, sharding))
    assert len(on_device) == 3
    assert isinstance(on_device[2]["images"], jax.Array)
    np.testing.assert_array_equal(on_device[2]["images"], batches[2]["images"])


def test_require_imagenet_names_both_archives_and_the_manual_folder(tmp_path):
    with pytest.raises(imagenet_input.DatasetUnavailable) as error:
        imagenet_input.require_imagenet(str(tmp_path), "")
    message = str(error.value)
    assert "\n" not in message
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert str(tmp_path / "downloads" / "manual") in message
    with pytest.raises(imagenet_input.DatasetUnavailable, match="elsewhere"):
        imagenet_input.require_imagenet(str(tmp_path), str(tmp_path / "elsewhere"))


def test_importing_the_input_modules_loads_neither_tensorflow_nor_jax():
    code = ("import sys, resdepth.data.imagenet_input, resdepth.data.multicrop; "
            "print(sorted({'tensorflow', 'tensorflow_datasets', 'jax'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


# --- test modes on a net whose output is known ---------------------------------------------

def first_row_logits(images):
    """Logits = channel 0 of the first 6 pixels of the top row: crop position and flip show."""
    return np.asarray(images)[:, 0, :6, 0] / 10.0


def test_ten_crop_scores_average_the_softmax_of_the_ten_crops():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(256, 300, 3), dtype=np.uint8)  # already shorter side 256
    pixels = image.astype(np.float32) - np.float32(multicrop.IMAGENET_RGB_MEAN[0])
    expected = []
    for top, left in [(0, 0), (0, 76), (32, 0), (32, 76), (16, 38)]:
        row = pixels[top, left:left + 224, 0]
        expected.append(row[:6] / 10.0)  # the crop
        expected.append(row[::-1][:6] / 10.0)  # its flip
    expected = multicrop.softmax(np.stack(expected)).mean(axis=0)
    np.testing.assert_allclose(multicrop.ten_crop_scores(first_row_logits, image), expected,
                               rtol=1e-6)
    center = multicrop.softmax(pixels[16, 38:44, 0] / 10.0)
    np.testing.assert_allclose(multicrop.center_crop_scores(first_row_logits, image), center,
                               rtol=1e-6)


def shape_logits(images):
    """Logits from the view's size and whether its left column is brighter than its right."""
    images = np.asarray(images)
    batch, height, width = images.shape[:3]
    left_brighter = images[:, :, 0].mean(axis=(1, 2)) > images[:, :, -1].mean(axis=(1, 2))
    return np.stack([np.full(batch, height / 100.0), np.full(batch, width / 100.0),
                     3.0 * left_brighter], axis=1)


def test_multiscale_scores_average_whole_image_and_flip_at_each_scale():
    ramp = np.linspace(255, 0, 400).astype(np.uint8)  # bright left, dark right: flips show
    image = np.broadcast_to(ramp[None, :, None], (300, 400, 3)).copy()
    scales = (224, 256)

    def expected(sizes):
        views = [[h / 100, w / 100, left] for h, w in sizes for left in (3.0, 0.0)]
        return multicrop.softmax(np.array(views)).mean(axis=0)

    # Exact aspect ratio: the long side is 400 * 224 / 300 = 298.7 -> 299 and 341.3 -> 341.
    exact = multicrop.multiscale_scores(shape_logits, image, scales, long_side_multiple=1)
    np.testing.assert_allclose(exact, expected([(224, 299), (256, 341)]), rtol=1e-12)
    # Default: long side rounded to the net's stride, 32 -> 288 and 352.
    rounded = multicrop.multiscale_scores(shape_logits, image, scales)
    np.testing.assert_allclose(rounded, expected([(224, 288), (256, 352)]), rtol=1e-12)
    assert multicrop.multiscale_scores(shape_logits, image).shape == (3,)


def ranking_logits(images):
    """Constant image of value k ranks class k first, then k+1, ... (mod 10)."""
    values = np.rint(np.asarray(images)[:, 0, 0, 0] + multicrop.IMAGENET_RGB_MEAN[0])
    classes = np.arange(10)
    return -((classes[None, :] - values[:, None]) % 10).astype(np.float32)


@pytest.mark.parametrize("mode", multicrop.MODES)
def test_evaluate_counts_top1_and_top5_errors(mode):
    def constant(value, shape=(260, 300)):
        return np.full((*shape, 3), value, np.uint8)

    examples = [
        (constant(2), 2),  # ranked 1st: right
        (constant(5), 7),  # ranked 3rd: top-1 wrong, top-5 right
        (constant(1, (300, 260)), 8),  # ranked 8th: both wrong
        (constant(9), 9),  # ranked 1st: right
    ]
    result = multicrop.evaluate(ranking_logits, iter(examples), mode)
    assert result == {"top1_error": 0.5, "top5_error": 0.25, "count": 4}


def test_evaluate_rejects_unknown_modes():
    with pytest.raises(multicrop.InvalidChoice, match="10crop"):
        multicrop.evaluate(ranking_logits, [], "5crop")


# --- end to end: a ResNet-18 trains on batches from the loader ---------------------------------

def test_resnet18_trains_through_the_real_loader_and_decides_plateaus_on_held_out_images(
        tmp_path, monkeypatch):
    """One run through the real loader and train loop, with the plateau rule: the training
    stream excludes the held-out images, each evaluation tests them, and the rate follows them."""
    import threading

    from resdepth.config import load_config, parse_override
    from resdepth.evaluate.imagenet import evaluate_run
    from resdepth.training.session import train_run

    # 64-pixel crops keep the CPU test short; the pipeline is the 224 one otherwise. Patience 1
    # and a threshold of 1.0: no evaluation after the first counts as an improvement, so the
    # second one (after iteration 2) divides the rate by 10.
    config = load_config("imagenet", [parse_override(text) for text in (
        f"data.data_dir='{tmp_path / 'tfds'}'", "model.depth=18", "data.image_size=64",
        "optim.batch_size=2", "optim.total_steps=3", "optim.lr_schedule='plateau'",
        "data.plateau_holdout_examples=2", "optim.plateau_patience_evals=1",
        "optim.plateau_threshold=1.0", "run.log_every_steps=1", "run.eval_every_steps=1",
        "run.eval_examples=1")])
    events, read = [], []
    with tfds.testing.mock_data(num_examples=4), monkeypatch.context() as patch:
        # mock_data serves the same examples for any split, so record which splits are read
        # (undone inside mock_data, which restores the real method on leaving).
        mocked = tfds.core.DatasetBuilder.as_dataset

        def recording(self, *args, split=None, **kwargs):
            read.append(str(getattr(split, "split", split)))
            return mocked(self, *args, split=split, **kwargs)

        patch.setattr(tfds.core.DatasetBuilder, "as_dataset", recording)
        summary = train_run(config, tmp_path / "run", on_event=events.append,
                            stop=threading.Event())
        # The trained run tested as in Tables 2-3: 10 crops of the validation images.
        tested = evaluate_run(tmp_path / "run", "10crop", limit=2)
    assert set(read) == {"train[:-2]", "train[-2:]", "validation"}  # never the whole train split
    # Every iteration is a logging row here, so each records its layer signals, in the step.
    signals = [json.loads(line) for line in (tmp_path / "run" / "signals.jsonl").read_text().splitlines()]
    assert [row["step"] for row in signals[1:]] == [1, 2, 3]
    assert all(value > 0 for row in signals[1:] for value in row["response_grad_rms"])
    saved = json.loads((tmp_path / "run" / "tencrop.json").read_text())
    assert saved["count"] == 2 and saved["step"] == 3 and saved == tested
    assert all(0 <= saved[key] <= 1 for key in ("top1_error", "top5_error", "center_top1_error"))
    assert summary["status"] == "completed" and summary["steps_done"] == 3
    assert summary["params"] == 11_689_512
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if row["type"] == "train"]
    assert len(train_rows) == 3 and all(np.isfinite(row["train_loss"]) for row in train_rows)
    assert train_rows[0]["train_loss"] > 0.5 * np.log(1000)  # a fresh 1000-way net is near chance
    assert 0 <= summary["final_test_error"] <= 1 and 0 <= summary["final_test_top5_error"] <= 1
    evals = [row for row in rows if row["type"] == "eval"]
    assert len(evals) == 3 and all(
        0 <= row[key] <= 1 for row in evals for key in ("holdout_error", "holdout_top5_error"))
    assert [row["learning_rate"] for row in train_rows] == [0.1, 0.1, 0.01]
    notes = [event.data["message"] for event in events if event.kind == "note"]
    assert any("held-out training error plateaued" in note for note in notes)


def test_missing_archives_exit_code_2_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from resdepth.cli.app import app

    result = CliRunner().invoke(app, ["train", "--dataset", "imagenet", "--depth", "18",
                                      "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "ILSVRC2012_img_train.tar" in result.output and "ILSVRC2012_img_val.tar" in result.output
    assert "Traceback" not in result.output


# --- the learning-rate schedule: Figure 4's drops by default, the plateau rule on held-out images --

def test_imagenet_default_schedule_drops_at_figure4s_150k_and_300k_iterations():
    from resdepth.config import load_config

    for name in ("imagenet", "table2", "table3", "table4"):
        optim = load_config(name).optim
        assert optim.lr_schedule == "steps", name
        assert optim.lr_boundaries_steps == [150_000, 300_000] and optim.total_steps == 600_000
    data = load_config("imagenet").data
    assert data.plateau_holdout_examples == 10_000  # used only if lr_schedule = "plateau"


def test_holdout_splits_cut_the_train_split_in_two_disjoint_parts():
    assert imagenet_input.holdout_splits(0) == ("train", None)
    train, held = imagenet_input.holdout_splits(10_000)
    # What TFDS reads for them from imagenet2012's 1,281,167 training examples.
    infos = {"train": tfds.core.SplitInfo(name="train", shard_lengths=[1_281_167], num_bytes=0)}
    (train_part,) = tfds.core.ReadInstruction.from_spec(train).to_absolute(infos)
    (held_part,) = tfds.core.ReadInstruction.from_spec(held).to_absolute(infos)
    assert (train_part.from_, train_part.to) == (None, 1_271_167)
    assert (held_part.from_, held_part.to) == (1_271_167, None)


def plateau_decisions(errors, *overrides):
    """The lr_scale after each evaluation row (holdout_error, test_error) of a plateau run."""
    import jax.numpy as jnp

    from resdepth.config import load_config, parse_override
    from resdepth.training.loop import HostState, _plateau_scale

    config = load_config("imagenet", [parse_override("optim.lr_schedule='plateau'"),
                                      *(parse_override(text) for text in overrides)])
    scale, host, scales = float(jnp.float32(1.0)), HostState(), []
    for step, (holdout, test) in enumerate(errors, 1):
        row = {"type": "eval", "step": step, "test_error": test}
        if holdout is not None:
            row["holdout_error"] = holdout
        scale = float(jnp.float32(_plateau_scale(config, scale, host, row, lambda event: None, step)))
        scales.append(round(scale, 6))
    return scales


def test_the_plateau_rule_reads_the_holdout_error_never_the_test_error():
    # The validation error keeps falling while the held-out error stalls: the rate drops.
    stalled = [(0.5, 0.5), (0.5, 0.4), (0.5, 0.3)]
    assert plateau_decisions(stalled, "optim.plateau_patience_evals=2") == [1.0, 1.0, 0.1]
    # The validation error stalls while the held-out error falls: it does not.
    falling = [(0.5, 0.5), (0.4, 0.5), (0.3, 0.5)]
    assert plateau_decisions(falling, "optim.plateau_patience_evals=2") == [1.0, 1.0, 1.0]
    # A fixed schedule never reads it (its evaluations have no holdout).
    assert plateau_decisions([(None, 0.5)] * 4, "optim.lr_schedule='steps'") == [1.0] * 4


def test_plateau_patience_and_threshold_are_honoured():
    errors = [(0.50, 0), (0.495, 0), (0.495, 0), (0.40, 0), (0.40, 0), (0.40, 0), (0.40, 0)]
    # Gains under the threshold (0.005 < 0.01) are no gain: a drop after 2 evaluations without
    # one, a new best, and again after 2 more (then counting starts afresh).
    assert plateau_decisions(errors, "optim.plateau_patience_evals=2",
                             "optim.plateau_threshold=0.01") == [1, 1, 0.1, 0.1, 0.1, 0.01, 0.01]
    # A smaller threshold counts 0.005 as a gain; patience 3 waits one evaluation longer.
    assert plateau_decisions(errors, "optim.plateau_patience_evals=3",
                             "optim.plateau_threshold=0.001") == [1, 1, 1, 1, 1, 1, 0.1]


# --- the same held-out slice on the device-resident datasets (CIFAR-10, digits) ----------------

def indexed_dataset(size):
    """An InMemoryDataset whose training image i is filled with i (uint8) and labelled i % 10."""
    from resdepth.data.datasets import InMemoryDataset

    images = np.broadcast_to(np.arange(size, dtype=np.uint8)[:, None, None, None], (size, 2, 2, 1))
    return InMemoryDataset("digits", images.copy(), np.arange(size, dtype=np.int32) % 10,
                           images[:3].copy(), np.zeros(3, np.int32),
                           np.full((2, 2, 1), (size - 1) / 2, np.float32), 10)


def test_split_off_holdout_is_a_fixed_disjoint_part_of_the_training_images():
    from resdepth.training.sources import split_off_holdout

    data = indexed_dataset(100)
    rest, (held_images, held_labels) = split_off_holdout(data, 20)
    kept, held = rest.train_images[:, 0, 0, 0], held_images[:, 0, 0, 0]
    assert len(kept) == 80 and len(held) == 20
    assert sorted([*kept, *held]) == list(range(100))  # every image once, in one part only
    assert list(held) != list(range(80, 100))  # a shuffled choice, not the last 20 of the split
    np.testing.assert_array_equal(held_labels, held % 10)
    np.testing.assert_array_equal(rest.train_labels, kept % 10)
    np.testing.assert_allclose(rest.mean_image, kept.mean())  # the mean of what is trained on
    np.testing.assert_array_equal(rest.test_images, data.test_images)
    again, _ = split_off_holdout(indexed_dataset(100), 20)  # the same images every time
    np.testing.assert_array_equal(again.train_images, rest.train_images)


def test_plateau_refusals_are_one_line_choices():
    from resdepth.errors import InvalidChoice
    from resdepth.config import DataConfig, ExperimentConfig, OptimConfig, validate
    from resdepth.training.sources import plateau_holdout_examples, split_off_holdout

    def config(schedule, holdout=5000):  # built directly: load_config's own checks would refuse first
        return ExperimentConfig(data=DataConfig(dataset="digits", plateau_holdout_examples=holdout),
                                optim=OptimConfig(lr_schedule=schedule))

    assert plateau_holdout_examples(config("steps")) == 0  # the steps schedule holds nothing out
    assert plateau_holdout_examples(config("plateau")) == 5000
    # Refused once, where the config is validated (as it loads), before any source reads it.
    with pytest.raises(InvalidChoice, match="plateau_holdout_examples = 0: must be >= 1"):
        validate(config("plateau", 0))
    with pytest.raises(InvalidChoice, match="steps or plateau"):
        validate(config("step"))
    with pytest.raises(InvalidChoice, match="leaves none of the 100 digits training images"):
        split_off_holdout(indexed_dataset(100), 100)


def test_device_resident_source_evaluates_the_holdout_of_digits(digits_data_dir):
    import jax.numpy as jnp
    from flax import nnx

    from conftest import tiny_config
    from resdepth.training import step as steps
    from resdepth.training.mesh import make_mesh
    from resdepth.data.datasets import load_dataset
    from resdepth.models.network import build_model
    from resdepth.training.sources import DeviceResidentSource
    from resdepth.training.step import model_spec

    config = tiny_config(digits_data_dir, "optim.lr_schedule='plateau'",
                         "data.plateau_holdout_examples=97", steps=2)
    data = load_dataset(config.data)
    mesh = make_mesh()
    graphdef, state = steps.init_state(config, build_model(model_spec(config, 10), 0, 1), mesh)
    source = DeviceResidentSource(config, mesh, data)
    assert len(source.data.train_images) == len(data.train_images) - 97
    assert source.order(config.run.seed).size == len(data.train_images) - 97  # batches index the rest only
    source.compile(graphdef, 0)
    row = source.evaluate(state, graphdef)
    held_images, held_labels = source.holdout
    model = nnx.merge(graphdef, state.params, state.batch_stats)
    logits = model(jnp.asarray(held_images, jnp.float32) - source.data.mean_image, train=False)
    assert row["holdout_error"] == pytest.approx(float(jnp.mean(jnp.argmax(logits, -1) != held_labels)))
    assert set(row) == {"test_loss", "test_error", "holdout_loss", "holdout_error"}
