"""The plain/residual network family of He et al. (2016) in Flax NNX.

Depth, plain-or-residual and the shortcut option are values of one `ModelSpec`, not classes.
A stage is its first block (which may downsample) followed by a scan over its identical blocks,
so the compiled program does not grow with depth (ResNet-1202 has 199 scanned blocks per stage).

Shapes: images are NHWC, `(batch, height, width, channels)`; logits are `(batch, num_classes)`,
always float32 whatever the compute dtype.

Arithmetic (`ModelSpec.compute_dtype`, `arithmetic`): "float32" is full float32 in every
convolution and the dense layer (`lax.Precision.HIGHEST`, as the paper's Caffe computed);
"tf32" keeps float32 storage at JAX's default precision, which on Ampere and Hopper GPUs lets
XLA run the convolutions on TF32 tensor cores (10-bit mantissa products, float32 sums) and on
CPU is the same float32 arithmetic as "float32"; "bfloat16" computes the convolutions in
bfloat16. Parameters, BatchNorm and the dense layer's output are float32 in all three.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from resdepth.dataset_facts import BlockKind
from resdepth.choices import COMPUTE_DTYPES
from resdepth.models.architectures import StagePlan, stage_plan
from resdepth.models.cpu_conv import KEEP_CONV_OUTPUTS, conv_function, cpu_conv
from resdepth.models.observe import MEASURES, lane_moments, observe
from resdepth.runtime.backend import current_backend

Shortcut = Literal["A", "B", "C"]  # choices.SHORTCUTS, as a type
ComputeDtype = Literal["float32", "tf32", "bfloat16"]  # choices.COMPUTE_DTYPES, as a type

# He et al. 2015 ("Delving deep into rectifiers"): N(0, 2 / fan_in) for ReLU nets.
HE_NORMAL = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
BN_MOMENTUM = 0.9  # running-average decay of BatchNorm statistics
BN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything that decides a network's shape and arithmetic.

    Attributes:
      dataset_family: "cifar" (depth 6n+2, §4.2) or "imagenet" (Table 1).
      depth: number of weighted layers.
      residual: False builds the plain net: the same layers without shortcuts.
      shortcut: "A" zero-pad identity, "B" project where dimensions grow, "C" project everywhere.
      num_classes: width of the final dense layer.
      compute_dtype: "float32" (full float32: precision HIGHEST), "tf32" (float32 at JAX's
        default precision: TF32 tensor cores on Ampere/Hopper GPUs) or "bfloat16"; parameters
        are always float32 (`arithmetic`).
      remat: rematerialize each block in the backward pass (less memory, about 1/3 more compute).
      bn_group_size: BatchNorm statistics over groups of this many images of the batch while
        training (0: the whole batch); the paper's Caffe BN was per GPU, 64 images on CIFAR-10.
      backend: the platform the convolutions are built for ("cpu" takes cpu_conv.cpu_conv,
        others XLA's convolution); "" for the one this process computes on.
    """

    dataset_family: Literal["cifar", "imagenet"] = "cifar"
    depth: int = 20
    residual: bool = True
    shortcut: Shortcut = "A"
    num_classes: int = 10
    compute_dtype: ComputeDtype = "tf32"
    remat: bool = False
    bn_group_size: int = 0
    backend: str = ""

    @property
    def convolution(self):
        """The convolution function the net is built with (cpu_conv.conv_function)."""
        return conv_function(self.backend or current_backend())

    @property
    def plan(self) -> StagePlan:
        return stage_plan(self.dataset_family, self.depth)

    @property
    def name(self) -> str:
        return f"{'resnet' if self.residual else 'plain'}-{self.depth}"


def arithmetic(compute_dtype: str) -> tuple[jnp.dtype, lax.Precision | None]:
    """(the dtype convolutions compute in, the precision of convolutions and the dense layer).

    "float32" -> (float32, HIGHEST): full float32 products, as Caffe's; "tf32" -> (float32,
    None): JAX's default, which XLA may run on TF32 tensor cores on Ampere/Hopper GPUs (on CPU
    both are float32); "bfloat16" -> (bfloat16, None).
    """
    if compute_dtype not in COMPUTE_DTYPES:  # config.py refuses it first, for a user
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    if compute_dtype == "float32":
        return jnp.dtype(jnp.float32), lax.Precision.HIGHEST
    return jnp.dtype(jnp.bfloat16 if compute_dtype == "bfloat16" else jnp.float32), None


def paper_padding(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """k//2 pixels on every side, as the authors' Caffe models pad every conv.

    Not "SAME": on an even-sized input a stride-2 "SAME" conv pads (0, 1), so its output (i, j)
    is centred on input (2i+1, 2j+1) while the shortcut (`x[::2, ::2]`, or a 1x1 stride-2
    projection) reads (2i, 2j). With k//2 on both sides both read (2i, 2j).
    """
    return ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))


def caffe_max_pool(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
    """Caffe's pool1: no padding, output size rounded *up*, ceil((H - window) / stride) + 1.

    The last window may run past the edge; it then covers only the pixels that exist, which is
    padding with -inf on the bottom/right only. (x: (batch, H, W, C) -> (batch, H', W', C).)
    """
    def extra(size: int) -> int:
        out = -(-(size - window) // stride) + 1
        return max(0, (out - 1) * stride + window - size)

    pads = ((0, extra(x.shape[1])), (0, extra(x.shape[2])))
    return nnx.max_pool(x, (window, window), strides=(stride, stride), padding=pads)


class GroupedBatchNorm(nnx.BatchNorm):
    """BatchNorm whose training statistics are computed over groups of `group_size` images.

    Caffe computes BN statistics on each GPU's share of the batch: the paper's CIFAR-10 batch of
    128 "on two GPUs" normalizes groups of 64. Grouping the *global* batch gives the same groups
    on any number of devices. The running averages take the mean over groups of the group
    statistics. With group_size 0 (or at least the batch) this is flax's BatchNorm exactly.
    x: (batch, H, W, C) -> same shape.
    """

    def __init__(self, num_features: int, group_size: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.group_size = group_size

    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        batch = x.shape[0]
        if use_running_average or not 0 < self.group_size < batch:
            return super().__call__(x, use_running_average=use_running_average)
        if batch % self.group_size:
            raise ValueError(f"batch {batch} is not a multiple of bn_group_size {self.group_size}")
        groups = x.astype(jnp.float32).reshape(batch // self.group_size, self.group_size, *x.shape[1:])
        axes = tuple(range(1, groups.ndim - 1))
        # E[x^2] - E[x]^2 in one pass, clipped at 0, as flax's BatchNorm computes it.
        mean = jnp.mean(groups, axes, keepdims=True)
        var = jnp.maximum(0.0, jnp.mean(jnp.square(groups), axes, keepdims=True) - jnp.square(mean))
        features = x.shape[-1]
        self.mean[...] = jax.lax.stop_gradient(
            self.momentum * self.mean[...] + (1 - self.momentum) * jnp.mean(mean.reshape(-1, features), 0))
        self.var[...] = jax.lax.stop_gradient(
            self.momentum * self.var[...] + (1 - self.momentum) * jnp.mean(var.reshape(-1, features), 0))
        multiplier = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
        y = (groups - mean) * multiplier + self.bias[...]
        return y.reshape(x.shape).astype(self.dtype)


@dataclasses.dataclass(frozen=True)
class Lanes:
    """S nets of one shape computed as one net, side by side in the channels (training/packing/).

    Every layer's channels are the S nets' channel blocks in order, lane s's in block s: each
    convolution is built with `feature_group_count = S` (kernel (kh, kw, cin, S * cout)) and
    computed by `convolution` (a grouped convolution, or a dense one with a block-diagonal
    kernel); BatchNorm is per channel, so per lane; option A's shortcut pads each lane's block;
    the dense head computes each lane's logits from its own features. The state of such a net
    has the paths of the single net's, each leaf the S nets' leaves joined on the last axis.

    residual: per lane, whether it adds its shortcuts (plain and residual nets of one depth
      have the same layers with option A's parameter-free shortcut).
    convolution: a drop-in for `lax.conv_general_dilated` as flax's Conv calls it.
    keep_conv_outputs_only: the CPU's remat policy for scanned blocks (cpu_conv.CONV_OUTPUT).
    """

    residual: tuple[bool, ...]
    convolution: Any
    keep_conv_outputs_only: bool = False

    @property
    def count(self) -> int:
        return len(self.residual)


class ConvBN(nnx.Module):
    """Convolution without bias followed by BatchNorm (the paper puts BN after every conv).

    With `lanes` > 1 the features are per lane (see Lanes): (B, H, W, lanes * in_features) ->
    (B, H', W', lanes * out_features)."""

    def __init__(self, in_features: int, out_features: int, kernel: int, stride: int,
                 dtype: jnp.dtype, *, rngs: nnx.Rngs, bn_group_size: int = 0,
                 conv: Any = lax.conv_general_dilated, precision: lax.Precision | None = None,
                 lanes: int = 1):
        self.conv = nnx.Conv(lanes * in_features, lanes * out_features, (kernel, kernel),
                             strides=stride, padding=paper_padding(kernel), use_bias=False,
                             feature_group_count=lanes, kernel_init=HE_NORMAL, dtype=dtype,
                             param_dtype=jnp.float32, precision=precision,
                             conv_general_dilated=conv, rngs=rngs)
        # BatchNorm normalizes in float32 whatever the compute dtype: its statistics are float32
        # and bfloat16 sums over a large batch lose precision; the next conv casts back.
        self.norm = GroupedBatchNorm(lanes * out_features, bn_group_size, momentum=BN_MOMENTUM,
                                     epsilon=BN_EPSILON, dtype=jnp.float32,
                                     param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.norm(self.conv(x), use_running_average=not train)


def response_moments(y: jax.Array) -> jax.Array:
    """(mean, mean of squares) of a layer response over all its elements, shape (2,),
    float32, for Figure 7."""
    return lane_moments(y, 1)[0]


def zero_pad_shortcut(x: jax.Array, stride: int, out_features: int, lanes: int = 1) -> jax.Array:
    """Option A: subsample by `stride` and zero-pad the new channels (of each lane's block, out
    to `out_features` per lane); no parameters."""
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    extra = out_features - x.shape[-1] // lanes
    if extra <= 0:
        return x
    if lanes == 1:
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height, width, lanes, channels // lanes)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, 0), (0, extra)))
    return x.reshape(batch, height, width, lanes * out_features)


class Block(nnx.Module):
    """One basic (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1) block, residual or plain.

    `__call__` maps (batch, H, W, in_features) to (batch, H/stride, W/stride, out_features) and
    also returns the moments of each 3x3 conv's BN output, shape (number of 3x3 convs, 2).
    With `sinks`, (number of 3x3 convs, lanes, observe.MEASURES), each of those outputs is
    tapped instead (models/observe.py), whose gradients carry the measures, and the moments
    are None (training/signals.py).
    `lanes`: per lane whether it is residual, for S nets side by side (Lanes); None: one net.
    """

    def __init__(self, in_features: int, width: int, stride: int, kind: BlockKind,
                 residual: bool, shortcut: Shortcut, dtype: jnp.dtype, *, rngs: nnx.Rngs,
                 bn_group_size: int = 0, conv: Any = lax.conv_general_dilated,
                 precision: lax.Precision | None = None, lanes: tuple[bool, ...] | None = None):
        self.kind = kind
        self.width = width  # the channels of its 3x3 responses
        self.residual = residual if lanes is None else any(lanes)
        # Which lanes add their shortcut, where only some do (None: all or none).
        self.adding_lanes = None if lanes is None or all(lanes) or not any(lanes) else lanes
        self.lanes = 1 if lanes is None else len(lanes)
        self.stride = stride
        norm = {"rngs": rngs, "bn_group_size": bn_group_size, "conv": conv, "precision": precision,
                "lanes": self.lanes}
        if kind == "basic":
            self.out_features = width
            self.layers = nnx.List([
                ConvBN(in_features, width, 3, stride, dtype, **norm),
                ConvBN(width, width, 3, 1, dtype, **norm),
            ])
            self.response_layers = (0, 1)
        else:
            self.out_features = 4 * width
            # The original paper strides the first 1x1 conv (not the 3x3 of the later "v1.5").
            self.layers = nnx.List([
                ConvBN(in_features, width, 1, stride, dtype, **norm),
                ConvBN(width, width, 3, 1, dtype, **norm),
                ConvBN(width, self.out_features, 1, 1, dtype, **norm),
            ])
            self.response_layers = (1,)
        grows = stride != 1 or in_features != self.out_features
        project = self.residual and (shortcut == "C" or (shortcut == "B" and grows))
        if project and self.adding_lanes is not None:
            raise ValueError(f"plain and residual nets are side by side only where they have the "
                             f"same layers: shortcut {shortcut} projects, plain nets do not")
        self.projection = (ConvBN(in_features, self.out_features, 1, stride, dtype, **norm)
                           if project else None)

    def __call__(self, x: jax.Array, train: bool, sinks: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array | None]:
        y, moments = x, []
        for index, layer in enumerate(self.layers):
            y = layer(y, train)
            if index in self.response_layers:
                if sinks is None:
                    moments.append(response_moments(y))
                else:
                    y = observe(y, sinks[self.response_layers.index(index)])
            if index < len(self.layers) - 1:
                y = nnx.relu(y)
        if self.residual:
            if self.projection is not None:
                added = y + self.projection(x, train)
            else:
                added = y + zero_pad_shortcut(x, self.stride, self.out_features,
                                              self.lanes).astype(y.dtype)
            if self.adding_lanes is None:
                y = added
            else:  # a 0/1 choice per lane's channel block
                y = jnp.where(np.repeat(np.asarray(self.adding_lanes), self.out_features), added, y)
        return nnx.relu(y), jnp.stack(moments) if moments else None


class Stage(nnx.Module):
    """A first block (which may change the shape) then `num_blocks - 1` identical scanned blocks."""

    def __init__(self, in_features: int, width: int, stride: int, num_blocks: int,
                 spec: ModelSpec, dtype: jnp.dtype, *, rngs: nnx.Rngs, lanes: Lanes | None = None):
        kind = spec.plan.block_kind
        conv = spec.convolution if lanes is None else lanes.convolution
        precision = arithmetic(spec.compute_dtype)[1]
        block = {"bn_group_size": spec.bn_group_size, "conv": conv, "precision": precision,
                 "lanes": None if lanes is None else lanes.residual}
        self.first = Block(in_features, width, stride, kind, spec.residual, spec.shortcut,
                           dtype, rngs=rngs, **block)
        self.out_features = self.first.out_features
        self.remat = spec.remat
        # On CPU the scanned blocks keep only their convolutions' outputs for the backward pass
        # (see cpu_conv.CONV_OUTPUT): faster there, and within float rounding of storing all.
        self.keep_conv_outputs_only = (conv is cpu_conv if lanes is None
                                       else lanes.keep_conv_outputs_only)
        self.num_repeated = num_blocks - 1
        if self.num_repeated == 0:
            self.repeated = None
            return

        out_features = self.out_features

        @nnx.split_rngs(splits=self.num_repeated)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(block_rngs: nnx.Rngs) -> Block:
            return Block(out_features, width, 1, kind, spec.residual, spec.shortcut, dtype,
                         rngs=block_rngs, **block)

        self.repeated = make_blocks(rngs)

    def __call__(self, x: jax.Array, train: bool, sinks: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array | None]:
        """Returns the stage output and the 3x3 response moments, shape (blocks, convs, 2);
        with `sinks` (blocks, convs, lanes, observe.MEASURES) the responses are tapped (Block)
        and the moments None."""
        x, first_moments = self.first(x, train, None if sinks is None else sinks[0])
        if self.repeated is None:
            return x, None if sinks is not None else first_moments[None]

        def apply_block(block: Block, carry: jax.Array, *sink: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
            return block(carry, train, *sink)

        if self.remat:
            apply_block = nnx.remat(apply_block)
        elif self.keep_conv_outputs_only:
            apply_block = nnx.remat(apply_block, policy=KEEP_CONV_OUTPUTS)
        if sinks is None:
            scan = nnx.scan(apply_block, in_axes=(0, nnx.Carry), out_axes=(nnx.Carry, 0))
            x, moments = scan(self.repeated, x)
        else:
            scan = nnx.scan(apply_block, in_axes=(0, nnx.Carry, 0), out_axes=(nnx.Carry, 0))
            x, moments = scan(self.repeated, x, sinks[1:])
        if sinks is not None:
            return x, None
        return x, jnp.concatenate([first_moments[None], moments])


class ResNet(nnx.Module):
    """A plain or residual network of the CIFAR (§4.2) or ImageNet (Table 1) family; with
    `lanes`, S such nets of one depth side by side as one net (see Lanes)."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, in_channels: int = 3,
                 lanes: Lanes | None = None):
        self.spec = spec
        self.lanes = 1 if lanes is None else lanes.count
        plan = spec.plan
        dtype, precision = arithmetic(spec.compute_dtype)
        self.dtype, self.precision = dtype, precision
        conv = spec.convolution if lanes is None else lanes.convolution
        stem = {"rngs": rngs, "bn_group_size": spec.bn_group_size, "conv": conv,
                "precision": precision, "lanes": self.lanes}
        if spec.dataset_family == "cifar":
            self.stem = ConvBN(in_channels, plan.stem_features, 3, 1, dtype, **stem)
        else:
            self.stem = ConvBN(in_channels, plan.stem_features, 7, 2, dtype, **stem)
        stages, features = [], plan.stem_features
        for index, (width, num_blocks) in enumerate(zip(plan.widths, plan.stage_sizes)):
            stride = 1 if index == 0 else 2
            stage = Stage(features, width, stride, num_blocks, spec, dtype, rngs=rngs, lanes=lanes)
            stages.append(stage)
            features = stage.out_features
        self.stages = nnx.List(stages)
        # Each lane's dense layer is its block of the kernel's columns: (features, lanes * classes).
        self.head = nnx.Linear(features, self.lanes * spec.num_classes, kernel_init=HE_NORMAL,
                               dtype=jnp.float32, param_dtype=jnp.float32, precision=precision,
                               rngs=rngs)

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """images (batch, H, W, C), mean-subtracted -> logits (batch, num_classes), float32;
        with lanes (batch, H, W, lanes * C), lane s's in channel block s -> (batch, lanes,
        num_classes)."""
        return self.forward_with_responses(images, train)[0]

    def forward_with_responses(self, images: jax.Array, train: bool = False,
                               sinks: list[jax.Array] | None = None
                               ) -> tuple[jax.Array, list[jax.Array]]:
        """Logits plus the Figure 7 moments: the stem's (cifar only) and one array per stage.

        Each stage's moments have shape (blocks, 3x3 convs per block, 2) in layer order.
        With `sinks`, of the shapes `sink_shapes` gives (one per moments array), every 3x3
        response is tapped instead (models/observe.py) and no moments are returned: the
        gradient with respect to each sink carries its responses' measures, per lane
        (training/signals.py).
        """
        sinks = list(sinks) if sinks is not None else None
        x = self.stem(images.astype(self.dtype), train)
        responses = []
        if self.spec.dataset_family == "cifar":
            if sinks is None:
                responses.append(response_moments(x)[None, None])
            else:
                x = observe(x, sinks.pop(0)[0, 0])
        x = nnx.relu(x)
        if self.spec.dataset_family == "imagenet":
            x = caffe_max_pool(x)
        for stage in self.stages:
            x, moments = stage(x, train, None if sinks is None else sinks.pop(0))
            if moments is not None:
                responses.append(moments)
        features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return self._logits(features), responses

    def sink_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of `forward_with_responses`' sinks: (1, 1, lanes, observe.MEASURES) for
        the cifar stem, then (blocks, 3x3 convs per block, lanes, observe.MEASURES) per stage."""
        shapes = [(1, 1)] if self.spec.dataset_family == "cifar" else []
        shapes += [(stage.num_repeated + 1, len(stage.first.response_layers))
                   for stage in self.stages]
        return [(*shape, self.lanes, MEASURES) for shape in shapes]

    def _logits(self, features: jax.Array) -> jax.Array:
        """(B, F) -> (B, classes); with lanes (B, lanes * F) -> (B, lanes, classes), each lane's
        logits from its own features."""
        if self.lanes == 1:
            return self.head(features)
        batch, width = features.shape
        kernel = self.head.kernel[...]
        classes = kernel.shape[-1] // self.lanes
        logits = jnp.einsum("bsf,fsk->bsk", features.reshape(batch, self.lanes, width // self.lanes),
                            kernel.reshape(kernel.shape[0], self.lanes, classes),
                            precision=self.precision)
        return logits + self.head.bias[...].reshape(self.lanes, classes)


def build_model(spec: ModelSpec, seed: int = 0, in_channels: int = 3) -> ResNet:
    """Initializes a model with He-initialized weights from `seed`.

    The ImageNet nets draw their weights in one compiled program rather than op by op, which on
    a CPU takes a third of the time (same random streams); the small CIFAR nets initialize
    faster op by op than the compilation would take.
    """
    if spec.dataset_family != "imagenet":
        return _init(spec, seed, in_channels)
    graphdef, _ = nnx.split(abstract_model(spec, in_channels))
    state = jax.jit(lambda: nnx.split(_init(spec, seed, in_channels))[1])()
    return nnx.merge(graphdef, state)


def _init(spec: ModelSpec, seed: int, in_channels: int) -> ResNet:
    return ResNet(spec, rngs=nnx.Rngs(seed), in_channels=in_channels)


def abstract_model(spec: ModelSpec, in_channels: int = 3) -> ResNet:
    """The model with shapes only (no memory), for counting parameters and multiply-adds."""
    return nnx.eval_shape(lambda: _init(spec, 0, in_channels))
