"""The compiled SGD iterations of a pack, in each layout (packing/states.py).

"tuple" and "vmap" run the single run's pure iterations (training/step.py): S copies in one
program, or `jax.vmap`ped over a stacked state. "wide" and "grouped" train S runs of one shape
as one net (network.ResNet with the runs as its lanes: packing/net.py) on a
`ChannelPackedState`.
Each run keeps everything it has alone: its batch (its own indices, data order and
augmentation key), its learning rate (its own warm-up state), its loss, errors and interval
sums. Row i of the packed batch holds image i of every run's batch, run s's in channel block s;
the objective is the sum of the runs' mean losses, whose gradient for run s's parameters is the
gradient of run s's own loss. The update is elementwise, with each run's learning rate on its
blocks of every leaf, so it is the update each run makes alone.

A run whose loss, parameters or BatchNorm statistics are non-finite in an iteration has a NaN
added to its loss sum, so the loop sees it diverge at the iteration it would alone, even where
the wide layout's guard (packing/net.py `isolate_runs`) has kept its inf or NaN activations
from reaching its own loss; the other runs go on unaffected.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from resdepth.config import ExperimentConfig
from resdepth.data.augment import normalize, random_crop_flip
from resdepth.training import signals as layer_signals
from resdepth.training.mesh import batch_sharded
from resdepth.training.packing.net import per_run_any
from resdepth.training.step import (
    DeviceDataset, TrainState, learning_rate, make_optimizer, train_iterations)


def per_run(values: jax.Array, width: int) -> jax.Array:
    """(S,) per-run values -> (width,): each run's value over its block of a last axis."""
    return jnp.repeat(values, width // values.shape[0])


def make_channel_packed_step(config: ExperimentConfig, graphdef: Any, mesh: Mesh, runs: int
                             ) -> Callable[[Any, DeviceDataset, jax.Array], Any]:
    """Jitted (ChannelPackedState, data, indices, measuring) -> (ChannelPackedState, signals),
    the state donated.

    `graphdef` is the packed net's (net.packed_graphdef); indices int32 (S, B) for
    one iteration or (S, k, B) for k, sharded over `data` on the batch axis; measuring bool
    () or (k,), as step.train_iterations'. signals: float32 (k, S, layers) per quantity,
    each run's own (training/signals.py measures per lane).
    """
    optimizer = make_optimizer(config)
    augment = config.data.augment
    pad, flip = config.data.pad_pixels, config.data.random_flip

    def step(state, data: DeviceDataset, indices: jax.Array, measuring: jax.Array):
        images, labels = [], []
        for run in range(runs):
            batch = normalize(data.train_images[indices[run]], data.mean_image)
            if augment:
                key = jax.random.fold_in(jax.random.wrap_key_data(state.rng[run]), state.step[run])
                batch = random_crop_flip(key, batch, pad, flip)[0]
            images.append(batch)
            labels.append(data.train_labels[indices[run]])
        images = jax.lax.with_sharding_constraint(jnp.concatenate(images, axis=-1),
                                                  batch_sharded(mesh))
        labels = jnp.stack(labels, axis=1)  # (B, S)
        model = nnx.merge(graphdef, state.params, state.batch_stats)

        def loss_of(logits):  # logits (B, S, classes)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # (B, S)
            return jnp.sum(jnp.mean(losses, axis=0)), (losses, logits)

        (losses, logits), grads, signals = layer_signals.train_gradients(model, images, loss_of,
                                                                         measuring)
        rate = learning_rate(config, state.step, state.warmup_active, state.lr_scale)  # (S,)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = jax.tree.map(lambda p, u: p - per_run(rate, p.shape[-1]) * u,
                              state.params, updates)
        batch_stats = nnx.state(model, nnx.BatchStat)
        loss_sums = jnp.sum(losses, axis=0)
        not_finite = lambda x: ~jnp.isfinite(x)  # noqa: E731
        broken = (not_finite(loss_sums) | per_run_any(state.params, runs, not_finite)
                  | per_run_any(batch_stats, runs, not_finite))
        errors = jnp.sum(jnp.argmax(logits, axis=-1) != labels, axis=0).astype(jnp.float32)
        return dataclasses.replace(
            state, params=params, batch_stats=batch_stats, opt_state=opt_state,
            step=state.step + 1,
            loss_sum=state.loss_sum + jnp.where(broken, jnp.float32(jnp.nan), loss_sums),
            error_sum=state.error_sum + errors,
            examples_seen=state.examples_seen + labels.shape[0],
        ), signals

    def steps(state, data: DeviceDataset, indices: jax.Array, measuring: jax.Array):
        # A scan over the call's iterations, one included, as step.train_iterations.
        if indices.ndim == 2:
            indices = indices[:, None]
        measuring = jnp.broadcast_to(measuring, indices.shape[1:2])  # () stands for every one
        body = lambda carry, xs: step(carry, data, *xs)  # noqa: E731
        return jax.lax.scan(body, state, (jnp.swapaxes(indices, 0, 1), measuring))

    return jax.jit(steps, donate_argnums=0)


def make_step(config: ExperimentConfig, mesh: Mesh, layout: str, run_graphdefs: list[Any],
              packed_net: Any = None) -> Callable[..., tuple[Any, Any]]:
    """The jitted (state, data, indices (S, B) or (S, k, B), measuring) -> (state, signals) of
    a pack of `len(run_graphdefs)` runs laid out by `layout`, the state donated; `signals_of`
    reads one run's signals from what it returns.

    `run_graphdefs`: each run's own net (a tuple pack's runs may be plain and residual);
    `packed_net`: the wide or grouped layout's net (net.packed_graphdef).
    """
    if layout in ("wide", "grouped"):
        return make_channel_packed_step(config, packed_net, mesh, len(run_graphdefs))
    if layout == "vmap":
        iterations = train_iterations(config, run_graphdefs[0], mesh)
        return jax.jit(jax.vmap(iterations, in_axes=(0, None, 0, None)), donate_argnums=0)
    each = [train_iterations(config, graphdef, mesh) for graphdef in run_graphdefs]

    def each_run(states: tuple[TrainState, ...], data: DeviceDataset, indices: jax.Array,
                 measuring: jax.Array) -> tuple[tuple[TrainState, ...], tuple[Any, ...]]:
        trained = [iterations(state, data, indices[i], measuring)
                   for i, (iterations, state) in enumerate(zip(each, states))]
        return tuple(state for state, _ in trained), tuple(signals for _, signals in trained)

    return jax.jit(each_run, donate_argnums=0)


def signals_of(layout: str, signals: Any, position: int) -> dict[str, jax.Array]:
    """The signals of the run at `position` from what `make_step`'s program of `layout`
    returned: (k, layers) per quantity, as a run alone gets them (step.train_iterations)."""
    if layout == "tuple":
        return signals[position]
    if layout == "vmap":  # (S, k, layers)
        return {name: values[position] for name, values in signals.items()}
    return {name: values[:, position] for name, values in signals.items()}  # (k, S, layers)
