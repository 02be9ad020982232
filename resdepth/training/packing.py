"""Packed seeds: several single-seed TrainStates as one, and per-seed reads and writes of it.

A packed state is either a tuple of S single-seed states (CPU: S copies of the step in one
program) or one state with a leading seed axis (accelerators: the step `jax.vmap`ped over it);
`step.stacks_seeds` chooses. The helpers here also take a single (unpacked) state, as one seed,
so the training loop reads and writes one run and a pack alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from resdepth.training.mesh import host_value, replicated, replicated_scalar
from resdepth.training.step import TrainState


def pack_states(states: list[TrainState], mesh: Mesh, stacked: bool
                ) -> TrainState | tuple[TrainState, ...]:
    """S single-seed states as one packed state: stacked on a leading seed axis, or a tuple
    (`step.stacks_seeds` says which a backend takes)."""
    return stack_states(states, mesh) if stacked else tuple(states)


def stack_states(states: list[TrainState], mesh: Mesh) -> TrainState:
    """S single-seed states -> one state with a leading seed axis (S, ...), replicated."""
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    return jax.device_put(stacked, replicated(mesh))


def seed_slice(state, index: int) -> TrainState:
    """Seed `index`'s single-seed state out of a packed state."""
    if isinstance(state, tuple):
        return state[index]
    return jax.tree.map(lambda leaf: leaf[index], state)


def seed_values(state, field: str) -> list[Any]:
    """The value of scalar `field` for each seed of a packed (or single) state, on the host."""
    if isinstance(state, tuple):
        return [host_value(getattr(each, field)).item() for each in state]
    return np.atleast_1d(host_value(getattr(state, field))).tolist()


def replace_per_seed(state, mesh: Mesh, **per_seed: list[Any]):
    """`state` with scalar fields set per seed, e.g. warmup_active=[True, False]."""
    if isinstance(state, tuple):
        return tuple(dataclasses.replace(each, **{
            name: replicated_scalar(np.asarray(values[i], getattr(each, name).dtype), getattr(each, name).dtype, mesh)
            for name, values in per_seed.items()}) for i, each in enumerate(state))
    if state.step.ndim == 0:
        return dataclasses.replace(state, **{
            name: replicated_scalar(values[0], getattr(state, name).dtype, mesh)
            for name, values in per_seed.items()})
    return dataclasses.replace(state, **{
        name: replicated_scalar(np.asarray(values), getattr(state, name).dtype, mesh)
        for name, values in per_seed.items()})
