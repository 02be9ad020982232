"""Forward and backward signals per layer: do gradients vanish in deep plain nets (§4.1)?

`layer_signals` measures, on one mini-batch and one state, with the net in training mode (BN on
the batch's statistics) and L the mean cross-entropy of the batch (no weight decay, no momentum):

- weight_grad_rms, per weighted layer (every convolution, then the dense head): the RMS over
  the kernel's elements of dL/dW;
- weight_rms: the RMS of the kernel W itself (their ratio is the relative step SGD takes);
- response_grad_rms, per 3x3 layer (and the CIFAR stem): the RMS over the batch's elements of
  B * dL/dy, y being the layer's response (its output after BN, before the ReLU or the
  addition) and B the batch size: the gradient of each example's own loss sum, so the figure
  does not depend on the batch size, and per element, so layers of different width compare;
- response_std: the standard deviation of y over the batch's elements (Figure 7's quantity).

Kernels of BatchNorm and biases are not weighted layers. The gradient with respect to a
response is taken through zero "probes" the net adds to it (models/network.py). The training
loop records a row at iteration 0 and at each logging row (rundir/signals.py); nothing here
runs in the training step itself.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from resdepth.config import ExperimentConfig
from resdepth.training.step import Augmentation, DeviceDataset, TrainState, training_batch

Kernels = list[tuple[list[str], jax.Array]]  # (names, kernels stacked on a leading block axis)


def _weighted_kernels(params: Any) -> Kernels:
    """Every weighted layer's kernel as (names, kernels stacked on a leading axis): a scanned
    stage's stacked kernels stay one entry (one name per block), so the measurement does not
    grow with depth. `params` is the net's Param state (stem, stages[i].first / .repeated,
    head); entries are conv by conv, `network_order` puts them block by block."""
    layers: Kernels = [(["stem"], params["stem"]["conv"]["kernel"][None])]
    for index in sorted(params["stages"]):
        stage, name = params["stages"][index], f"stage{index + 1}"
        for part, first_block in (("first", 0), ("repeated", 1)):
            if part not in stage:
                continue
            block, stacked = stage[part], part == "repeated"
            convs = [(f"conv{j + 1}", block["layers"][j]["conv"]["kernel"])
                     for j in sorted(block["layers"])]
            if "projection" in block:
                convs.append(("shortcut", block["projection"]["conv"]["kernel"]))
            for conv_name, kernel in convs:
                count = kernel.shape[0] if stacked else 1
                layers.append(([f"{name}.block{first_block + b}.{conv_name}" for b in range(count)],
                               kernel if stacked else kernel[None]))
    layers.append((["head"], params["head"]["kernel"][None]))
    return layers


def network_order(names: list[str]) -> np.ndarray:
    """The permutation that lists `_weighted_kernels`' layers in network order: the stem, each
    block's convolutions and shortcut, block after block, then the head."""
    def position(index: int) -> tuple:
        name = names[index]
        if name in ("stem", "head"):
            return (0 if name == "stem" else 2,)
        stage, block, conv = name.split(".")
        return (1, int(stage.removeprefix("stage")), int(block.removeprefix("block")),
                conv == "shortcut", conv)

    return np.array(sorted(range(len(names)), key=position), np.int32)


def _rms(array: jax.Array) -> jax.Array:
    """Root mean square over every axis but the first: (count, ...) -> (count,), float32."""
    array = array.astype(jnp.float32)
    return jnp.sqrt(jnp.mean(jnp.square(array), axis=tuple(range(1, array.ndim))))


def layer_names(graphdef: Any, state: TrainState) -> tuple[list[str], list[str]]:
    """(the weighted layers' names, the 3x3 layers' names), in the order of `layer_signals`."""
    weighted = [name for names, _ in _weighted_kernels(state.params) for name in names]
    weighted = [weighted[index] for index in network_order(weighted)]
    model = nnx.merge(graphdef, state.params, state.batch_stats)
    responses = ["stem"] if model.spec.dataset_family == "cifar" else []
    for index, stage in enumerate(model.stages, start=1):
        convs = stage.first.response_layers
        responses += [f"stage{index}.block{b}.conv{c + 1}"
                      for b in range(stage.num_repeated + 1) for c in convs]
    return weighted, responses


def layer_signals(graphdef: Any, params: Any, batch_stats: Any, images: jax.Array,
                  labels: jax.Array) -> dict[str, jax.Array]:
    """The module docstring's four quantities on float images (B, H, W, C) and int labels (B,):
    {"weight_grad_rms", "weight_rms"}: float32 (weighted layers,), {"response_grad_rms",
    "response_std"}: float32 (3x3 layers,), in `layer_names`' order. Traced, not jitted."""
    model = nnx.merge(graphdef, params, batch_stats)
    probes = [jnp.zeros(shape, jnp.float32) for shape in model.response_shapes(images.shape)]

    def loss(model: nnx.Module, probes: list[jax.Array]) -> tuple[jax.Array, list[jax.Array]]:
        logits, moments = model.forward_with_responses(images, train=True, probes=probes)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return jnp.mean(losses), moments

    grad = nnx.value_and_grad(loss, argnums=(nnx.DiffState(0, nnx.Param), 1), has_aux=True)
    (_, moments), (param_grads, probe_grads) = grad(model, probes)
    kernels = _weighted_kernels(params)
    order = network_order([name for names, _ in kernels for name in names])
    gradients = _weighted_kernels(param_grads)
    batch = images.shape[0]
    # Each probe gradient is (blocks, convs, B, H, W, C): its RMS over the last four axes.
    response_grads = [jnp.sqrt(jnp.mean(jnp.square(batch * g.astype(jnp.float32)),
                                        axis=(2, 3, 4, 5))).reshape(-1) for g in probe_grads]
    stds = [jnp.sqrt(jnp.maximum(m[..., 1] - jnp.square(m[..., 0]), 0.0)).reshape(-1)
            for m in moments]
    return {"weight_grad_rms": jnp.concatenate([_rms(k) for _, k in gradients])[order],
            "weight_rms": jnp.concatenate([_rms(k) for _, k in kernels])[order],
            "response_grad_rms": jnp.concatenate(response_grads),
            "response_std": jnp.concatenate(stds)}


def make_signals_step(config: ExperimentConfig, graphdef: Any, mesh: Mesh
                      ) -> Callable[[TrainState, DeviceDataset, jax.Array], dict[str, jax.Array]]:
    """Jitted (state, on-device dataset, indices (B,)) -> `layer_signals` on the mini-batch the
    iteration `state.step` trains on (step.training_batch: the same images and augmentation).

    One function per net and augmentation in a process: the seeds of a sweep (and a test
    session's runs) share its traced and compiled program rather than each tracing its own."""
    return _signals_step(graphdef, mesh, Augmentation.of(config))


@functools.lru_cache(maxsize=16)
def _signals_step(graphdef: Any, mesh: Mesh, augmentation: Augmentation
                  ) -> Callable[[TrainState, DeviceDataset, jax.Array], dict[str, jax.Array]]:
    batch = training_batch(augmentation, mesh)

    def signals(state: TrainState, data: DeviceDataset, indices: jax.Array) -> dict[str, jax.Array]:
        return layer_signals(graphdef, state.params, state.batch_stats, *batch(state, data, indices))

    return jax.jit(signals)


@functools.lru_cache(maxsize=16)
def make_batch_signals_step(graphdef: Any
                            ) -> Callable[[TrainState, dict[str, jax.Array]], dict[str, jax.Array]]:
    """Jitted (state, {"images", "labels"}) -> `layer_signals`, for a batch prepared on the
    host (ImageNet's tf.data); one function per net in a process, like `make_signals_step`."""
    def batch_signals(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return layer_signals(graphdef, state.params, state.batch_stats, batch["images"],
                             batch["labels"])

    return jax.jit(batch_signals)
