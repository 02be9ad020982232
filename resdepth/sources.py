"""Where a run's batches come from, and how it is evaluated: the two kinds of dataset.

- `DeviceResidentSource` (CIFAR-10, digits): the whole dataset lives on the devices as uint8;
  each iteration sends only the batch's indices, and the step gathers and augments on device.
- `StreamingSource` (ImageNet): tf.data decodes and augments on the host's cores, each process
  reads its own part, and batches are prefetched onto the devices while the previous step runs.

Both offer `train_step(state, step) -> state` and `evaluate(state) -> dict` for the loop in
train.py, and both are functions of (seed, step) alone, so runs resume exactly.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import jax
import numpy as np

from resdepth import step as steps
from resdepth.config import ExperimentConfig
from resdepth.data import NUM_CLASSES, BatchOrder, InMemoryDataset, load_dataset


def process_share(array: np.ndarray) -> np.ndarray:
    """This process's contiguous part of a global batch (the mesh orders devices by process)."""
    per_process = len(array) // jax.process_count()
    start = jax.process_index() * per_process
    return array[start:start + per_process]


def to_global(array: np.ndarray, sharding) -> jax.Array:
    """A global array from the same host array on every process (replicated or batch-split)."""
    if sharding.is_fully_replicated:
        return jax.make_array_from_process_local_data(sharding, array)
    return jax.make_array_from_process_local_data(sharding, process_share(array), array.shape)


def host_value(array: jax.Array) -> np.ndarray:
    """A replicated array's value on this host. Unlike jax.device_get, this also works when
    the array spans other processes' devices (multi-host), by reading a local copy."""
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        return np.asarray(array.addressable_data(0))
    return np.asarray(jax.device_get(array))


class DeviceResidentSource:
    """CIFAR-10 or digits, held on the devices (see data.py and augment.py)."""

    def __init__(self, config: ExperimentConfig, mesh, data: InMemoryDataset | None = None):
        self.config, self.mesh = config, mesh
        self.data = data if data is not None else load_dataset(config.data)
        self.num_classes = self.data.num_classes
        self.in_channels = self.data.train_images.shape[-1]
        self.order = BatchOrder(config.run.seed, len(self.data.train_images), config.optim.batch_size)

    def epoch(self, step: int) -> float:
        return self.order.epoch(step)

    def compile(self, graphdef: Any, start_step: int) -> None:
        replicated = steps.replicated(self.mesh)
        self.device_data = steps.DeviceDataset(
            to_global(self.data.train_images, replicated), to_global(self.data.train_labels, replicated),
            to_global(self.data.mean_image, replicated))
        self._train_step = steps.make_train_step(self.config, graphdef, self.mesh)
        self._eval_step = steps.make_eval_step(graphdef)
        devices = jax.device_count()
        size = min(self.config.run.eval_batch_size, len(self.data.test_images))
        self.eval_batch_size = max(devices, math.ceil(size / devices) * devices)

    def train_step(self, state: steps.TrainState, step: int) -> steps.TrainState:
        indices = to_global(self.order.indices(step), steps.batch_sharded(self.mesh))
        return self._train_step(state, self.device_data, indices)

    def evaluate(self, state: steps.TrainState) -> dict[str, float]:
        """Test loss and error (fraction) over the whole test split, single original view."""
        totals = np.zeros(3, np.float64)
        images, labels = self.data.test_images, self.data.test_labels
        sharding = steps.batch_sharded(self.mesh)
        size = self.eval_batch_size
        for start in range(0, len(images), size):
            batch_images, batch_labels = images[start:start + size], labels[start:start + size]
            mask = np.ones(len(batch_images), np.float32)
            pad = size - len(batch_images)
            if pad:
                batch_images = np.concatenate([batch_images, np.zeros((pad, *images.shape[1:]), images.dtype)])
                batch_labels = np.concatenate([batch_labels, np.zeros(pad, labels.dtype)])
                mask = np.concatenate([mask, np.zeros(pad, np.float32)])
            sums = self._eval_step(state, to_global(batch_images, sharding),
                                   to_global(batch_labels, sharding), to_global(mask, sharding),
                                   self.device_data.mean_image)
            totals += host_value(sums).astype(np.float64)
        return {"test_loss": totals[0] / totals[2], "test_error": totals[1] / totals[2]}


class StreamingSource:
    """ImageNet through tf.data (imagenet_input.py); validation by the centre 224 crop."""

    def __init__(self, config: ExperimentConfig, mesh):
        from resdepth import imagenet_input

        imagenet_input.prepare_imagenet(config.data)
        self.config, self.mesh = config, mesh
        self.num_classes, self.in_channels = NUM_CLASSES["imagenet"], 3
        self.per_process = config.optim.batch_size // jax.process_count()
        self.examples = imagenet_input.examples_per_process(config.data) * jax.process_count()

    def epoch(self, step: int) -> float:
        return step * self.config.optim.batch_size / self.examples

    def compile(self, graphdef: Any, start_step: int) -> None:
        from resdepth import imagenet_input

        optimizer = steps.make_optimizer(self.config)
        self._train_step = jax.jit(
            lambda state, batch: steps.apply_gradients(self.config, graphdef, optimizer, state,
                                                       batch["images"], batch["labels"]),
            donate_argnums=0)
        self._logits = steps.make_logits_step(graphdef)
        batches = imagenet_input.train_batches(self.config.data, self.per_process,
                                               self.config.run.seed, start_step,
                                               self.config.data.image_size)
        self._batches: Iterator[Any] = imagenet_input.prefetch_to_device(
            batches, 2, steps.batch_sharded(self.mesh))

    def train_step(self, state: steps.TrainState, step: int) -> steps.TrainState:
        return self._train_step(state, next(self._batches))

    def evaluate(self, state: steps.TrainState) -> dict[str, float]:
        """Top-1 and top-5 centre-crop error on the validation split (what most tools report),
        on its first `run.eval_examples` images (0: all); the paper's 10-crop and multi-scale
        figures come from `resdepth evaluate`."""
        import itertools

        from resdepth import imagenet_input, multicrop

        examples = imagenet_input.eval_images(self.config.data)
        if self.config.run.eval_examples:
            examples = itertools.islice(examples, self.config.run.eval_examples)
        result = multicrop.evaluate(lambda images: np.asarray(self._logits(state, images)),
                                    examples, "center")
        return {"test_loss": None, "test_error": result["top1_error"],
                "test_top5_error": result["top5_error"]}


def make_source(config: ExperimentConfig, mesh):
    from resdepth.architectures import family_of

    if family_of(config.data.dataset) == "imagenet":
        return StreamingSource(config, mesh)
    return DeviceResidentSource(config, mesh)
