"""Taps on a layer's response that measure it inside the training step, on chosen iterations.

`observe(y, sink)` sits where the net produces a response y (a 3x3 layer's output after
BatchNorm, before the ReLU or the addition: Figure 7's point). It returns y unchanged, so the
training computes exactly what it computes without it. Its gradient with respect to `sink`,
on an iteration whose `sink` is 1, is per lane (mean over the elements of (dL/dy)^2, mean of y,
mean of y^2): the backward-propagated signal the paper speaks of (§4.1) and the moments of the
forward one, reduced in the backward pass where dL/dy is computed, so no gradient the size of
the response is ever kept for them.

On any other iteration (`sink` 0) that gradient is zeros and no reduction runs: they sit in
one `lax.cond` per response, in the backward pass only, so the one compiled training step
serves every iteration, measured or not.

Lanes are S nets side by side in the channels (network.Lanes): y (B, H, W, S * C), lane s's
channels in block s; `sink` (S, 3) carries the flag once per lane and quantity. A net alone has
one lane.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

MEASURES = 3  # per lane: mean (dL/dy)^2, mean y, mean y^2


def _per_lane(y: jax.Array, lanes: int) -> jax.Array:
    """y (B, H, W, lanes * C) as float32 (lanes, B * H * W * C), each lane's elements."""
    y = y.astype(jnp.float32)
    y = y.reshape(*y.shape[:-1], lanes, y.shape[-1] // lanes)
    return jnp.moveaxis(y, -2, 0).reshape(lanes, -1)


def lane_moments(y: jax.Array, lanes: int) -> jax.Array:
    """Each lane's (mean, mean of squares) of y: float32 (lanes, 2)."""
    flat = _per_lane(y, lanes)
    return jnp.stack([jnp.mean(flat, axis=1), jnp.mean(jnp.square(flat), axis=1)], axis=1)


def _measure(g: jax.Array, y: jax.Array, lanes: int) -> jax.Array:
    """(lanes, MEASURES): each lane's mean of g^2, then its moments of y."""
    return jnp.concatenate([jnp.mean(jnp.square(_per_lane(g, lanes)), axis=1, keepdims=True),
                            lane_moments(y, lanes)], axis=1)


@jax.custom_vjp
def observe(y: jax.Array, sink: jax.Array) -> jax.Array:
    """y unchanged; the gradient with respect to `sink` (float32 (lanes, MEASURES), all 1 or
    all 0) is the module docstring's measures where it is 1, zeros where it is 0."""
    return y


def _observe_forward(y: jax.Array, sink: jax.Array
                     ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return y, (y, sink)


def _observe_backward(saved: tuple[jax.Array, jax.Array], g: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
    y, sink = saved
    lanes = sink.shape[0]
    measured = lax.cond(sink[0, 0] > 0, lambda g, y: _measure(g, y, lanes),
                        lambda g, y: jnp.zeros((lanes, MEASURES), jnp.float32), g, y)
    return g, measured.astype(sink.dtype)


observe.defvjp(_observe_forward, _observe_backward)
