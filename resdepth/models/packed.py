"""Several CIFAR-family nets of one shape as one net: the runs' channels side by side.

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
run out of the others' numbers; the training step (training/packed_step.py) still reports that
run's loss as non-finite. Grouped convolutions never mix runs and need no guard.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from resdepth.models.cpu_conv import KEEP_CONV_OUTPUTS, cpu_conv
from resdepth.models.network import (
    BN_EPSILON, BN_MOMENTUM, HE_NORMAL, GroupedBatchNorm, ModelSpec, arithmetic, paper_padding)

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


class PackedConvBN(nnx.Module):
    """network.ConvBN for S runs: `in_features`, `out_features` per run."""

    def __init__(self, runs: int, in_features: int, out_features: int, kernel: int, stride: int,
                 dtype: jnp.dtype, precision: lax.Precision | None, *, rngs: nnx.Rngs,
                 bn_group_size: int, conv: Any):
        self.conv = nnx.Conv(runs * in_features, runs * out_features, (kernel, kernel),
                             strides=stride, padding=paper_padding(kernel), use_bias=False,
                             feature_group_count=runs, kernel_init=HE_NORMAL, dtype=dtype,
                             param_dtype=jnp.float32, precision=precision,
                             conv_general_dilated=conv, rngs=rngs)
        self.norm = GroupedBatchNorm(runs * out_features, bn_group_size, momentum=BN_MOMENTUM,
                                     epsilon=BN_EPSILON, dtype=jnp.float32,
                                     param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.norm(self.conv(x), use_running_average=not train)


def pad_each_run(x: jax.Array, runs: int, stride: int, out_features: int) -> jax.Array:
    """Option A per run: subsample by `stride`, zero-pad each run's channel block to
    `out_features` (network.zero_pad_shortcut on every block)."""
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    batch, height, width, channels = x.shape
    extra = out_features - channels // runs
    if extra <= 0:
        return x
    x = x.reshape(batch, height, width, runs, channels // runs)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, 0), (0, extra)))
    return x.reshape(batch, height, width, runs * out_features)


class PackedBlock(nnx.Module):
    """network.Block (basic) for S runs; `residual[s]`: run s adds its shortcut."""

    def __init__(self, runs: int, residual: tuple[bool, ...], in_features: int, width: int,
                 stride: int, shortcut: str, dtype: jnp.dtype, precision, *, rngs: nnx.Rngs,
                 bn_group_size: int, conv: Any):
        self.runs, self.residual, self.stride, self.out_features = runs, residual, stride, width
        norm = {"rngs": rngs, "bn_group_size": bn_group_size, "conv": conv}
        self.layers = nnx.List([
            PackedConvBN(runs, in_features, width, 3, stride, dtype, precision, **norm),
            PackedConvBN(runs, width, width, 3, 1, dtype, precision, **norm),
        ])
        grows = stride != 1 or in_features != width
        project = any(residual) and (shortcut == "C" or (shortcut == "B" and grows))
        if project and not all(residual):
            raise ValueError(f"plain and residual runs share a pack only where they have the same "
                             f"layers: shortcut {shortcut} projects, plain nets do not")
        self.projection = (PackedConvBN(runs, in_features, width, 1, stride, dtype, precision, **norm)
                           if project else None)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nnx.relu(self.layers[0](x, train))
        y = self.layers[1](y, train)
        if any(self.residual):
            if self.projection is not None:
                added = y + self.projection(x, train)
            else:
                added = y + pad_each_run(x, self.runs, self.stride, self.out_features).astype(y.dtype)
            if all(self.residual):
                y = added
            else:
                adds = np.repeat(np.asarray(self.residual), self.out_features)
                y = jnp.where(adds, added, y)
        return nnx.relu(y)


class PackedStage(nnx.Module):
    """network.Stage for S runs: a first block, then a scan over the identical blocks."""

    def __init__(self, runs: int, residual: tuple[bool, ...], in_features: int, width: int,
                 stride: int, num_blocks: int, spec: ModelSpec, dtype, precision, conv: Any,
                 keep_conv_outputs_only: bool, *, rngs: nnx.Rngs):
        block = {"shortcut": spec.shortcut, "dtype": dtype, "precision": precision,
                 "bn_group_size": spec.bn_group_size, "conv": conv}
        self.first = PackedBlock(runs, residual, in_features, width, stride, rngs=rngs, **block)
        self.out_features = width
        self.remat = spec.remat
        self.keep_conv_outputs_only = keep_conv_outputs_only
        self.num_repeated = num_blocks - 1
        if self.num_repeated == 0:
            self.repeated = None
            return

        @nnx.split_rngs(splits=self.num_repeated)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(block_rngs: nnx.Rngs) -> PackedBlock:
            return PackedBlock(runs, residual, width, width, 1, rngs=block_rngs, **block)

        self.repeated = make_blocks(rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = self.first(x, train)
        if self.repeated is None:
            return x

        def apply_block(block: PackedBlock, carry: jax.Array) -> tuple[jax.Array, None]:
            return block(carry, train), None

        if self.remat:
            apply_block = nnx.remat(apply_block)
        elif self.keep_conv_outputs_only:
            apply_block = nnx.remat(apply_block, policy=KEEP_CONV_OUTPUTS)
        scan = nnx.scan(apply_block, in_axes=(0, nnx.Carry), out_axes=(nnx.Carry, 0))
        return scan(self.repeated, x)[0]


class PackedHead(nnx.Module):
    """The 10-way dense layers of S runs: features (B, S * F) -> logits (B, S, K), float32."""

    def __init__(self, runs: int, features: int, classes: int, precision, *, rngs: nnx.Rngs):
        self.runs, self.precision = runs, precision
        self.kernel = nnx.Param(HE_NORMAL(rngs.params(), (features, runs * classes), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((runs * classes,), jnp.float32))

    def __call__(self, features: jax.Array) -> jax.Array:
        batch, width = features.shape
        kernel = self.kernel[...]
        classes = kernel.shape[-1] // self.runs
        logits = jnp.einsum("bsf,fsk->bsk", features.reshape(batch, self.runs, width // self.runs),
                            kernel.reshape(kernel.shape[0], self.runs, classes),
                            precision=self.precision)
        return logits + self.bias[...].reshape(self.runs, classes)


class PackedResNet(nnx.Module):
    """S CIFAR-family nets of one depth and shortcut (plain or residual each) as one net.

    `residual[s]` says whether run s is residual; `layout` is "wide" or "grouped". Its state
    has the paths of network.ResNet's, each leaf the S runs' leaves joined on the last axis.
    """

    def __init__(self, spec: ModelSpec, residual: Sequence[bool], layout: str = "wide", *,
                 rngs: nnx.Rngs, in_channels: int = 3, isolate_runs: bool | None = None):
        if spec.dataset_family != "cifar":
            raise ValueError("only CIFAR-family nets (CIFAR-10, digits) are packed")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        residual = tuple(bool(r) for r in residual)
        runs = len(residual)
        self.runs, self.layout = runs, layout
        dtype, precision = arithmetic(spec.compute_dtype)
        self.dtype = dtype
        base = spec.convolution
        isolate = layout == "wide" if isolate_runs is None else isolate_runs
        conv = packed_convolution(base, runs, layout, isolate)
        # On CPU the dense wide convolution is cpu_conv's canonical form; keep its outputs only.
        keep = base is cpu_conv and layout == "wide"
        plan = spec.plan
        self.stem = PackedConvBN(runs, in_channels, plan.stem_features, 3, 1, dtype, precision,
                                 rngs=rngs, bn_group_size=spec.bn_group_size, conv=conv)
        stages, features = [], plan.stem_features
        for index, (width, num_blocks) in enumerate(zip(plan.widths, plan.stage_sizes)):
            stage = PackedStage(runs, residual, features, width, 1 if index == 0 else 2,
                                num_blocks, spec, dtype, precision, conv, keep, rngs=rngs)
            stages.append(stage)
            features = stage.out_features
        self.stages = nnx.List(stages)
        self.head = PackedHead(runs, features, spec.num_classes, precision, rngs=rngs)

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """images (B, H, W, S * C), run s's in channel block s -> logits (B, S, classes)."""
        x = nnx.relu(self.stem(images.astype(self.dtype), train))
        for stage in self.stages:
            x = stage(x, train)
        return self.head(jnp.mean(x.astype(jnp.float32), axis=(1, 2)))


def packed_graphdef(spec: ModelSpec, residual: Sequence[bool], layout: str,
                    in_channels: int = 3, isolate_runs: bool | None = None) -> Any:
    """The graphdef of the packed net (shapes only; its state comes from `pack_leaves`)."""
    model = nnx.eval_shape(lambda: PackedResNet(spec, residual, layout, rngs=nnx.Rngs(0),
                                                in_channels=in_channels,
                                                isolate_runs=isolate_runs))
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
