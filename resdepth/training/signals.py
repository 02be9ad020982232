"""Forward and backward signals per layer: do gradients vanish in deep plain nets (§4.1)?

The training step measures them itself (training/step.py), on the iterations `measured` picks:
a signals row of step S is iteration S's own, on its mini-batch and the state before its
update, with the net in training mode (BN on the batch's statistics) and L the mean
cross-entropy of the batch (no weight decay, no momentum):

- weight_grad_rms, per weighted layer (every convolution, then the dense head): the RMS over
  the kernel's elements of dL/dW;
- weight_rms: the RMS of the kernel W itself (their ratio is the relative step SGD takes);
- response_grad_rms, per 3x3 layer (and the CIFAR stem): the RMS over the batch's elements of
  B * dL/dy, y being the layer's response (its output after BN, before the ReLU or the
  addition) and B the batch size: the gradient of each example's own loss sum, so the figure
  does not depend on the batch size, and per element, so layers of different width compare;
- response_std: the standard deviation of y over the batch's elements (Figure 7's quantity).

Kernels of BatchNorm and biases are not weighted layers. The responses are tapped by
models/observe.py; `sinks` makes the taps' inputs and `step_signals` turns what the step
computed into the four quantities, all of it inside `lax.cond`s that run on measured
iterations only, so the one compiled step serves every iteration. For S nets side by side
(network.Lanes) every quantity is per lane.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from resdepth.config import ExperimentConfig

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


def _lane_rms(kernels: jax.Array, lanes: int) -> jax.Array:
    """Each lane's RMS of each stacked kernel: (count, ..., lanes * out) -> float32 (lanes,
    count); lane s's outputs are block s of the last axis (network.Lanes)."""
    kernels = kernels.astype(jnp.float32)
    kernels = kernels.reshape(kernels.shape[0], -1, lanes, kernels.shape[-1] // lanes)
    return jnp.sqrt(jnp.mean(jnp.square(kernels), axis=(1, 3))).T


def layer_names(graphdef: Any, state: Any) -> tuple[list[str], list[str]]:
    """(the weighted layers' names, the 3x3 layers' names), in the order of `step_signals`."""
    weighted = [name for names, _ in _weighted_kernels(state.params) for name in names]
    weighted = [weighted[index] for index in network_order(weighted)]
    model = nnx.merge(graphdef, state.params, state.batch_stats)
    responses = ["stem"] if model.spec.dataset_family == "cifar" else []
    for index, stage in enumerate(model.stages, start=1):
        convs = stage.first.response_layers
        responses += [f"stage{index}.block{b}.conv{c + 1}"
                      for b in range(stage.num_repeated + 1) for c in convs]
    return weighted, responses


def measured(step: int, log_every: int, total: int) -> bool:
    """Whether iteration `step` (1-based: the one after which `step` iterations are done)
    records a signals row: the first, each logging row's (`run.log_every_steps`) and the last."""
    return step == 1 or step % log_every == 0 or step == total


def measured_steps(config: ExperimentConfig, first: int, count: int) -> list[bool]:
    """`measured` for iterations first + 1 .. first + count of a run of `config` (the
    iterations a call that starts after `first` trains): the training step's `measuring`."""
    every, total = config.run.log_every_steps, config.optim.total_steps
    return [measured(first + offset, every, total) for offset in range(1, count + 1)]


def sinks(model: nnx.Module, measuring: jax.Array) -> list[jax.Array]:
    """The taps' inputs of `model` (network.ResNet.sink_shapes): float32, 1 on a measured
    iteration (`measuring`, bool ()) and 0 otherwise; their gradients carry the measures."""
    flag = measuring.astype(jnp.float32)
    return [jnp.full(shape, flag) for shape in model.sink_shapes()]


def train_gradients(model: nnx.Module, images: jax.Array,
                    loss_of: Callable[[jax.Array], tuple[jax.Array, Any]], measuring: jax.Array
                    ) -> tuple[Any, Any, dict[str, jax.Array]]:
    """The gradient a training step takes, and its layer signals where `measuring` (bool ()).

    `model` (network.ResNet, one net or S lanes) runs in training mode on `images` with its
    responses tapped; `loss_of(logits) -> (loss, aux)` makes the loss it differentiates.
    Returns (aux, the loss's gradient with respect to the Param state, `step_signals`: float32
    (lanes, layers) per quantity). Traced, not jitted.
    """
    params = nnx.state(model, nnx.Param)

    def loss_fn(model: nnx.Module, taps: list[jax.Array]) -> tuple[jax.Array, Any]:
        return loss_of(model.forward_with_responses(images, train=True, sinks=taps)[0])

    grad_fn = nnx.value_and_grad(loss_fn, argnums=(nnx.DiffState(0, nnx.Param), 1), has_aux=True)
    (_, aux), (grads, tap_grads) = grad_fn(model, sinks(model, measuring))
    return aux, grads, step_signals(measuring, params, grads, tap_grads, images.shape[0],
                                    model.lanes)


def step_signals(measuring: jax.Array, params: Any, grads: Any, sink_grads: list[jax.Array],
                 batch: int, lanes: int) -> dict[str, jax.Array]:
    """The module docstring's four quantities from what a training step computed: the Param
    state and its cross-entropy gradient, and the gradients with respect to `sinks` (each
    response's measures, (..., lanes, 3): mean (dL/dy)^2, mean y, mean y^2, models/observe.py),
    for a batch of `batch` images per lane. {"weight_grad_rms", "weight_rms"}: float32 (lanes,
    weighted layers), {"response_grad_rms", "response_std"}: float32 (lanes, 3x3 layers), in
    `layer_names`' order; zeros unless `measuring`. Traced, not jitted."""
    def measure(params, grads, sink_grads):
        kernels = _weighted_kernels(params)
        order = network_order([name for names, _ in kernels for name in names])
        per_lane = lambda array: jnp.moveaxis(array, -1, 0).reshape(lanes, -1)  # noqa: E731
        squared_grads, means, squares = zip(*((g[..., 0], g[..., 1], g[..., 2])
                                              for g in sink_grads))
        return {
            "weight_grad_rms": jnp.concatenate(
                [_lane_rms(k, lanes) for _, k in _weighted_kernels(grads)], axis=1)[:, order],
            "weight_rms": jnp.concatenate([_lane_rms(k, lanes) for _, k in kernels],
                                          axis=1)[:, order],
            "response_grad_rms": batch * jnp.sqrt(jnp.concatenate(
                [per_lane(g) for g in squared_grads], axis=1)),
            "response_std": jnp.sqrt(jnp.maximum(jnp.concatenate(
                [per_lane(s - jnp.square(m)) for m, s in zip(means, squares)], axis=1), 0.0))}

    operands = (params, grads, sink_grads)
    shapes = jax.eval_shape(measure, *operands)
    return lax.cond(measuring, measure,
                    lambda *_: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                    *operands)
