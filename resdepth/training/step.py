"""The pure, compiled training and evaluation steps, data-parallel over a device mesh.

`train_step(state, data, batch_indices, measuring) -> (state, signals)` is one SGD iteration
on one global batch (or k in one call); on the iterations `measuring` names it also records its
layer signals (training/signals.py), through the same compiled program.
It is jitted once with the state donated; the batch is split over the mesh's `data` axis with a
named sharding while parameters and optimizer state are replicated. BatchNorm statistics are
means over the batch axis of a globally sharded array, so XLA computes them over the global
batch. Nothing in here prints or touches the host; the loop in `training/loop.py` owns all I/O.
The mesh and the host transfers live in `training/mesh.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from resdepth.data.augment import normalize, random_crop_flip
from resdepth.config import ExperimentConfig
from resdepth.dataset_facts import family_of
from resdepth.models.network import ModelSpec
from resdepth.training import signals as layer_signals
from resdepth.training.mesh import batch_sharded, replicated, replicated_scalar


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """Everything an iteration reads and writes; all leaves are arrays, so it is one pytree.

    The interval sums (`loss_sum`, `error_sum`, `examples_seen`) accumulate training metrics on
    the device between logging points and are checkpointed, so a resumed run logs the same rows.
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array  # int32 (), iterations done
    rng: jax.Array  # uint32 key data; augmentation uses fold_in(rng, step)
    warmup_active: jax.Array  # bool (): learning rate held at the warm-up value (§4.2)
    lr_scale: jax.Array  # float32 (): product of the plateau decays (1.0 on fixed schedules)
    loss_sum: jax.Array  # float32 (): summed per-example loss since the last log row
    error_sum: jax.Array  # float32 (): misclassified examples since the last log row
    examples_seen: jax.Array  # float32 (): examples since the last log row


def model_spec(config: ExperimentConfig, num_classes: int, backend: str = "") -> ModelSpec:
    """The net of `config`, built for `backend` ("": the one this process computes on)."""
    model = config.model
    return ModelSpec(family_of(config.data.dataset), model.depth, model.residual, model.shortcut,
                     num_classes, model.compute_dtype, model.remat, model.bn_group_size, backend)


def make_optimizer(config: ExperimentConfig) -> optax.GradientTransformation:
    """L2 weight decay on every parameter, then heavy-ball momentum (the learning rate is
    applied in the step because it depends on the warm-up state, not only on the step)."""
    return optax.chain(optax.add_decayed_weights(config.optim.weight_decay),
                       optax.trace(decay=config.optim.momentum))


def learning_rate(config: ExperimentConfig, step: jax.Array, warmup_active: jax.Array,
                  lr_scale: jax.Array) -> jax.Array:
    """The learning rate of iteration `step` (0-based), float32 ().

    The base rate times `lr_scale` (plateau decays) divided by 10 at each boundary passed; the
    warm-up rate instead while the warm-up is active and `step` is before `warmup_end_step`, so
    neither the warm-up cap nor a decay boundary is ever masked by a warm-up that never switched.
    """
    optim = config.optim
    decays = jnp.float32(0)
    if optim.lr_schedule == "steps":
        for boundary in optim.lr_boundaries_steps:
            decays = decays + (step >= boundary).astype(jnp.float32)
    scheduled = optim.learning_rate * lr_scale * jnp.float32(optim.lr_decay_factor) ** decays
    warm = jnp.logical_and(warmup_active, step < warmup_end_step(config))
    return jnp.where(warm, optim.warmup_learning_rate, scheduled).astype(jnp.float32)


def uses_warmup(config: ExperimentConfig) -> bool:
    """§4.2's warm-up applies to nets at least `warmup_min_depth` deep, plain or residual alike."""
    return config.model.depth >= config.optim.warmup_min_depth


def warmup_end_step(config: ExperimentConfig) -> int:
    """The iteration by which the warm-up is over whatever the training error: the cap
    `warmup_max_steps` or the first decay boundary, whichever comes first."""
    optim = config.optim
    ends = [optim.warmup_max_steps]
    if optim.lr_schedule == "steps" and optim.lr_boundaries_steps:
        ends.append(min(optim.lr_boundaries_steps))
    return min(ends)


def warmup_cap_reason(config: ExperimentConfig) -> str:
    """Why a warm-up still active at `warmup_end_step` ends there."""
    optim = config.optim
    boundaries = optim.lr_boundaries_steps if optim.lr_schedule == "steps" else []
    if boundaries and min(boundaries) < optim.warmup_max_steps:
        return "decay_boundary"
    return "warmup_max_steps"


def init_state(config: ExperimentConfig, model: nnx.Module, mesh: Mesh) -> tuple[Any, TrainState]:
    """(graphdef, replicated TrainState) for a freshly initialized model."""
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return graphdef, jax.device_put(fresh_state(config, params, batch_stats, mesh),
                                    replicated(mesh))


def fresh_state(config: ExperimentConfig, params: Any, batch_stats: Any, mesh: Mesh) -> TrainState:
    """The TrainState of iteration 0 around `params` and `batch_stats` (arrays, or abstract
    ones under `jax.eval_shape` for a program lowered without training)."""
    return TrainState(
        params=params, batch_stats=batch_stats,
        opt_state=make_optimizer(config).init(params),
        step=jnp.int32(0),
        rng=jax.random.key_data(jax.random.key(config.run.seed)),
        warmup_active=jnp.bool_(uses_warmup(config)),
        lr_scale=jnp.float32(1.0),
        **fresh_interval_sums(mesh),
    )


def fresh_interval_sums(mesh: Mesh) -> dict[str, jax.Array]:
    """Zeroed interval sums, each its own buffer (a donated state may not alias one twice)."""
    return {name: replicated_scalar(np.zeros(()), np.float32, mesh)
            for name in ("loss_sum", "error_sum", "examples_seen")}


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DeviceDataset:
    """A small dataset resident on the devices (replicated), passed to the step as an argument
    rather than closed over, so it is not baked into the compiled program as a constant.

    train_images uint8 (N, H, W, C); train_labels int32 (N,); mean_image float32 (H, W, C).
    """

    train_images: jax.Array
    train_labels: jax.Array
    mean_image: jax.Array


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """How a training batch is augmented: config.data's augment, pad_pixels and random_flip."""

    augment: bool
    pad_pixels: int
    random_flip: bool

    @classmethod
    def of(cls, config: ExperimentConfig) -> "Augmentation":
        return cls(config.data.augment, config.data.pad_pixels, config.data.random_flip)


def training_batch(augmentation: Augmentation, mesh: Mesh
                   ) -> Callable[[TrainState, DeviceDataset, jax.Array], tuple[jax.Array, jax.Array]]:
    """The pure `(state, data, indices (B,)) -> (images float32 (B, H, W, C), labels int32
    (B,))` of the iteration `state.step` trains on: gathered from the on-device dataset,
    mean-subtracted and augmented with the key fold_in(rng, step), sharded over `data`."""
    augment = augmentation.augment
    pad, flip = augmentation.pad_pixels, augmentation.random_flip

    def batch(state: TrainState, data: DeviceDataset, indices: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
        images = normalize(data.train_images[indices], data.mean_image)
        if augment:
            key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
            images = random_crop_flip(key, images, pad, flip)[0]
        images = jax.lax.with_sharding_constraint(images, batch_sharded(mesh))
        return images, data.train_labels[indices]

    return batch


def train_iterations(config: ExperimentConfig, graphdef: Any, mesh: Mesh
                     ) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """The pure (not jitted) SGD iterations of one run on an on-device dataset (CIFAR-10, digits).

    `(state, data, indices, measuring) -> (state, signals)`: `indices` int32 are the global
    batches' images, (B,) for one iteration or (k, B) for k in one call (`run.steps_per_call`),
    sharded over `data` on their last axis; the step gathers the images on the devices and
    augments them there. `measuring` bool, (k,) or () for all k alike, says which iterations
    record their layer signals (training/signals.py); `signals` holds each iteration's,
    (k, layers) per quantity, zeros where not measured.
    """
    optimizer = make_optimizer(config)
    batch = training_batch(Augmentation.of(config), mesh)

    def step(state: TrainState, data: DeviceDataset, indices: jax.Array, measuring: jax.Array
             ) -> tuple[TrainState, dict[str, jax.Array]]:
        return apply_gradients(config, graphdef, optimizer, state, *batch(state, data, indices),
                               measuring)

    def steps(state: TrainState, data: DeviceDataset, indices: jax.Array, measuring: jax.Array
              ) -> tuple[TrainState, dict[str, jax.Array]]:
        # Every call is a scan over its iterations, one iteration included (XLA removes a loop
        # of one trip), so 1 or k iterations per call compute bit-identical results.
        if indices.ndim == 1:
            indices = indices[None]
        measuring = jnp.broadcast_to(measuring, indices.shape[:1])  # () stands for every one
        body = lambda carry, xs: step(carry, data, *xs)  # noqa: E731
        return jax.lax.scan(body, state, (indices, measuring))

    return steps  # the compiled program's name, jit_steps, in the compilation cache


def make_train_step(config: ExperimentConfig, graphdef: Any, mesh: Mesh
                    ) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """`train_iterations` jitted with the state donated; one program per indices shape."""
    return jax.jit(train_iterations(config, graphdef, mesh), donate_argnums=0)


def make_batch_step(config: ExperimentConfig, graphdef: Any
                    ) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Jitted (state, {"images": float32 (B, H, W, C), "labels": int32 (B,)}, measuring bool
    ()) -> (state, signals): one SGD iteration on a batch prepared on the host (ImageNet's
    tf.data), the state donated; signals as `apply_gradients`."""
    optimizer = make_optimizer(config)
    return jax.jit(lambda state, batch, measuring: apply_gradients(
        config, graphdef, optimizer, state, batch["images"], batch["labels"], measuring),
        donate_argnums=0)


def apply_gradients(config: ExperimentConfig, graphdef: Any, optimizer: optax.GradientTransformation,
                    state: TrainState, images: jax.Array, labels: jax.Array,
                    measuring: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD iteration on float images (B, H, W, C) and int labels (B,); traced, not jitted.

    Returns the new state and, where `measuring` (bool ()), the layer signals of this
    iteration (training/signals.py: float32 (layers,) per quantity, zeros otherwise).
    """
    model = nnx.merge(graphdef, state.params, state.batch_stats)

    def loss_of(logits: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return jnp.mean(losses), (losses, logits)

    (losses, logits), grads, lanes = layer_signals.train_gradients(model, images, loss_of,
                                                                   measuring)
    signals = {name: values[0] for name, values in lanes.items()}  # one net: one lane
    rate = learning_rate(config, state.step, state.warmup_active, state.lr_scale)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: p - rate * u, state.params, updates)
    errors = jnp.sum(jnp.argmax(logits, axis=-1) != labels)
    return dataclasses.replace(
        state, params=params, batch_stats=nnx.state(model, nnx.BatchStat), opt_state=opt_state,
        step=state.step + 1,
        loss_sum=state.loss_sum + jnp.sum(losses),
        error_sum=state.error_sum + errors.astype(jnp.float32),
        examples_seen=state.examples_seen + labels.shape[0],
    ), signals


def make_eval_step(graphdef: Any) -> Callable[..., jax.Array]:
    """Jitted (state, images, labels, mask, mean_image) -> float32 (3,): summed loss, errors, count.

    images uint8 (B, H, W, C), labels int32 (B,), mask float32 (B,) 0 on the padding of the last
    batch, mean_image float32 (H, W, C).
    """

    def evaluate(state: TrainState, images, labels, mask, mean_image):
        model = nnx.merge(graphdef, state.params, state.batch_stats)
        logits = model(normalize(images, mean_image), train=False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        errors = (jnp.argmax(logits, axis=-1) != labels).astype(jnp.float32)
        return jnp.stack([jnp.sum(losses * mask), jnp.sum(errors * mask), jnp.sum(mask)])

    return jax.jit(evaluate)


def make_logits_step(graphdef: Any) -> Callable[[TrainState, jax.Array], jax.Array]:
    """Jitted (state, float32 images (N, H, W, C), mean-subtracted) -> logits (N, classes), in
    inference mode; one compiled program per image shape."""

    def logits(state: TrainState, images: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state.params, state.batch_stats)(images, train=False)

    return jax.jit(logits)
