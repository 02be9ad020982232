"""The device mesh and the moves between host and devices.

One 1-D mesh over every device of every process, axis `data`: batches are split over it,
parameters and the training state are replicated. Host arrays become global arrays with
`to_global` (each process gives its own share of a batch), and replicated values come back with
`host_value`, which also works when the array spans other processes' devices.

Nothing here knows about models or training: `training/step.py` (the pure steps),
`training/packing/` (packs of runs) and `training/sources.py` (the data) build on it.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process), axis name `data`.

    The axis is Auto (the compiler propagates shardings from the inputs), which is what a pure
    data-parallel step needs; newer JAX defaults make_mesh to Explicit axes.
    """
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), (DATA_AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_scalar(value, dtype, mesh: Mesh) -> jax.Array:
    """A new buffer holding `value` (a scalar, or one per packed seed) on every device."""
    return jax.device_put(np.asarray(value, dtype), replicated(mesh))


def process_share(array: np.ndarray, batch_axis: int = 0) -> np.ndarray:
    """This process's contiguous part of a global batch (the mesh orders devices by process)."""
    per_process = array.shape[batch_axis] // jax.process_count()
    start = jax.process_index() * per_process
    return np.take(array, np.arange(start, start + per_process), axis=batch_axis)


def to_global(array: np.ndarray, sharding, batch_axis: int = 0) -> jax.Array:
    """A global array from the same host array on every process (replicated, or split over
    `data` along `batch_axis`)."""
    if sharding.is_fully_replicated:
        return jax.make_array_from_process_local_data(sharding, array)
    return jax.make_array_from_process_local_data(sharding, process_share(array, batch_axis),
                                                  array.shape)


def host_value(array: jax.Array) -> np.ndarray:
    """A replicated array's value on this host. Unlike jax.device_get, this also works when
    the array spans other processes' devices (multi-host), by reading a local copy."""
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        return np.asarray(array.addressable_data(0))
    return np.asarray(jax.device_get(array))
