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

from resdepth import imagenet_input, multicrop
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
    code = ("import sys, resdepth.imagenet_input, resdepth.multicrop; "
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

def test_resnet18_trains_a_few_steps_through_the_real_loader_and_train_loop(tmp_path):
    import threading

    from resdepth.config import load_config, parse_override
    from resdepth.train import train_and_evaluate

    # 64-pixel crops keep the CPU test short; the pipeline is the 224 one otherwise.
    config = load_config("imagenet", [parse_override(text) for text in (
        f"data.data_dir='{tmp_path / 'tfds'}'", "model.depth=18", "data.image_size=64",
        "optim.batch_size=2", "optim.total_steps=3", "run.log_every_steps=1",
        "run.eval_every_steps=3", "run.eval_examples=3")])
    with tfds.testing.mock_data(num_examples=8):
        summary = train_and_evaluate(config, tmp_path / "run", stop=threading.Event())
        # The trained run tested as in Tables 2-3: 10 crops of the validation images.
        from resdepth.imagenet_eval import evaluate_run

        tested = evaluate_run(tmp_path / "run", "10crop", limit=2)
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


def test_missing_archives_exit_code_2_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from resdepth.cli import app

    result = CliRunner().invoke(app, ["train", "--dataset", "imagenet", "--depth", "18",
                                      "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "ILSVRC2012_img_train.tar" in result.output and "ILSVRC2012_img_val.tar" in result.output
    assert "Traceback" not in result.output
