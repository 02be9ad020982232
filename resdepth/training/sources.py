"""Where a run's batches come from, and how it is evaluated: the two kinds of dataset.

- `DeviceResidentSource` (CIFAR-10, digits): the whole dataset lives on the devices as uint8;
  each iteration sends only the batch's indices, and the step gathers and augments on device.
- `StreamingSource` (ImageNet): tf.data decodes and augments on the host's cores, each process
  reads its own part, and batches are prefetched onto the devices while the previous step runs.

Both offer `compile(graphdef, start_step)`, `train_steps(state, step, count) -> (state,
signals)` (the layer signals of training/signals.py, which the step measures on the iterations
that record them) and `evaluate(state, graphdef) -> dict` for a run (training/trainer.py), and
both are functions of (seed, step) alone, so runs resume exactly. The device-resident source
also gives any seed's batch indices, which a pack of runs (training/packing/) trains on together.

With `optim.lr_schedule = "plateau"` both hold out `data.plateau_holdout_examples` training images:
they never enter training, and each evaluation reports their error as `holdout_error` beside the
test (ImageNet: validation) error, so that the "divide by 10 when the error plateaus" decision
never looks at the images the tables report.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from resdepth.training import signals as layer_signals
from resdepth.training import step as steps
from resdepth.errors import InvalidChoice
from resdepth.config import ExperimentConfig
from resdepth.data.datasets import BatchOrder, InMemoryDataset, load_dataset
from resdepth.dataset_facts import IN_CHANNELS, NUM_CLASSES
from resdepth.training.mesh import (
    DATA_AXIS, batch_sharded, host_value, replicated, replicated_scalar, to_global)


# The held-out images of the device-resident datasets are the last ones of this fixed permutation
# of the training set: the same images for every seed, so runs of one experiment stay comparable.
HOLDOUT_ORDER_SEED = 0


def plateau_holdout_examples(config: ExperimentConfig) -> int:
    """How many training images the plateau rule holds out: 0 unless lr_schedule is "plateau"
    (config.py validates the count)."""
    return config.data.plateau_holdout_examples if config.optim.lr_schedule == "plateau" else 0


def split_off_holdout(data: InMemoryDataset, count: int
                      ) -> tuple[InMemoryDataset, tuple[np.ndarray, np.ndarray]]:
    """(the dataset without `count` held-out training images, (their images, labels)).

    The held-out images are the last `count` of a fixed permutation of the training images; both
    parts keep the original order, and the mean image is recomputed from the rest alone.
    """
    size = len(data.train_images)
    if count >= size:
        raise InvalidChoice(f"data.plateau_holdout_examples = {count} leaves none of the {size} "
                            f"{data.name} training images to train on; hold out fewer")
    order = np.random.default_rng(HOLDOUT_ORDER_SEED).permutation(size)
    keep, held = np.sort(order[:-count]), np.sort(order[-count:])
    train_images = data.train_images[keep]
    rest = dataclasses.replace(
        data, train_images=train_images, train_labels=data.train_labels[keep],
        mean_image=train_images.astype(np.float64).mean(axis=0).astype(np.float32))
    return rest, (data.train_images[held], data.train_labels[held])


class DeviceResidentSource:
    """CIFAR-10 or digits, held on the devices (see data/datasets.py and data/augment.py)."""

    def __init__(self, config: ExperimentConfig, mesh, data: InMemoryDataset | None = None,
                 backend: str = "cpu"):
        self.config, self.mesh, self.backend = config, mesh, backend
        self.data = data if data is not None else load_dataset(config.data)
        holdout = plateau_holdout_examples(config)
        self.holdout: tuple[np.ndarray, np.ndarray] | None = None
        if holdout:
            self.data, self.holdout = split_off_holdout(self.data, holdout)
        self.num_classes = self.data.num_classes
        self.in_channels = self.data.train_images.shape[-1]
        self._orders: dict[int, BatchOrder] = {}
        self._eval_steps: dict[Any, Any] = {}  # one compiled evaluation per net
        self.device_data: steps.DeviceDataset | None = None

    def order(self, seed: int) -> BatchOrder:
        """The batch order of a run of `seed` (each run has its own, a function of its seed)."""
        if seed not in self._orders:
            self._orders[seed] = BatchOrder(seed, len(self.data.train_images),
                                            self.config.optim.batch_size)
        return self._orders[seed]

    def epoch(self, step: int) -> float:
        return self.order(self.config.run.seed).epoch(step)

    def load(self) -> steps.DeviceDataset:
        """The dataset on the devices (replicated), put there once."""
        if self.device_data is None:
            everywhere = replicated(self.mesh)
            self.device_data = steps.DeviceDataset(
                to_global(self.data.train_images, everywhere),
                to_global(self.data.train_labels, everywhere),
                to_global(self.data.mean_image, everywhere))
            devices = jax.device_count()
            size = min(self.config.run.eval_batch_size, len(self.data.test_images))
            self.eval_batch_size = max(devices, math.ceil(size / devices) * devices)
        return self.device_data

    def compile(self, graphdef: Any, start_step: int) -> None:
        """The data on the devices and the run's compiled step. `start_step` is the sources'
        shared signature: here the batch order is a function of the iteration, so any step
        resumes."""
        self.load()
        self._train_step = steps.make_train_step(self.config, graphdef, self.mesh)

    def batch_indices(self, seed: int, step: int, count: int = 1) -> np.ndarray:
        """The images of iterations step .. step + count - 1 of the run of `seed`: int32 (B,)
        for one, (count, B) for several."""
        order = self.order(seed)
        if count == 1:
            return order.indices(step)
        return np.stack([order.indices(step + offset) for offset in range(count)])

    def on_devices(self, indices: np.ndarray) -> jax.Array:
        """Batch indices as one global array sharded over `data` on its last (batch) axis."""
        sharding = NamedSharding(self.mesh, PartitionSpec(*[None] * (indices.ndim - 1), DATA_AXIS))
        return to_global(indices, sharding, batch_axis=indices.ndim - 1)

    def train_steps(self, state: steps.TrainState, step: int, count: int = 1
                    ) -> tuple[steps.TrainState, dict[str, jax.Array]]:
        """The run's iterations step .. step + count - 1 in one call, and their layer signals
        (step.train_iterations: (count, layers) per quantity, zeros where not measured)."""
        indices = self.batch_indices(self.config.run.seed, step, count)
        return self._train_step(state, self.device_data, self.on_devices(indices),
                                self.measuring(step, count))

    def measuring(self, step: int, count: int) -> jax.Array:
        """bool (count,), replicated: which of iterations step .. step + count - 1 record their
        layer signals (training/signals.py `measured_steps`)."""
        return replicated_scalar(layer_signals.measured_steps(self.config, step, count), np.bool_,
                                 self.mesh)

    def evaluate(self, state: steps.TrainState, graphdef: Any) -> dict[str, float]:
        """Test loss and error (fraction) over the whole test split, single original view, of
        a run's state and net; with the plateau schedule also `holdout_loss` and
        `holdout_error` of the held-out images."""
        self.load()
        if graphdef not in self._eval_steps:
            self._eval_steps[graphdef] = steps.make_eval_step(graphdef)
        evaluate = self._eval_steps[graphdef]
        loss, error = self._loss_and_error(evaluate, state, self.data.test_images,
                                           self.data.test_labels)
        row = {"test_loss": loss, "test_error": error}
        if self.holdout is not None:
            loss, error = self._loss_and_error(evaluate, state, *self.holdout)
            row.update(holdout_loss=loss, holdout_error=error)
        return row

    def _loss_and_error(self, evaluate, state: steps.TrainState, images: np.ndarray,
                        labels: np.ndarray) -> tuple[float, float]:
        totals = np.zeros(3, np.float64)
        sharding = batch_sharded(self.mesh)
        size = self.eval_batch_size
        for start in range(0, len(images), size):
            batch_images, batch_labels = images[start:start + size], labels[start:start + size]
            mask = np.ones(len(batch_images), np.float32)
            pad = size - len(batch_images)
            if pad:
                batch_images = np.concatenate([batch_images, np.zeros((pad, *images.shape[1:]), images.dtype)])
                batch_labels = np.concatenate([batch_labels, np.zeros(pad, labels.dtype)])
                mask = np.concatenate([mask, np.zeros(pad, np.float32)])
            sums = evaluate(state, to_global(batch_images, sharding),
                                   to_global(batch_labels, sharding), to_global(mask, sharding),
                                   self.device_data.mean_image)
            totals += host_value(sums).astype(np.float64)
        return totals[0] / totals[2], totals[1] / totals[2]


class StreamingSource:
    """ImageNet through tf.data (data/imagenet_input.py); validation by the centre 224 crop."""

    def __init__(self, config: ExperimentConfig, mesh, backend: str = "cpu"):
        from resdepth.data import imagenet_input

        self.backend = backend

        holdout = plateau_holdout_examples(config)
        imagenet_input.prepare_imagenet(config.data)
        self.config, self.mesh = config, mesh
        self.num_classes, self.in_channels = NUM_CLASSES["imagenet"], IN_CHANNELS["imagenet"]
        self.per_process = config.optim.batch_size // jax.process_count()
        self.train_split, self.holdout_split = imagenet_input.holdout_splits(holdout)
        self.examples = (imagenet_input.examples_per_process(config.data, self.train_split)
                         * jax.process_count())
        if self.examples == 0:
            raise InvalidChoice(f"data.plateau_holdout_examples = {holdout} leaves no ImageNet "
                                f"training images to train on; hold out fewer")

    def epoch(self, step: int) -> float:
        return step * self.config.optim.batch_size / self.examples

    def compile(self, graphdef: Any, start_step: int) -> None:
        from resdepth.data import imagenet_input

        self._train_step = steps.make_batch_step(self.config, graphdef)
        self._logits = steps.make_logits_step(graphdef)
        batches = imagenet_input.train_batches(self.config.data, self.per_process,
                                               self.config.run.seed, start_step,
                                               self.config.data.image_size, self.train_split)
        self._batches: Iterator[Any] = imagenet_input.prefetch_to_device(
            batches, 2, batch_sharded(self.mesh))

    def train_steps(self, state: steps.TrainState, step: int, count: int = 1
                    ) -> tuple[steps.TrainState, dict[str, jax.Array]]:
        """`count` iterations, one call each (the input pipeline, not dispatch, bounds
        ImageNet), and their layer signals stacked, (count, layers) per quantity."""
        measured = []
        for measuring in layer_signals.measured_steps(self.config, step, count):
            state, signals = self._train_step(state, next(self._batches),
                                              replicated_scalar(measuring, np.bool_, self.mesh))
            measured.append(signals)
        return state, jax.tree.map(lambda *each: jax.numpy.stack(each), *measured)

    def evaluate(self, state: steps.TrainState, graphdef: Any = None) -> dict[str, float]:
        """Top-1 and top-5 centre-crop error on the validation split (what most tools report),
        on each process's first `run.eval_examples` images (0: all); with the plateau schedule
        also `holdout_error` and `holdout_top5_error`, the same test of the held-out training
        images. The paper's 10-crop and multi-scale figures come from `resdepth evaluate`."""
        top1, top5 = self._center_errors(state, "validation", self.config.run.eval_examples)
        row = {"test_loss": None, "test_error": top1, "test_top5_error": top5}
        if self.holdout_split is not None:
            top1, top5 = self._center_errors(state, self.holdout_split, 0)
            row.update(holdout_error=top1, holdout_top5_error=top5)
        return row

    def _center_errors(self, state: steps.TrainState, split: str, limit: int
                       ) -> tuple[float, float]:
        """(top-1, top-5) centre-crop error over every process's part of `split` (its first
        `limit` images, 0: all), the same on every process: the plateau rule decides on it."""
        from resdepth.data import imagenet_input, multicrop

        examples = imagenet_input.eval_images(self.config.data, split)
        if limit:
            examples = itertools.islice(examples, limit)
        result = multicrop.evaluate(lambda images: np.asarray(self._logits(state, images)),
                                    examples, "center")
        count = result["count"]
        totals = np.rint(np.array([result["top1_error"] * count, result["top5_error"] * count,
                                   count], np.float64))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            totals = np.asarray(multihost_utils.process_allgather(totals)).sum(axis=0)
        if totals[2] == 0:
            return 0.0, 0.0
        return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def make_source(config: ExperimentConfig, mesh, backend: str = "cpu"):
    """The data source of a run on `backend`: on the devices, or streamed (ImageNet)."""
    from resdepth.dataset_facts import family_of

    if family_of(config.data.dataset) == "imagenet":
        return StreamingSource(config, mesh, backend)
    return DeviceResidentSource(config, mesh, backend=backend)
