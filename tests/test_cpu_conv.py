"""The CPU convolution against `lax.conv_general_dilated` and JAX's own gradients.

`resdepth.models.cpu_conv` must be the same function as `lax.conv_general_dilated` with the
paper's padding, with the same gradients (within float rounding: 1e-6 of the largest value),
in a scanned stage as well as outside one, and its three convolutions must stay in the one form
XLA's CPU library kernels take (which is the point of it: speed inside scans); maps of 2x2
pixels or less are one matrix product instead.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from resdepth.models.cpu_conv import NHWC_HWIO, cpu_conv
from resdepth.models.network import ModelSpec, build_model, paper_padding
from resdepth.runtime.xla_flags import YNN_CONVOLUTIONS_OFF, set_xla_flags

TOLERANCE = 1e-6  # relative to the largest magnitude of the reference


def assert_close(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    scale = max(float(np.max(np.abs(expected))), 1.0)
    assert float(np.max(np.abs(actual - expected))) <= TOLERANCE * scale


def lax_conv(x, kernel, stride):
    dimension_numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, NHWC_HWIO)
    return lax.conv_general_dilated(x, kernel, (stride, stride), paper_padding(kernel.shape[0]),
                                    dimension_numbers=dimension_numbers)


def resdepth_conv(x, kernel, stride):
    # Called as flax's Conv calls it: explicit pads, ConvDimensionNumbers, keyword options.
    dimension_numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, NHWC_HWIO)
    return cpu_conv(x, kernel, (stride, stride), paper_padding(kernel.shape[0]),
                    lhs_dilation=(1, 1), rhs_dilation=(1, 1),
                    dimension_numbers=dimension_numbers, feature_group_count=1, precision=None,
                    out_sharding=None)


def random_operands(size, in_features, out_features, kernel, stride, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(keys[0], (4, size, size, in_features))
    w = jax.random.normal(keys[1], (kernel, kernel, in_features, out_features))
    out_size = (size + 2 * (kernel // 2) - kernel) // stride + 1
    cotangent = jax.random.normal(keys[2], (4, out_size, out_size, out_features))
    return x, w, cotangent


# Even and odd sizes: with stride 2 an odd size leaves no row unread, an even one does. Sizes
# 1 and 2 take the small-map path (cpu_conv.patches_conv, a matrix product over patches).
SHAPES = [(kernel, stride, size) for kernel in (1, 3) for stride in (1, 2) for size in (8, 9, 1, 2)]


@pytest.mark.parametrize("kernel,stride,size", SHAPES)
def test_forward_and_gradients_match_lax(kernel, stride, size):
    x, w, cotangent = random_operands(size, 5, 6, kernel, stride)
    expected, expected_vjp = jax.vjp(lambda a, b: lax_conv(a, b, stride), x, w)
    actual, actual_vjp = jax.vjp(lambda a, b: resdepth_conv(a, b, stride), x, w)
    assert_close(actual, expected)
    for got, want in zip(actual_vjp(cotangent), expected_vjp(cotangent)):
        assert_close(got, want)


@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 1), (1, 2), (3, 2)])
def test_jitted_gradients_match_jax_grad(kernel, stride):
    x, w, cotangent = random_operands(9, 3, 4, kernel, stride, seed=1)

    def loss(conv):
        return lambda a, b: jnp.sum(conv(a, b, stride) * cotangent)

    expected = jax.jit(jax.grad(loss(lax_conv), argnums=(0, 1)))(x, w)
    actual = jax.jit(jax.grad(loss(resdepth_conv), argnums=(0, 1)))(x, w)
    for got, want in zip(actual, expected):
        assert_close(got, want)


def scanned_loss(conv):
    """A residual stack of 3x3 convs applied by a scan, as a stage applies its blocks."""
    def loss(kernels, x):
        def block(carry, kernel):
            return jax.nn.relu(conv(carry, kernel, 1)) + carry, None

        y, _ = lax.scan(block, x, kernels)
        return jnp.mean(jnp.square(y))

    return loss


def test_gradients_inside_a_scan_match_jax_grad():
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 6))
    kernels = 0.2 * jax.random.normal(jax.random.key(3), (3, 3, 3, 6, 6))
    expected = jax.jit(jax.grad(scanned_loss(lax_conv), argnums=(0, 1)))(kernels, x)
    actual = jax.jit(jax.grad(scanned_loss(resdepth_conv), argnums=(0, 1)))(kernels, x)
    for got, want in zip(actual, expected):
        assert_close(got, want)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA CPU's convolution forms")
def test_every_convolution_of_a_scanned_gradient_is_in_the_library_form():
    # XLA CPU leaves a convolution inside a while loop in the form it was written in, and only
    # NHWC input, HWIO kernel, NHWC output goes to Eigen/YNNPACK; other forms run 25-40x slower.
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 6))
    kernels = jnp.zeros((2, 3, 3, 6, 6))
    hlo = jax.jit(jax.grad(scanned_loss(resdepth_conv))).lower(kernels, x).compile().as_text()
    labels = re.findall(r" convolution\(.*?dim_labels=(\S+?),", hlo)
    assert len(labels) >= 3  # forward, input and kernel gradient
    assert set(labels) == {"b01f_01io->b01f"}


def model_loss_and_grads(spec: ModelSpec, images, labels):
    """Loss and parameter gradients of one training-mode batch, jitted as the train step is."""
    graphdef, state = nnx.split(build_model(spec, seed=0))

    def loss(model):
        logits = model(images, train=True)
        return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    @jax.jit
    def loss_and_grads(state):
        model = nnx.merge(graphdef, state)
        return nnx.value_and_grad(loss, argnums=nnx.DiffState(0, nnx.Param))(model)

    return loss_and_grads(state)


@pytest.mark.parametrize("depth", [8, 14])  # 14: one scanned block per stage
def test_resnet_loss_and_gradients_match_the_lax_convolution(depth):
    spec = ModelSpec("cifar", depth, bn_group_size=2)
    images = jax.random.normal(jax.random.key(4), (4, 16, 16, 3))
    labels = jnp.array([0, 3, 5, 9])
    loss, grads = model_loss_and_grads(spec, images, labels)
    # The same net built for an accelerator: XLA's convolution and JAX's own gradients.
    expected_loss, expected_grads = model_loss_and_grads(
        dataclasses.replace(spec, backend="gpu"), images, labels)
    assert_close(loss, expected_loss)
    actual_leaves, actual_tree = jax.tree.flatten(grads)
    expected_leaves, expected_tree = jax.tree.flatten(expected_grads)
    assert actual_tree == expected_tree
    for got, want in zip(actual_leaves, expected_leaves):
        assert_close(got, want)


def test_models_on_cpu_are_built_with_cpu_conv():
    model = build_model(ModelSpec("cifar", 8))
    expected = cpu_conv if jax.default_backend() == "cpu" else lax.conv_general_dilated
    assert model.stem.conv.conv_general_dilated is expected


@pytest.mark.parametrize("version,before,after", [
    ("0.10.2", "", YNN_CONVOLUTIONS_OFF),
    ("0.12.0.1", "--xla_dump_to=/tmp/x", "--xla_dump_to=/tmp/x " + YNN_CONVOLUTIONS_OFF),
    ("0.11.2", "", ""),  # not measured there: left alone
    ("0.12.0", "--xla_cpu_experimental_ynn_fusion_type=reduce",
     "--xla_cpu_experimental_ynn_fusion_type=reduce"),  # the user's choice stands
])
def test_xla_flags_are_set_only_on_measured_jaxlib_versions(version, before, after):
    environ = {"XLA_FLAGS": before} if before else {}
    set_xla_flags(environ, version)
    assert environ.get("XLA_FLAGS", "") == after


def test_small_maps_are_one_matrix_product_inside_a_scan_too():
    from resdepth.models.cpu_conv import TINY_MAP_PIXELS

    assert TINY_MAP_PIXELS == 4  # 2x2: the digits nets' third stage
    x = jax.random.normal(jax.random.key(4), (4, 2, 2, 6))
    kernels = 0.2 * jax.random.normal(jax.random.key(5), (3, 3, 3, 6, 6))
    expected = jax.jit(jax.grad(scanned_loss(lax_conv), argnums=(0, 1)))(kernels, x)
    gradient = jax.jit(jax.grad(scanned_loss(resdepth_conv), argnums=(0, 1)))
    for got, want in zip(gradient(kernels, x), expected):
        assert_close(got, want)
    hlo = gradient.lower(kernels, x).compile().as_text()
    assert " convolution(" not in hlo and " dot(" in hlo
