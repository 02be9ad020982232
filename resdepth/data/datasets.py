"""Small image datasets (CIFAR-10, the embedded digits) loaded through TFDS into memory.

The whole dataset is held as uint8 and, in training, lives on the accelerator; batches are
gathered and augmented inside the compiled step (see `data/augment.py`), as airbench does. The data
order follows from (seed, epoch) alone, so a run is reproducible and resumable.
"""

from __future__ import annotations

import dataclasses
import importlib
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resdepth.dataset_facts import NUM_CLASSES
from resdepth.errors import InvalidChoice

if TYPE_CHECKING:  # a type hint only: loading data runs none of config's code
    from resdepth.config import DataConfig

TFDS_NAMES = {"cifar10": "cifar10", "digits": "resdepth_digits"}
VALIDATION_FRACTION_PERCENT = 10  # the paper's 45k/5k split of CIFAR-10's 50k training images
# The archive TFDS's cifar10 builder fetches; probed before TFDS's downloader, which retries a
# dead connection for minutes.
DOWNLOAD_URLS = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"}
PROBE_TIMEOUT_S = 5.0
# What the first run fetches, as www.cs.toronto.edu/~kriz/cifar.html lists the binary version.
DOWNLOAD_MB = {"cifar10": 162}
# The embedded digits are prepared in the user's cache folder unless --data-dir says otherwise;
# the datasets that really download keep TFDS's default (~/tensorflow_datasets).
CACHED_DATASETS = ("digits",)


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


@dataclasses.dataclass(frozen=True)
class Readiness:
    """Whether a dataset is prepared where runs will read it, found without reading any data.

    folder: the dataset's prepared TFDS folder, or where the first run prepares it.
    first_run: what the first run must do when it is not prepared (download, build from
    archives), one phrase; "" when it is prepared.
    """

    dataset: str
    prepared: bool
    folder: str
    first_run: str = ""

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def is_prepared(builder) -> bool:
    """TFDS's is_prepared, without the warning it logs for a folder not yet made."""
    return builder.data_path.exists() and builder.is_prepared()


def readiness(config: DataConfig) -> Readiness:
    """Whether CIFAR-10 or the digits are prepared in the data folder `config` names, and if
    not what the first run downloads (or prepares) and where. Imports TFDS, not TensorFlow."""
    import tensorflow_datasets as tfds

    if config.dataset == "digits":
        importlib.import_module("resdepth.data.digits")  # registers its builder with TFDS
    builder = tfds.builder(TFDS_NAMES[config.dataset],
                           data_dir=config.data_dir or default_data_dir(config.dataset))
    if is_prepared(builder):
        return Readiness(config.dataset, True, str(builder.data_path))
    root = builder.data_path.parents[1]  # data_path is <root>/<name>/<version>
    url = DOWNLOAD_URLS.get(config.dataset)
    first_run = (f"the first run downloads {url} (about {DOWNLOAD_MB[config.dataset]} MB) and "
                 f"prepares it there" if url else
                 "the first run prepares it there from scikit-learn's copy, downloading nothing")
    return Readiness(config.dataset, False, str(root), first_run)


def default_data_dir(dataset: str) -> str | None:
    """The TFDS data dir used when none is given: the digits go to
    $XDG_CACHE_HOME/resdepth/tensorflow_datasets (else ~/.cache/resdepth/tensorflow_datasets);
    None (TFDS's own default) for the others."""
    if dataset in CACHED_DATASETS:
        from resdepth.runtime.jax_setup import user_cache_root

        return str(user_cache_root() / "tensorflow_datasets")
    return None


def load_dataset(config: DataConfig) -> InMemoryDataset:
    """Downloads (first use) and loads `config.dataset` into memory, or DatasetUnavailable."""
    if config.dataset not in TFDS_NAMES:
        valid = ", ".join(TFDS_NAMES)
        raise InvalidChoice(f"dataset {config.dataset!r} is not an in-memory dataset; choose {valid}")
    import tensorflow_datasets as tfds

    if config.dataset == "digits":
        importlib.import_module("resdepth.data.digits")  # registers its builder with TFDS

    data_dir = config.data_dir or default_data_dir(config.dataset)
    train_split, test_split = _splits(config)
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError
    from tensorflow_datasets.core.download.util import DownloadError

    where = data_dir or "~/tensorflow_datasets"
    try:
        if data_dir:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
        builder = tfds.builder(TFDS_NAMES[config.dataset], data_dir=data_dir)
        # The CLI probes the download host first (check_download_reachable) so an offline
        # machine fails in seconds; the library leaves that to its caller (tests use mock data).
        if config.dataset in CACHED_DATASETS:  # from scikit-learn: never ask TFDS's bucket
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        else:
            builder.download_and_prepare()
        train = builder.as_dataset(split=train_split, as_supervised=True, shuffle_files=False)
        test = builder.as_dataset(split=test_split, as_supervised=True, shuffle_files=False)
    except (OSError, DownloadError, NonMatchingChecksumError) as error:
        # OSError covers requests' ConnectionError and a full or read-only disk.
        raise DatasetUnavailable(_cannot_download(config.dataset, where, type(error).__name__)) from None
    train_images, train_labels = _as_arrays(train)
    test_images, test_labels = _as_arrays(test)
    return InMemoryDataset(
        name=config.dataset,
        train_images=train_images, train_labels=train_labels,
        test_images=test_images, test_labels=test_labels,
        mean_image=train_images.astype(np.float64).mean(axis=0).astype(np.float32),
        num_classes=NUM_CLASSES[config.dataset],
    )


def check_download_reachable(config: DataConfig, builder=None) -> None:
    """DatasetUnavailable within seconds if `config.dataset` still has to be downloaded and its
    host cannot be reached (TFDS's downloader would retry for minutes); else nothing.

    Needs TFDS but not TensorFlow, so the command line calls it before importing TensorFlow.
    """
    url = DOWNLOAD_URLS.get(config.dataset)
    if url is None:
        return
    if builder is None:
        import tensorflow_datasets as tfds

        builder = tfds.builder(TFDS_NAMES[config.dataset], data_dir=config.data_dir or None)
    problem = None if builder.is_prepared() else unreachable(url)
    if problem:
        where = config.data_dir or "~/tensorflow_datasets"
        raise DatasetUnavailable(_cannot_download(config.dataset, where, problem))


def _cannot_download(dataset: str, where: str, reason: str) -> str:
    return (f"could not download or prepare {dataset} into {where} ({reason}); check the network, "
            f"or copy a prepared TFDS folder there and pass --data-dir")


def unreachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None if a TCP connection to the host of `url` (or to the proxy set for it) opens within
    `timeout_s`, else why not, e.g. "cannot reach www.cs.toronto.edu:443".

    Name resolution has no timeout of its own, so the probe runs in a thread that is abandoned
    when the time is up.
    """
    parts = urllib.parse.urlsplit(url)
    target = parts
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"cannot reach {host}:{port}: {error.strerror or type(error).__name__}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"cannot reach {host}:{port}: no answer in {timeout_s:.0f} s"


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
