"""A convolution whose gradients XLA's CPU backend runs with its library kernels, in scans too.

XLA's CPU backend hands a convolution to its fast library kernels (Eigen, YNNPACK) only in one
canonical form: input NHWC, kernel HWIO, output NHWC. JAX's own gradients of a convolution
are convolutions in other forms: the kernel gradient contracts over the batch (the batch is
the "feature" dimension of its input), and the input gradient reads the kernel with its in and
out channels swapped. Outside a loop XLA rewrites both into canonical form; inside a `while`
loop, which is what each scanned stage is, it does not, and its naive loop emitter runs them
many times slower than the library (the measurements, for a scanned stack and for whole
train steps: docs/benchmarks.md).

`cpu_conv`'s custom VJP writes the input and kernel gradients in canonical form itself (it
transposes the operands and flips the kernel explicitly), so forward and backward run on the
library kernels wherever the convolution sits, and the stages stay scanned: compile time stays
flat in depth on CPU as on accelerators. Each gradient is the very convolution JAX's rule
computes, so results equal `jax.grad` through `lax.conv_general_dilated` (bitwise on jax 0.10
and 0.12; tests/test_cpu_conv.py checks them to 1e-6). GPUs and TPUs keep
`lax.conv_general_dilated`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

NHWC_HWIO = ("NHWC", "HWIO", "NHWC")

# What the backward pass of a scanned block keeps on CPU: the convolutions' outputs, by this
# name; BatchNorm and ReLU are recomputed from them (jax.checkpoint with this policy, in
# models.Stage). Storing every elementwise intermediate in the scan's stacked buffers and
# reading it back costs more than recomputing it, measured on jax 0.10 and 0.12, and takes more
# memory (docs/benchmarks.md).
CONV_OUTPUT = "cpu_conv_output"
KEEP_CONV_OUTPUTS = jax.checkpoint_policies.save_only_these_names(CONV_OUTPUT)

Padding = tuple[tuple[int, int], tuple[int, int]]


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding,
              precision: lax.PrecisionLike = None) -> jax.Array:
    """x (N, H, W, Cin), kernel (kh, kw, Cin, Cout) -> (N, H', W', Cout); explicit padding."""
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC_HWIO,
                                    precision=precision)


def _forward(x, kernel, strides, padding, precision):
    return conv_nhwc(x, kernel, strides, padding, precision), (x, kernel)


def _backward(strides, padding, precision, residuals, grad):
    x, kernel = residuals
    return (input_grad(grad, kernel, x.shape[1:3], strides, padding, precision),
            kernel_grad(x, grad, kernel.shape[:2], strides, padding, precision))


conv_nhwc.defvjp(_forward, _backward)


def input_grad(grad: jax.Array, kernel: jax.Array, input_hw: tuple[int, int],
               strides: tuple[int, int], padding: Padding,
               precision: lax.PrecisionLike = None) -> jax.Array:
    """d(loss)/d(x) from grad (N, H', W', Cout): a stride-1 convolution of `grad`, dilated by
    the forward strides, with the kernel rotated by 180 degrees and its channels swapped.

    Returns (N, H, W, Cin) for `input_hw` = (H, W). With strides > 1 the dilated input is a
    form the library kernels do not take; in the ResNets only a stage's first block strides,
    outside the scan, where this costs about 1% of a step.
    """
    flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
    pads = []
    for axis, (size, stride, (low, _)) in enumerate(zip(input_hw, strides, padding)):
        taps = kernel.shape[axis]
        dilated = (grad.shape[1 + axis] - 1) * stride + 1
        pads.append((taps - 1 - low, size + low - dilated))
    return lax.conv_general_dilated(grad, flipped, (1, 1), pads, lhs_dilation=strides,
                                    dimension_numbers=NHWC_HWIO, precision=precision)


def kernel_grad(x: jax.Array, grad: jax.Array, kernel_hw: tuple[int, int],
                strides: tuple[int, int], padding: Padding,
                precision: lax.PrecisionLike = None) -> jax.Array:
    """d(loss)/d(kernel) from x (N, H, W, Cin) and grad (N, H', W', Cout).

    A convolution over the spatial axes that sums over the batch: the input channels play the
    batch, the images the input features, and `grad` is the kernel, dilated by the forward
    strides. Returns (kh, kw, Cin, Cout).
    """
    # The barrier makes x and grad materialize before they are transposed. Without it XLA fuses
    # each transpose with what produced its operand (in a scan: the dynamic-slice that reads
    # the stacked residual), and that fusion reads in strided order, several times slower than
    # a plain transpose (the train step with and without it: docs/benchmarks.md).
    x, grad = lax.optimization_barrier((x, grad))
    channels_first = jnp.transpose(x, (3, 1, 2, 0))  # (Cin, H, W, N)
    grad_as_kernel = jnp.transpose(grad, (1, 2, 0, 3))  # (H', W', N, Cout)
    pads = []
    for axis, (stride, (low, _)) in enumerate(zip(strides, padding)):
        size, out = x.shape[1 + axis], grad.shape[1 + axis]
        # The high side is whatever makes the output exactly kernel_hw[axis] wide; negative
        # when the forward conv's strides skipped the last rows.
        pads.append((low, kernel_hw[axis] - size - low + (out - 1) * stride))
    by_channel = lax.conv_general_dilated(channels_first, grad_as_kernel, (1, 1), pads,
                                          rhs_dilation=strides, dimension_numbers=NHWC_HWIO,
                                          precision=precision)  # (Cin, kh, kw, Cout)
    return jnp.transpose(by_channel, (1, 2, 0, 3))


# Maps this small (in pixels, H x W) are convolved as one matrix product over their patches.
# On a 2x2 map XLA:CPU rewrites a padded 3x3 convolution into a form its library kernels do not
# take, and runs it far slower than a 4x4 one: most of a digits ResNet-56 step, whose third
# stage is 2x2 (docs/benchmarks.md). CIFAR's and ImageNet's maps never get this small.
TINY_MAP_PIXELS = 4


def patches_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding,
                 precision: lax.PrecisionLike = None) -> jax.Array:
    """x (N, H, W, Cin) convolved with kernel (kh, kw, Cin, Cout) as one matrix product:
    the kh * kw strided views of the padded input side by side, (N, H', W', kh * kw * Cin),
    times the kernel as a (kh * kw * Cin, Cout) matrix. JAX differentiates it (slices, pads
    and matrix products, which run as fast inside a scan as outside)."""
    taps_h, taps_w, in_features, out_features = kernel.shape
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    out_h = (padded.shape[1] - taps_h) // strides[0] + 1
    out_w = (padded.shape[2] - taps_w) // strides[1] + 1
    views = [lax.slice(padded, (0, i, j, 0),
                       (padded.shape[0], i + (out_h - 1) * strides[0] + 1,
                        j + (out_w - 1) * strides[1] + 1, in_features),
                       (1, strides[0], strides[1], 1))
             for i in range(taps_h) for j in range(taps_w)]
    patches = jnp.concatenate(views, axis=-1)  # tap-major, as the kernel reshapes
    return lax.dot_general(patches, kernel.reshape(-1, out_features), (((3,), (0,)), ((), ())),
                           precision=precision)


def cpu_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
             preferred_element_type=None, out_sharding=None):
    """Drop-in for `lax.conv_general_dilated` as flax's Conv calls it (NHWC input, HWIO kernel).

    Other forms (dilations, groups, other layouts, a dtype or sharding for the output) go to
    `lax.conv_general_dilated` unchanged.
    """
    plain = (feature_group_count == 1 and batch_group_count == 1
             and preferred_element_type is None and out_sharding is None
             and all(d == 1 for d in (lhs_dilation or (1,)))
             and all(d == 1 for d in (rhs_dilation or (1,)))
             and len(window_strides) == 2
             and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC_HWIO))
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision=precision,
            preferred_element_type=preferred_element_type, out_sharding=out_sharding)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    convolve = patches_conv if lhs.shape[1] * lhs.shape[2] <= TINY_MAP_PIXELS else conv_nhwc
    output = convolve(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding), precision)
    return checkpoint_name(output, CONV_OUTPUT)


def conv_function(backend: str):
    """The convolution to build models with on `backend` ("cpu", "gpu", "tpu")."""
    return cpu_conv if backend == "cpu" else lax.conv_general_dilated
