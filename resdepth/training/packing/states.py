"""Packs: several single-run TrainStates as one, and per-run reads and writes of it.

A pack is S runs of one shape trained in one compiled program, laid out by its layout
(`sweep.pack_formulation`; `layout` resolves "auto"):

  "tuple"    a tuple of S states, S copies of the step in one program; bit-identical to each
             run alone (the CPU layout); runs may differ in architecture (plain or residual)
  "vmap"     one state with a leading run axis, the pure step `jax.vmap`ped over it (XLA turns
             the convolutions into grouped ones); one architecture per pack
  "wide"     one net with the runs' channels side by side (packing/net.py): dense convolutions
             with block-diagonal kernels; plain and residual runs may share a pack
  "grouped"  the same packed net with grouped convolutions over the runs' channel blocks

The wide and grouped layouts keep a `ChannelPackedState`: every parameter, BatchNorm statistic
and momentum leaf is the S runs' leaves joined on the last axis, the scalar fields one value per
run. `seed_slice` gives a run's own state in the single-run form, which is what each run's
checkpoint holds (a run resumes alone or in any pack).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from resdepth.choices import PACK_LAYOUTS
from resdepth.training.mesh import host_value, replicated, replicated_scalar
from resdepth.training.packing.net import pack_leaves, unpack_leaf
from resdepth.training.step import TrainState

# Layouts whose runs may differ in model.residual (plain-N beside ResNet-N: same layers).
MIXES_ARCHITECTURES = ("tuple", "wide", "grouped")


def layout(setting: str, backend: str) -> str:
    """The layout of a pack for `sweep.pack_formulation` (validated with the config) on
    `backend`: "auto" is "tuple" on CPU (exact: bit-identical to each run alone) and "vmap" on
    GPUs and TPUs until a GPU measurement of benchmarks/pack_check.py (docs/benchmarks.md)
    shows another layout pays there."""
    if setting == "auto":
        return "tuple" if backend == "cpu" else "vmap"
    assert setting in PACK_LAYOUTS, setting  # config.py validates sweep.pack_formulation
    return setting


def mixes_architectures(layout: str, shortcut: str) -> bool:
    """Whether plain and residual runs of one depth may share a pack of `layout`: the tuple
    layout runs each net's own program; the packed net needs the same layers, which plain and
    residual nets have with option A's parameter-free shortcut."""
    if layout == "tuple":
        return True
    return layout in MIXES_ARCHITECTURES and shortcut.upper() == "A"


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ChannelPackedState(TrainState):
    """S runs' TrainStates as the packed net's (packing/net.py): params, batch_stats and
    opt_state leaves joined on the last axis; step, rng, warmup_active, lr_scale and the
    interval sums with a leading run axis (S,)."""


def pack_states(states: list[TrainState], mesh: Mesh, layout: str = "tuple"
                ) -> TrainState | tuple[TrainState, ...]:
    """S single-run states as one packed state of `layout`."""
    if layout == "vmap":
        return stack_states(states, mesh)
    if layout in ("wide", "grouped"):
        return channel_pack_states(states, mesh)
    return tuple(states)


def stack_states(states: list[TrainState], mesh: Mesh) -> TrainState:
    """S single-run states -> one state with a leading run axis (S, ...), replicated."""
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    return jax.device_put(stacked, replicated(mesh))


def channel_pack_states(states: list[TrainState], mesh: Mesh) -> ChannelPackedState:
    """S single-run states -> the packed net's state (exact: a concatenation), replicated."""
    return jax.device_put(_pack_compiled(tuple(states)), replicated(mesh))


def _channel_pack(states: tuple[TrainState, ...]) -> ChannelPackedState:
    trees = {name: pack_leaves([getattr(state, name) for state in states])
             for name in ("params", "batch_stats", "opt_state")}
    scalars = {field.name: jnp.stack([getattr(state, field.name) for state in states])
               for field in dataclasses.fields(TrainState) if field.name not in trees}
    return ChannelPackedState(**trees, **scalars)


_pack_compiled = jax.jit(_channel_pack)


def _channel_unpack(state: ChannelPackedState, index: int) -> TrainState:
    runs = state.step.shape[0]
    leaves = {name: jax.tree.map(lambda leaf: unpack_leaf(leaf, index, runs), getattr(state, name))
              for name in ("params", "batch_stats", "opt_state")}
    scalars = {field.name: getattr(state, field.name)[index] for field in dataclasses.fields(state)
               if field.name not in leaves}
    return TrainState(**leaves, **scalars)


_unpack_compiled = jax.jit(_channel_unpack, static_argnums=1)


def runs_in(state) -> int:
    """How many runs a packed (or single) state holds."""
    if isinstance(state, tuple):
        return len(state)
    return 1 if state.step.ndim == 0 else state.step.shape[0]


def seed_slice(state, index: int) -> TrainState:
    """Run `index`'s single-run state out of a packed state (a new state, in the layout of a
    run trained alone)."""
    if isinstance(state, tuple):
        return state[index]
    if isinstance(state, ChannelPackedState):
        return _unpack_compiled(state, index)
    return jax.tree.map(lambda leaf: leaf[index], state)


def seed_values(state, field: str) -> list[Any]:
    """The value of scalar `field` for each run of a packed (or single) state, on the host."""
    if isinstance(state, tuple):
        return [host_value(getattr(each, field)).item() for each in state]
    return np.atleast_1d(host_value(getattr(state, field))).tolist()


def replace_per_seed(state, mesh: Mesh, **per_seed: list[Any]):
    """`state` with scalar fields set per run, e.g. warmup_active=[True, False]."""
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
