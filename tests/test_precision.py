"""model.compute_dtype's three arithmetics are what they say (models/network.py `arithmetic`).

"float32": every convolution and the dense layer at precision HIGHEST (full float32, as the
paper's Caffe); "tf32": JAX's default precision (TF32 tensor cores on Ampere/Hopper GPUs; on CPU
the same float32 arithmetic); "bfloat16": bfloat16 convolutions, float32 parameters.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resdepth.models.network import ModelSpec, arithmetic, build_model
from resdepth.rundir.identity import PRECISION_NAMES, PRECISION_NAMES_KEY, saved_as_current


def reference_conv(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """float64 NHWC x HWIO convolution with k//2 padding on every side, tap by tap."""
    x, kernel = x.astype(np.float64), kernel.astype(np.float64)
    taps = kernel.shape[0]
    pad = taps // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h = (padded.shape[1] - taps) // stride + 1
    out_w = (padded.shape[2] - taps) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(taps):
        for j in range(taps):
            window = padded[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride]
            out += np.einsum("nhwc,co->nhwo", window, kernel[i, j])
    return out


def relative_error(value, reference) -> float:
    value = np.asarray(jnp.asarray(value, jnp.float32), np.float64)
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def lowered_precisions(compute_dtype: str, backend: str) -> list[str]:
    """The precision of every convolution and dot of a ResNet-8's forward and backward pass."""
    model = build_model(ModelSpec("cifar", 8, compute_dtype=compute_dtype, backend=backend))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    images = jnp.ones((2, 8, 8, 3))

    def loss(params):
        return jnp.mean(nnx.merge(graphdef, params, rest)(images) ** 2)

    text = jax.jit(jax.grad(loss)).lower(params).as_text()
    ops = [line for line in text.splitlines()
           if "stablehlo.convolution" in line or "stablehlo.dot_general" in line]
    # A convolution says `precision_config = [#stablehlo<precision P>, ...]`, a dot
    # `precision = [P, P]`; an op that says neither is at the default.
    return [" ".join(sorted(set(re.findall(r"\b(DEFAULT|HIGHEST|HIGH)\b", line)))) or "DEFAULT"
            for line in ops]


@pytest.mark.parametrize("backend", ["cpu", "gpu"])  # "gpu": XLA's convolution and JAX's gradients
def test_float32_is_precision_highest_everywhere_and_tf32_is_the_default(backend):
    full, tf32, bf16 = (lowered_precisions(dtype, backend) for dtype in ("float32", "tf32", "bfloat16"))
    # ResNet-8: 7 convs and the dense layer forward; 6 input and 7 kernel gradients, 2 for the dense.
    assert len(full) == len(tf32) == len(bf16) == 23
    assert set(full) == {"HIGHEST"}
    assert set(tf32) == set(bf16) == {"DEFAULT"}


def test_float32_matches_a_float64_reference_and_tf32_is_float32_on_cpu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
    features = rng.standard_normal((4, 64)).astype(np.float32)
    outputs = {}
    for dtype in ("float32", "tf32", "bfloat16"):
        model = build_model(ModelSpec("cifar", 8, compute_dtype=dtype), seed=1)
        conv = model.stages[0].first.layers[1].conv  # 16 -> 16 channels, 3x3, stride 1
        kernel = np.asarray(conv.kernel[...])
        head_kernel, head_bias = np.asarray(model.head.kernel[...]), np.asarray(model.head.bias[...])
        outputs[dtype] = (conv(jnp.asarray(x)), model.head(jnp.asarray(features)))
        assert kernel.dtype == head_kernel.dtype == np.float32  # parameters are float32 in all three
    conv_reference = reference_conv(x, kernel, 1)
    head_reference = features.astype(np.float64) @ head_kernel.astype(np.float64) + head_bias
    conv_full, head_full = outputs["float32"]
    assert conv_full.dtype == head_full.dtype == jnp.float32
    assert relative_error(conv_full, conv_reference) < 1e-6  # float32 rounding (tf32 would be ~3e-4)
    assert relative_error(head_full, head_reference) < 1e-6
    conv_tf32, head_tf32 = outputs["tf32"]
    assert conv_tf32.dtype == jnp.float32
    if jax.default_backend() == "cpu":  # XLA:CPU has no TF32: the same float32 arithmetic
        np.testing.assert_array_equal(conv_tf32, conv_full)
        np.testing.assert_array_equal(head_tf32, head_full)
    else:
        assert relative_error(conv_tf32, conv_reference) < 1e-2
    conv_bf16, head_bf16 = outputs["bfloat16"]
    assert conv_bf16.dtype == jnp.bfloat16 and head_bf16.dtype == jnp.float32
    assert 1e-4 < relative_error(conv_bf16, conv_reference) < 2e-2  # bfloat16 operands


def test_arithmetic_of_each_name():
    assert arithmetic("float32") == (jnp.float32, jax.lax.Precision.HIGHEST)
    assert arithmetic("tf32") == (jnp.float32, None)
    assert arithmetic("bfloat16") == (jnp.bfloat16, None)
    with pytest.raises(ValueError):
        arithmetic("float16")


def test_config_json_from_before_the_three_names_reads_float32_as_tf32():
    old = {"config": {"model": {"depth": 20, "compute_dtype": "float32"}}, "fingerprint": "f",
           "recipe_fingerprint": "r", "code_version": "v"}
    read = saved_as_current(old)
    assert read["config"]["model"] == {"depth": 20, "compute_dtype": "tf32"}
    assert "fingerprint" not in read and "recipe_fingerprint" not in read and read["code_version"] == "v"
    assert old["config"]["model"]["compute_dtype"] == "float32"  # the input is not changed
    new = {**old, PRECISION_NAMES_KEY: PRECISION_NAMES}
    assert saved_as_current(new) is new
    bf16 = {"config": {"model": {"compute_dtype": "bfloat16"}}}
    assert saved_as_current(bf16) is bf16 and saved_as_current(None) is None


def test_a_run_directory_from_before_the_three_names_resumes_as_tf32(tmp_path):
    import json

    from resdepth.config import load_config, parse_override
    from resdepth.rundir.directory import RunConflict, RunDirectory
    from resdepth.rundir.record import read_run

    config = load_config("cifar10")
    assert config.model.compute_dtype == "tf32"  # the default: today's arithmetic
    old = config.to_dict()
    old["model"]["compute_dtype"] = "float32"  # as such a run's config.json says it
    (tmp_path / "config.json").write_text(json.dumps({"config": old}))
    RunDirectory(tmp_path).check_same_run(config)  # the same arithmetic: resumes
    with pytest.raises(RunConflict, match="compute_dtype 'tf32' -> 'float32'"):
        RunDirectory(tmp_path).check_same_run(load_config("cifar10", [parse_override("model.compute_dtype='float32'")]))
    assert read_run(tmp_path).config["model"]["compute_dtype"] == "tf32"
