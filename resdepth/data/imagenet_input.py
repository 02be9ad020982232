"""ImageNet 2012 through TFDS `imagenet2012` and tf.data: the §3.4 training input and test images.

Training views (He et al. 2016, §3.4, following Krizhevsky et al. 2012 and fb.resnet.torch):
the shorter side is resized to a random S in [256, 480]; a random 224x224 crop is taken and
flipped horizontally with probability 1/2; AlexNet-style PCA lighting noise is added; the mean is
subtracted. Pixels stay on the 0-255 scale and are not divided by a standard deviation, since the
paper only subtracts a mean.

Which mean: the paper says "per-pixel mean", i.e. a mean image. A mean image is defined only for
images of one size; here every image is rescaled by its own random S before cropping, so no fixed
mean image lines up with the crops. We subtract the per-channel RGB mean of the training set,
`IMAGENET_RGB_MEAN` = (123.68, 116.78, 103.94) on 0-255 pixels (the values of the Caffe/VGG and
TF-slim ResNet preprocessing), which is what a per-pixel mean image averages to.

Only the crop is decoded: the crop window is computed in the original image's coordinates (a
square of 224 / scale pixels, scale = S / shorter side) from the JPEG header, decoded with
`tf.image.decode_and_crop_jpeg`, then resized to 224x224. Resizing is bilinear, antialiased when
the window is larger than the output (downscaling).

Randomness is stateless, keyed by (seed, epoch, position in the epoch), so a run's batches are a
function of its seed alone, whatever the thread count, and resuming at a step gives the same batch
as running through to it.

The plateau schedule's held-out slice (`holdout_splits`): the last N examples of TFDS's train
split, which never enter training and are tested by the same centre view as the validation set.
TFDS stores imagenet2012's training examples in an order shuffled by a hash of their file names,
so the last N are a sample of every class rather than the last classes.

TensorFlow, TFDS and JAX are imported inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import collections
import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from resdepth.data.datasets import DatasetUnavailable, Readiness, is_prepared
from resdepth.dataset_facts import IMAGE_SIZE_PIXELS

if TYPE_CHECKING:
    import jax
    import tensorflow as tf

    from resdepth.config import DataConfig

TFDS_NAME = "imagenet2012"
ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGE_SIZE = IMAGE_SIZE_PIXELS["imagenet"]  # side of the training crop, pixels
SCALE_RANGE = (256, 480)  # §3.4: shorter side resized to a random S in this range, inclusive
TEST_SHORTER_SIDE = 256  # single centre view: shorter side 256, centre 224 crop
IMAGENET_RGB_MEAN = (123.68, 116.78, 103.94)  # per-channel mean of the training set, 0-255
LIGHTING_STD = 0.1  # Krizhevsky et al. 2012: alpha ~ N(0, 0.1)
# Eigenvalues and eigenvectors (columns) of the RGB covariance of ImageNet pixels, as used by
# fb.resnet.torch (eigenvalues 0.2175, 0.0188, 0.0045 on 0-1 pixels), scaled to 0-255 pixels.
LIGHTING_EIGVAL = (55.46, 4.794, 1.148)
LIGHTING_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
SHUFFLE_BUFFER_EXAMPLES = 10_000  # about 1.1 GB of JPEG bytes for ImageNet


def manual_folder(data_dir: str, manual_dir: str) -> Path:
    """Where TFDS looks for the ImageNet archives: `manual_dir`, else <data_dir>/downloads/manual."""
    if manual_dir:
        return Path(manual_dir).expanduser()
    root = Path(data_dir).expanduser() if data_dir else Path("~/tensorflow_datasets").expanduser()
    return root / "downloads" / "manual"


def _tfds_is_mocked() -> bool:
    # Under tfds.testing.mock_data, download_and_prepare is a no-op and as_dataset serves random
    # examples without any files, so there is nothing on disk to require.
    import tensorflow_datasets as tfds

    method = tfds.core.DatasetBuilder.download_and_prepare
    return getattr(method, "__module__", "").startswith("tensorflow_datasets.testing")


def require_imagenet(data_dir: str, manual_dir: str) -> None:
    """Returns if imagenet2012 is prepared or can be prepared; else raises DatasetUnavailable.

    "Can be prepared" means both archives are in the manual folder; preparing takes hours once
    (see `prepare_imagenet`). Cheap: it reads no data.
    """
    import tensorflow_datasets as tfds

    if _tfds_is_mocked():
        return
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir or None)
    if is_prepared(builder):
        return
    folder = manual_folder(data_dir, manual_dir)
    missing = _missing_archives(folder)
    if missing:
        where = f" --data_dir {data_dir}" if data_dir else ""
        raise DatasetUnavailable(
            f"ImageNet is not prepared in {builder.data_path} and {folder} lacks "
            f"{' and '.join(missing)}: put {ARCHIVES[0]} and {ARCHIVES[1]} (from image-net.org) "
            f"in {folder}, then `resdepth train --dataset imagenet ...` prepares it once on "
            f"first use (or run: tfds build {TFDS_NAME}{where} --manual_dir {folder})")


def _missing_archives(folder: Path) -> list[str]:
    return [name for name in ARCHIVES if not (folder / name).is_file()]


def readiness(data_config: DataConfig) -> Readiness:
    """Whether imagenet2012 is prepared, and if not what the first run needs: the archives in
    the manual folder (from which it prepares ImageNet, hours, once). Reads no data."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAME, data_dir=data_config.data_dir or None)
    if is_prepared(builder):
        return Readiness("imagenet", True, str(builder.data_path))
    folder = manual_folder(data_config.data_dir, data_config.manual_dir)
    missing = _missing_archives(folder)
    first_run = (f"{folder} lacks {' and '.join(missing)}: put both archives (from "
                 f"image-net.org) there before the first run, which prepares ImageNet from them "
                 f"(hours, once)" if missing else
                 f"the first run prepares it from the archives in {folder} (hours, once)")
    return Readiness("imagenet", False, str(builder.data_path.parents[1]), first_run)


def prepare_imagenet(data_config: DataConfig) -> None:
    """Makes sure imagenet2012 is prepared, building it from the archives if needed (hours, once).

    TFDS itself prints its progress bar to stdout while building.
    """
    import tensorflow_datasets as tfds

    require_imagenet(data_config.data_dir, data_config.manual_dir)
    builder = tfds.builder(TFDS_NAME, data_dir=data_config.data_dir or None)
    folder = manual_folder(data_config.data_dir, data_config.manual_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(folder)))


# --- per-example preprocessing (shared with benchmarks/input_pipeline.py) ---------------------

def sample_crop_window(image_shape: tf.Tensor, key: tf.Tensor,
                       scale_range: tuple[int, int] = SCALE_RANGE) -> tf.Tensor:
    """The random §3.4 crop in original pixels: int32 [offset_y, offset_x, side, side].

    image_shape: int32 (3,) as from `tf.image.extract_jpeg_shape`; key: stateless seed, shape (2,).
    Resizing the shorter side to S and cropping 224 equals cropping a square of 224 * shorter / S
    original pixels and resizing it to 224 (up to rounding), which spares decoding the rest.
    """
    import tensorflow as tf

    size_key, y_key, x_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))
    height, width = image_shape[0], image_shape[1]
    shorter = tf.minimum(height, width)
    target = tf.random.stateless_uniform([], size_key, minval=scale_range[0],
                                         maxval=scale_range[1] + 1, dtype=tf.int32)
    side = tf.cast(tf.round(IMAGE_SIZE * tf.cast(shorter, tf.float32)
                            / tf.cast(target, tf.float32)), tf.int32)
    side = tf.clip_by_value(side, 1, shorter)
    offset_y = tf.random.stateless_uniform([], y_key, 0, height - side + 1, dtype=tf.int32)
    offset_x = tf.random.stateless_uniform([], x_key, 0, width - side + 1, dtype=tf.int32)
    return tf.stack([offset_y, offset_x, side, side])


def center_crop_window(image_shape: tf.Tensor) -> tf.Tensor:
    """The single test view in original pixels: shorter side 256, centre 224 crop.

    Returns int32 [offset_y, offset_x, side, side].
    """
    import tensorflow as tf

    height, width = image_shape[0], image_shape[1]
    shorter = tf.minimum(height, width)
    side = tf.cast(tf.round(IMAGE_SIZE * tf.cast(shorter, tf.float32) / TEST_SHORTER_SIDE),
                   tf.int32)
    side = tf.clip_by_value(side, 1, shorter)
    return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


def lighting_noise(key: tf.Tensor, std: float = LIGHTING_STD) -> tf.Tensor:
    """AlexNet PCA lighting: eigvec @ (alpha * eigval), alpha ~ N(0, std); float32 (3,), 0-255."""
    import tensorflow as tf

    alpha = tf.random.stateless_normal([3], key, stddev=std)
    eigvec = tf.constant(LIGHTING_EIGVEC, tf.float32)
    return tf.linalg.matvec(eigvec, alpha * tf.constant(LIGHTING_EIGVAL, tf.float32))


def resize_bilinear(image: tf.Tensor, size: Any) -> tf.Tensor:
    """(h, w, 3) -> float32 (size[0], size[1], 3), bilinear, antialiased when shrinking.

    TF's antialiased kernel gives the same pixels as plain bilinear when enlarging but costs
    about as much as decoding the crop, so it runs only when some side shrinks.
    """
    import tensorflow as tf

    shrinks = tf.reduce_any(tf.shape(image)[:2] > tf.constant(size, tf.int32))
    return tf.cond(shrinks,
                   lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
                   lambda: tf.image.resize(image, size, method="bilinear"))


def finish_view(crop: tf.Tensor, key: tf.Tensor | None, image_size: int = IMAGE_SIZE
                ) -> tf.Tensor:
    """Decoded crop uint8 (h, w, 3) -> mean-subtracted float32 (image_size, image_size, 3).

    With a key: random horizontal flip and lighting noise; key None: neither (test view).
    """
    import tensorflow as tf

    shift = -tf.constant(IMAGENET_RGB_MEAN, tf.float32)
    if key is not None:
        flip_key, light_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        flip = tf.random.stateless_uniform([], flip_key) < 0.5
        # Flipping the uint8 crop before resizing moves a quarter of the bytes of the float view.
        crop = tf.cond(flip, lambda: tf.reverse(crop, axis=[1]), lambda: crop)
        shift = shift + lighting_noise(light_key)  # one pass over the pixels for both shifts
    return resize_bilinear(crop, [image_size, image_size]) + shift


def train_preprocess(jpeg: tf.Tensor, key: tf.Tensor | None, image_size: int = IMAGE_SIZE
                     ) -> tf.Tensor:
    """JPEG bytes (scalar string) -> one float32 (image_size, image_size, 3) training view.

    key: stateless seed, shape (2,), giving the scale, crop, flip and lighting noise; None gives
    the deterministic centre view (no augmentation). Only the crop window is decoded.
    """
    import tensorflow as tf

    shape = tf.image.extract_jpeg_shape(jpeg)
    if key is None:
        window, view_key = center_crop_window(shape), None
    else:
        window_key, view_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        window = sample_crop_window(shape, window_key)
    crop = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    return finish_view(crop, view_key, image_size)


# --- datasets -----------------------------------------------------------------------------

def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _process_split(split: str) -> Any:
    import tensorflow_datasets as tfds

    # drop_remainder: every process gets the same number of examples, hence of steps per epoch.
    return tfds.split_for_jax_process(split, drop_remainder=True)


def _epoch_examples(data_config: DataConfig, split: str, epoch_seed: int) -> tf.data.Dataset:
    """(jpeg bytes, label) of this process's part of `split`, in this epoch's shuffled order."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAME, data_dir=data_config.data_dir or None)
    read_config = tfds.ReadConfig(shuffle_seed=epoch_seed, try_autocache=False)
    dataset = builder.as_dataset(split=split, shuffle_files=True, read_config=read_config,
                                 decoders={"image": tfds.decode.SkipDecoding()})
    dataset = dataset.map(lambda example: (example["image"], tf.cast(example["label"], tf.int32)))
    return dataset.shuffle(SHUFFLE_BUFFER_EXAMPLES, seed=epoch_seed % 2**31,
                           reshuffle_each_iteration=False)


def examples_per_process(data_config: DataConfig, split: str = "train") -> int:
    """How many examples of `split` this process reads per epoch."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAME, data_dir=data_config.data_dir or None)
    dataset = builder.as_dataset(split=_process_split(split),
                                 decoders={"image": tfds.decode.SkipDecoding()})
    count = int(dataset.cardinality())
    if count < 0:
        raise DatasetUnavailable(f"{TFDS_NAME} {split}: number of examples unknown")
    return count


def holdout_splits(holdout_examples: int) -> tuple[str, str | None]:
    """(split to train on, held-out split): the train split without and with only its last
    `holdout_examples` examples; ("train", None) for 0 (nothing held out)."""
    if holdout_examples <= 0:
        return "train", None
    return f"train[:-{holdout_examples}]", f"train[-{holdout_examples}:]"


def train_batches(data_config: DataConfig, batch_size_per_process: int, seed: int,
                  start_step: int = 0, image_size: int = IMAGE_SIZE, split: str = "train"
                  ) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches of this process's part of `split`, from `start_step`.

    Yields {"images": float32 (B, image_size, image_size, 3) mean-subtracted 0-255 pixels,
            "labels": int32 (B,) in [0, 1000)}, B = batch_size_per_process.
    Each epoch is reshuffled from (seed, epoch) and drops its last partial batch, so step k is
    (epoch k // steps_per_epoch, batch k % steps_per_epoch); resuming skips the JPEG bytes of the
    examples already seen in that epoch without decoding them. `data_config.augment` False gives
    the centre view of every image instead of the §3.4 augmentation.
    """
    import tensorflow as tf

    steps_per_epoch = examples_per_process(data_config, split) // batch_size_per_process
    if steps_per_epoch == 0:
        raise DatasetUnavailable(
            f"batch of {batch_size_per_process} per process exceeds the examples per process")
    start_epoch, start_batch = divmod(start_step, steps_per_epoch)
    for epoch in itertools.count(start_epoch):
        epoch_seed = _epoch_seed(seed, epoch)
        dataset = _epoch_examples(data_config, _process_split(split), epoch_seed).enumerate()
        if epoch == start_epoch and start_batch:
            dataset = dataset.skip(start_batch * batch_size_per_process)
        base_key = tf.constant([epoch_seed % 2**31, 0], tf.int64)

        def preprocess(position: tf.Tensor, example: tuple[tf.Tensor, tf.Tensor]
                       ) -> dict[str, tf.Tensor]:
            jpeg, label = example
            key = (tf.random.experimental.stateless_fold_in(base_key, position)
                   if data_config.augment else None)
            return {"images": train_preprocess(jpeg, key, image_size), "labels": label}

        dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.batch(batch_size_per_process, drop_remainder=True)
        yield from dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def eval_images(data_config: DataConfig, split: str = "validation"
                ) -> Iterator[tuple[np.ndarray, int]]:
    """(image uint8 (H, W, 3) at its original size, label) for this process's part of `split`.

    Images differ in size, so they come one at a time; decoding runs ahead in parallel.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAME, data_dir=data_config.data_dir or None)
    dataset = builder.as_dataset(split=tfds.split_for_jax_process(split), shuffle_files=False,
                                 decoders={"image": tfds.decode.SkipDecoding()})
    dataset = dataset.map(
        lambda example: (tf.io.decode_jpeg(example["image"], channels=3), example["label"]),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for image, label in dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        yield image, int(label)


def prefetch_to_device(iterator: Iterator[Any], size: int, sharding: jax.sharding.Sharding
                       ) -> Iterator[Any]:
    """Puts the next `size` batches on the devices while the current step runs.

    Each leaf is this process's rows of the global batch; with a sharding over several
    processes the global array is assembled from every process's rows.
    """
    import jax

    def to_device(batch: Any) -> Any:
        return jax.tree.map(
            lambda rows: jax.make_array_from_process_local_data(sharding, rows), batch)

    queue: collections.deque[Any] = collections.deque()
    for batch in iterator:
        queue.append(to_device(batch))  # dispatch is asynchronous: the copy overlaps the step
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
