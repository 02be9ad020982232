"""The CPU convolution of resdepth up to 76b50d0, kept to time against `resdepth.models.cpu_conv`.

Its kernel gradient is one matrix product per kernel tap, which XLA's CPU backend runs at the
same speed inside and outside a scan; its input gradient is a convolution. `make bench` times
the train step built with it against the current one (`train_throughput --compare per-tap`).
Not used by the library.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              padding: tuple[tuple[int, int], ...]) -> jax.Array:
    """x (N, H, W, Cin), kernel (kh, kw, Cin, Cout) -> (N, H', W', Cout)."""
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC_HWIO)


def _forward(x, kernel, strides, padding):
    return conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _backward(strides, padding, residuals, grad):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    if strides == (1, 1):
        # The input gradient of a stride-1 conv is a forward conv of the output gradient with
        # the kernel rotated by 180 degrees and its in/out channels swapped.
        flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
        back_padding = ((kh - 1 - padding[0][0], kh - 1 - padding[0][1]),
                        (kw - 1 - padding[1][0], kw - 1 - padding[1][1]))
        grad_x = lax.conv_general_dilated(grad, flipped, (1, 1), back_padding,
                                          dimension_numbers=NHWC_HWIO)
    else:
        _, input_vjp = jax.vjp(
            lambda inp: lax.conv_general_dilated(inp, kernel, strides, padding,
                                                 dimension_numbers=NHWC_HWIO), x)
        (grad_x,) = input_vjp(grad)
    out_h, out_w = grad.shape[1:3]
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    taps = []
    for i in range(kh):
        for j in range(kw):
            window = lax.slice(padded, (0, i, j, 0),
                               (x.shape[0], i + strides[0] * (out_h - 1) + 1,
                                j + strides[1] * (out_w - 1) + 1, x.shape[3]),
                               (1, strides[0], strides[1], 1))
            taps.append(jnp.einsum("nhwi,nhwo->io", window, grad,
                                   preferred_element_type=jnp.float32))
    grad_kernel = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
    return grad_x, grad_kernel


conv_nhwc.defvjp(_forward, _backward)


def per_tap_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, **kwargs):
    """Drop-in for `lax.conv_general_dilated` as flax's Conv calls it (NHWC input, HWIO kernel)."""
    plain = (feature_group_count == 1 and not kwargs.get("batch_group_count", 1) > 1
             and all(d == 1 for d in (lhs_dilation or (1,)))
             and all(d == 1 for d in (rhs_dilation or (1,)))
             and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC_HWIO))
    if not plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count,
                                        **kwargs)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    return conv_nhwc(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding))
