"""Several CIFAR-family nets of one shape as one net: the runs' channels side by side.

The net is models/network.py's ResNet with the runs as its `Lanes`; this module gives it the
convolution of the layout and converts states to and from the runs' own.

Horizontal fusion (HFTA, Wang et al., MLSys 2021): S runs of one shape become one net whose
every layer has S times the channels, run s's in block s. Channels of different runs never
mix, so each run computes what it computes alone:

- every convolution's kernel is stored per run, side by side on its last (output) axis,
  (kh, kw, cin, S * cout), the layout of a grouped convolution (`feature_group_count = S`).
  The "wide" layout expands it in the forward pass into the block-diagonal kernel
  (kh, kw, S * cin, S * cout) of one dense convolution, whose off-diagonal blocks are exact
  zeros (selected, never multiplied) and are not parameters at all: SGD, momentum and weight
  decay cannot move them, and their gradient is never formed. The "grouped" layout hands the
  stored kernel to a grouped convolution, whose groups are the runs' channel blocks in place,
  so no layer transposes anything;
- BatchNorm is per channel, so each run's statistics are its own channels' over its own images;
- the batch axis pairs unrelated images: row i holds image i of every run's own batch (its own
  data order and augmentation), run s's in channel block s of the input;
- option A's shortcut subsamples and zero-pads each run's channel block; the residual add is
  per run (a 0/1 choice per channel block), so plain-N and ResNet-N share a pack (same layers);
- the head is an einsum over the runs: features (B, S, F) and a kernel stored (F, S * K).

Every parameter and BatchNorm statistic, and so the optimizer's momentum, is S single-run
leaves concatenated on the last axis (`pack_leaves`, `unpack_leaf`), so a packed state converts
to and from the S runs' own states exactly; each run saves and resumes its own checkpoint.

A dense block-diagonal convolution would multiply a diverged run's inf or NaN activations by
the other runs' zero blocks (NaN * 0 = NaN). With `isolate_runs` (the "wide" layout's default)
each convolution's input has non-finite values replaced by 0 and each convolution's output
gradient likewise, which leaves every finite run's arithmetic unchanged and keeps a diverged
run out of the others' numbers; the training step (packing/steps.py) still reports that
run's loss as non-finite. Grouped convolutions never mix runs and need no guard.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resdepth.models.cpu_conv import cpu_conv
from resdepth.models.network import Lanes, ModelSpec, ResNet

LAYOUTS = ("wide", "grouped")


def block_diagonal(kernel: jax.Array, runs: int) -> jax.Array:
    """(kh, kw, cin, S * cout) per-run kernels -> (kh, kw, S * cin, S * cout) block-diagonal.

    The off-diagonal blocks are zeros chosen by `where` (a NaN in one run's kernel stays in its
    block); the gradient of the result flows back to the diagonal blocks only."""
    kh, kw, cin, out = kernel.shape
    per_run = kernel.reshape(kh, kw, 1, cin, runs, out // runs)
    diagonal = np.eye(runs, dtype=bool).reshape(1, 1, runs, 1, runs, 1)
    wide = jnp.where(diagonal, per_run, jnp.zeros((), kernel.dtype))
    return wide.reshape(kh, kw, runs * cin, out)


@jax.custom_vjp
def finite_gradient(y: jax.Array) -> jax.Array:
    """The identity, whose gradient has its non-finite values replaced by 0."""
    return y


def _finite_gradient_forward(y):
    return y, None


def _finite_gradient_backward(_, grad):
    return (jnp.where(jnp.isfinite(grad), grad, jnp.zeros((), grad.dtype)),)


finite_gradient.defvjp(_finite_gradient_forward, _finite_gradient_backward)


def finite_value(x: jax.Array) -> jax.Array:
    """x with its non-finite values replaced by 0 (the identity on finite values)."""
    return jnp.where(jnp.isfinite(x), x, jnp.zeros((), x.dtype))


def packed_convolution(base: Any, runs: int, layout: str, isolate_runs: bool):
    """A drop-in for `lax.conv_general_dilated` as flax's Conv calls it, for a Conv built with
    `feature_group_count = runs` (kernel (kh, kw, cin, runs * cout)): "grouped" passes it to
    `base` as a grouped convolution; "wide" convolves with the block-diagonal kernel, one
    dense convolution, guarded by `isolate_runs` (module docstring)."""

    def convolve(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                 precision=None, **kwargs):
        if layout == "grouped":
            return base(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                        dimension_numbers, feature_group_count, batch_group_count,
                        precision=precision, **kwargs)
        if isolate_runs:
            lhs = finite_value(lhs)
        out = base(lhs, block_diagonal(rhs, runs), window_strides, padding, lhs_dilation,
                   rhs_dilation, dimension_numbers, 1, batch_group_count, precision=precision,
                   **kwargs)
        return finite_gradient(out) if isolate_runs else out

    return convolve


def lanes_for(spec: ModelSpec, residual: Sequence[bool], layout: str = "wide",
              isolate_runs: bool | None = None) -> Lanes:
    """The S runs of `residual` (whether each is residual) as lanes of one network.ResNet laid
    out by `layout`, "wide" or "grouped" (module docstring). `isolate_runs` defaults to True
    for the wide layout."""
    if spec.dataset_family != "cifar":
        raise ValueError("only CIFAR-family nets (CIFAR-10, digits) are packed")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    residual = tuple(bool(r) for r in residual)
    base = spec.convolution
    isolate = layout == "wide" if isolate_runs is None else isolate_runs
    # On CPU the dense wide convolution is cpu_conv's canonical form; keep its outputs only.
    return Lanes(residual, packed_convolution(base, len(residual), layout, isolate),
                 keep_conv_outputs_only=base is cpu_conv and layout == "wide")


def packed_graphdef(spec: ModelSpec, residual: Sequence[bool], layout: str,
                    in_channels: int = 3, isolate_runs: bool | None = None) -> Any:
    """The graphdef of the packed net: network.ResNet with the runs as its lanes (shapes only;
    its state comes from `pack_leaves`)."""
    lanes = lanes_for(spec, residual, layout, isolate_runs)
    model = nnx.eval_shape(lambda: ResNet(spec, rngs=nnx.Rngs(0), in_channels=in_channels,
                                          lanes=lanes))
    return nnx.split(model, nnx.Param, nnx.BatchStat)[0]


def pack_leaves(trees: Sequence[Any]) -> Any:
    """S single-run trees (params, BatchNorm statistics, momentum: one path structure) -> one
    tree whose every leaf is the S leaves joined on the last axis."""
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=-1), *trees)


def unpack_leaf(leaf: jax.Array, index: int, runs: int) -> jax.Array:
    """Run `index`'s part of a packed leaf (its block of the last axis)."""
    size = leaf.shape[-1] // runs
    return leaf[..., index * size:(index + 1) * size]


def per_run_any(tree: Any, runs: int, predicate) -> jax.Array:
    """bool (runs,): whether `predicate` (elementwise) holds anywhere in each run's part of
    every leaf of a packed tree."""
    found = jnp.zeros((runs,), bool)
    for leaf in jax.tree.leaves(tree):
        blocks = leaf.reshape(*leaf.shape[:-1], runs, leaf.shape[-1] // runs)
        axes = tuple(i for i in range(blocks.ndim) if i != blocks.ndim - 2)
        found = found | jnp.any(predicate(blocks), axis=axes)
    return found
