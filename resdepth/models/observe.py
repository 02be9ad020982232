"""Taps on a layer's response that measure it inside the training step, on chosen iterations.

`observe(y, sink)` sits where the net produces a response y (a 3x3 layer's output after
BatchNorm, before the ReLU or the addition: Figure 7's point). It returns y unchanged, so the
training computes exactly what it computes without it, and on an iteration whose `sink` is 1:

- forward, each lane's (mean, mean of squares) of y;
- backward, as the gradient with respect to `sink`, each lane's mean over its elements of
  (dL/dy)^2: the backward-propagated signal the paper speaks of (§4.1), reduced where it is
  computed, so no gradient the size of the response is ever kept for it.

On any other iteration (`sink` 0) both are zeros and neither reduction runs: each sits in a
`lax.cond`, so the one compiled training step serves every iteration, measured or not.

Lanes are S nets side by side in the channels (network.Lanes): y (B, H, W, S * C), lane s's
channels in block s; `sink` (S,) carries the flag once per lane. A net alone has one lane.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def _per_lane(y: jax.Array, lanes: int) -> jax.Array:
    """y (B, H, W, lanes * C) as float32 (lanes, B * H * W * C), each lane's elements."""
    y = y.astype(jnp.float32)
    y = y.reshape(*y.shape[:-1], lanes, y.shape[-1] // lanes)
    return jnp.moveaxis(y, -2, 0).reshape(lanes, -1)


def lane_moments(y: jax.Array, lanes: int) -> jax.Array:
    """Each lane's (mean, mean of squares) of y: float32 (lanes, 2)."""
    flat = _per_lane(y, lanes)
    return jnp.stack([jnp.mean(flat, axis=1), jnp.mean(jnp.square(flat), axis=1)], axis=1)


def _lane_mean_square(g: jax.Array, lanes: int) -> jax.Array:
    return jnp.mean(jnp.square(_per_lane(g, lanes)), axis=1)


@jax.custom_vjp
def _tap(y: jax.Array, sink: jax.Array) -> jax.Array:
    return y


def _tap_forward(y: jax.Array, sink: jax.Array) -> tuple[jax.Array, jax.Array]:
    return y, sink


def _tap_backward(sink: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    lanes = sink.shape[0]
    measured = lax.cond(sink[0] > 0, lambda g: _lane_mean_square(g, lanes),
                        lambda g: jnp.zeros((lanes,), jnp.float32), g)
    return g, measured.astype(sink.dtype)


_tap.defvjp(_tap_forward, _tap_backward)


def observe(y: jax.Array, sink: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(y unchanged, float32 (lanes, 2) moments of y, zeros where `sink` is 0); the gradient
    with respect to `sink` (float32 (lanes,), all 1 or all 0) is each lane's mean of
    (dL/dy)^2 on a measured iteration, 0 otherwise."""
    lanes = sink.shape[0]
    moments = lax.cond(sink[0] > 0, lambda y: lane_moments(y, lanes),
                       lambda y: jnp.zeros((lanes, 2), jnp.float32), y)
    return _tap(y, sink), moments
