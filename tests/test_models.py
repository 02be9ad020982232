"""The model family against the paper: exact parameter counts, Table 1 multiply-adds, shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from resdepth.errors import InvalidChoice
from resdepth.models.architectures import stage_plan
from resdepth.models.complexity import count_multiply_adds, count_params
from resdepth.models.network import ModelSpec, abstract_model, build_model

CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
IMAGENET_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
TABLE1_MULTIPLY_ADDS = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}


def param_shapes(model) -> dict:
    return jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_parameter_counts_are_exact_and_shared_by_the_plain_net(depth):
    residual = abstract_model(ModelSpec("cifar", depth, residual=True, shortcut="A"))
    plain = abstract_model(ModelSpec("cifar", depth, residual=False, shortcut="A"))
    assert count_params(residual) == CIFAR_PARAMS[depth]
    assert count_params(plain) == CIFAR_PARAMS[depth]
    assert param_shapes(residual) == param_shapes(plain)


@pytest.mark.parametrize("depth", sorted(IMAGENET_PARAMS))
def test_imagenet_parameter_counts_option_b(depth):
    model = abstract_model(ModelSpec("imagenet", depth, shortcut="B", num_classes=1000))
    assert count_params(model) == IMAGENET_PARAMS[depth]


@pytest.mark.parametrize("depth", sorted(TABLE1_MULTIPLY_ADDS))
def test_imagenet_multiply_adds_within_5_percent_of_table1(depth):
    macs = count_multiply_adds(ModelSpec("imagenet", depth, shortcut="B", num_classes=1000), 224)
    assert abs(macs / TABLE1_MULTIPLY_ADDS[depth] - 1) < 0.05


def test_multiply_adds_count_every_scanned_block():
    # ResNet-20 has 19 3x3 convs + fc; doubling n must add exactly the extra blocks' work.
    macs = {d: count_multiply_adds(ModelSpec("cifar", d), 32) for d in (20, 32, 44)}
    assert macs[32] - macs[20] == macs[44] - macs[32] > 0
    stage1_block = 2 * (32 * 32 * 16 * 16 * 9)
    stage2_block = 2 * (16 * 16 * 32 * 32 * 9)
    stage3_block = 2 * (8 * 8 * 64 * 64 * 9)
    assert macs[32] - macs[20] == 2 * (stage1_block + stage2_block + stage3_block)


def test_output_shapes_at_each_familys_input_size():
    cifar = build_model(ModelSpec("cifar", 8, num_classes=10))
    assert cifar(jnp.zeros((2, 32, 32, 3))).shape == (2, 10)
    imagenet = build_model(ModelSpec("imagenet", 18, shortcut="B", num_classes=1000))
    logits = imagenet(jnp.zeros((1, 224, 224, 3)))
    assert logits.shape == (1, 1000) and logits.dtype == jnp.float32


def test_option_a_adds_no_parameters_and_c_projects_every_block():
    a = abstract_model(ModelSpec("cifar", 20, shortcut="A"))
    b = abstract_model(ModelSpec("cifar", 20, shortcut="B"))
    c = abstract_model(ModelSpec("cifar", 20, shortcut="C"))
    assert count_params(a) == CIFAR_PARAMS[20]
    # B projects only the two blocks where dimensions grow (16->32, 32->64), with BN.
    assert count_params(b) - count_params(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    for stage in c.stages:
        assert stage.first.projection is not None
        assert stage.repeated.projection is not None  # the stacked (scanned) blocks too
        assert stage.repeated.projection.conv.kernel.shape[0] == stage.num_repeated
    for stage in a.stages:
        assert stage.first.projection is None


def test_plain_net_has_no_shortcut_and_differs_from_residual_output():
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    residual = build_model(ModelSpec("cifar", 14, residual=True), seed=3)
    plain = build_model(ModelSpec("cifar", 14, residual=False), seed=3)
    # Same initial weights (same seed, same tree) but different functions.
    assert jnp.array_equal(residual.head.kernel[...], plain.head.kernel[...])
    assert not jnp.allclose(residual(images), plain(images))


def test_no_batchnorm_scale_is_zero_initialized():
    for residual in (True, False):
        model = build_model(ModelSpec("cifar", 14, residual=residual))
        scales = [v for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param)) if path[-1] == "scale"]
        assert scales and all(bool(jnp.all(s[...] == 1.0)) for s in scales)


def test_bfloat16_computes_in_bfloat16_but_keeps_float32_parameters():
    model = build_model(ModelSpec("cifar", 8, compute_dtype="bfloat16"))
    assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype("float32")}
    logits, responses = model.forward_with_responses(jnp.ones((2, 32, 32, 3)))
    assert logits.dtype == jnp.float32
    jaxpr = jax.make_jaxpr(lambda x: model(x))(jnp.ones((2, 32, 32, 3)))
    assert "bf16" in str(jaxpr)
    assert model(jnp.ones((2, 32, 32, 3)), train=True).dtype == jnp.float32


def test_remat_gives_the_same_gradients():
    images = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))

    def grads(remat: bool):
        model = build_model(ModelSpec("cifar", 14, remat=remat), seed=0)
        loss = lambda m: jnp.mean(m(images, train=True) ** 2)  # noqa: E731
        return nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Param))(model)

    for a, b in zip(jax.tree.leaves(grads(False)), jax.tree.leaves(grads(True))):
        assert jnp.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_scanned_stage_holds_stacked_blocks():
    model = abstract_model(ModelSpec("cifar", 1202))
    stage = model.stages[0]
    assert stage.num_repeated == 199
    assert stage.repeated.layers[0].conv.kernel.shape == (199, 3, 3, 16, 16)


def test_response_moments_cover_every_3x3_layer():
    model = build_model(ModelSpec("cifar", 20))
    _, responses = model.forward_with_responses(jnp.ones((2, 32, 32, 3)))
    assert sum(r.shape[0] * r.shape[1] for r in responses) == 19  # stem + 18 block convs


@pytest.mark.parametrize("family,depth", [("cifar", 21), ("cifar", 2), ("imagenet", 20), ("imagenet", 56)])
def test_invalid_depths_name_the_valid_choices(family, depth):
    with pytest.raises(InvalidChoice, match="6n\\+2|one of 18, 34, 50, 101, 152"):
        stage_plan(family, depth)
