"""Small image datasets (CIFAR-10, the embedded digits) loaded through TFDS into memory.

The whole dataset is held as uint8 and, in training, lives on the accelerator; batches are
gathered and augmented inside the compiled step (see `augment.py`), as airbench does. The data
order follows from (seed, epoch) alone, so a run is reproducible and resumable.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import numpy as np

from resdepth.architectures import InvalidChoice
from resdepth.config import DataConfig

TFDS_NAMES = {"cifar10": "cifar10", "digits": "resdepth_digits"}
NUM_CLASSES = {"cifar10": 10, "digits": 10, "imagenet": 1000}
IMAGE_SIZE_PIXELS = {"cifar10": 32, "digits": 8, "imagenet": 224}  # training input side
IN_CHANNELS = {"cifar10": 3, "digits": 1, "imagenet": 3}
VALIDATION_FRACTION_PERCENT = 10  # the paper's 45k/5k split of CIFAR-10's 50k training images


class DatasetUnavailable(InvalidChoice):
    """The dataset could not be downloaded or prepared; the message says what to do."""


@dataclasses.dataclass
class InMemoryDataset:
    """A split pair held in host memory.

    Attributes:
      train_images: uint8 (N, H, W, C).   train_labels: int32 (N,).
      test_images: uint8 (M, H, W, C).    test_labels: int32 (M,).
      mean_image: float32 (H, W, C), the per-pixel mean of the training images (0..255 scale).
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    mean_image: np.ndarray
    num_classes: int


def _as_arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    # Batch-and-iterate rather than tfds.load(batch_size=-1): the latter aborts under mock_data.
    import tensorflow_datasets as tfds

    images, labels = [], []
    for batch_images, batch_labels in tfds.as_numpy(dataset.batch(10_000)):
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int32)


def _splits(config: DataConfig) -> tuple[str, str]:
    if config.val_split:
        cut = 100 - VALIDATION_FRACTION_PERCENT
        return f"train[:{cut}%]", f"train[{cut}%:]"
    return "train", "test"


def load_dataset(config: DataConfig) -> InMemoryDataset:
    """Downloads (first use) and loads `config.dataset` into memory, or DatasetUnavailable."""
    if config.dataset not in TFDS_NAMES:
        valid = ", ".join(TFDS_NAMES)
        raise InvalidChoice(f"dataset {config.dataset!r} is not an in-memory dataset; choose {valid}")
    import tensorflow_datasets as tfds

    if config.dataset == "digits":
        importlib.import_module("resdepth.digits_dataset")  # registers its builder with TFDS

    data_dir = config.data_dir or None
    train_split, test_split = _splits(config)
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError
    from tensorflow_datasets.core.download.util import DownloadError

    try:
        if data_dir:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
        builder = tfds.builder(TFDS_NAMES[config.dataset], data_dir=data_dir)
        builder.download_and_prepare()
        train = builder.as_dataset(split=train_split, as_supervised=True, shuffle_files=False)
        test = builder.as_dataset(split=test_split, as_supervised=True, shuffle_files=False)
    except (OSError, DownloadError, NonMatchingChecksumError) as error:
        # OSError covers requests' ConnectionError and a full or read-only disk.
        where = data_dir or "~/tensorflow_datasets"
        raise DatasetUnavailable(
            f"could not download or prepare {config.dataset} into {where} "
            f"({type(error).__name__}); check the network, or copy a prepared TFDS folder there "
            f"and pass --data-dir") from None
    train_images, train_labels = _as_arrays(train)
    test_images, test_labels = _as_arrays(test)
    return InMemoryDataset(
        name=config.dataset,
        train_images=train_images, train_labels=train_labels,
        test_images=test_images, test_labels=test_labels,
        mean_image=train_images.astype(np.float64).mean(axis=0).astype(np.float32),
        num_classes=NUM_CLASSES[config.dataset],
    )


def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
    """The training order of one epoch: a permutation of range(size) fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(size).astype(np.int32)


class BatchOrder:
    """Training-image indices of any iteration, from (seed, step) alone.

    Iteration `step` uses samples step*B .. step*B + B - 1 of the endless sequence made by
    concatenating the epochs' permutations, so batches may straddle an epoch boundary.
    """

    def __init__(self, seed: int, dataset_size: int, batch_size: int):
        self.seed, self.size, self.batch_size = seed, dataset_size, batch_size
        self._cache: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = epoch_permutation(self.seed, epoch, self.size)
        return self._cache[epoch]

    def indices(self, step: int) -> np.ndarray:
        """int32 (batch_size,) indices into the training images for iteration `step`."""
        positions = step * self.batch_size + np.arange(self.batch_size)
        epochs, offsets = np.divmod(positions, self.size)
        out = np.empty(self.batch_size, np.int32)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._permutation(int(epoch))[offsets[mask]]
        return out

    def epoch(self, step: int) -> float:
        """Epochs completed after `step` iterations."""
        return step * self.batch_size / self.size
