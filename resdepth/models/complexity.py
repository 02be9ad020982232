"""Parameter and multiply-add counts, read off the model itself rather than a formula.

Multiply-adds are counted from the traced program (jaxpr): every convolution and matrix product,
with scanned blocks counted once per iteration. Only those two primitives are counted, as the
paper's FLOPs (Table 1) count multiply-adds of conv and fc layers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from resdepth.models.network import ModelSpec, abstract_model


def count_params(model: nnx.Module) -> int:
    """Trainable parameters (conv kernels, BN scale and bias, dense); not BN running statistics."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _equation_multiply_adds(eqn) -> int:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        out = eqn.outvars[0].aval.shape
        kernel = eqn.invars[1].aval.shape
        dims = eqn.params["dimension_numbers"]
        spec = dims.rhs_spec  # (out feature dim, in feature dim, spatial dims...)
        per_output = kernel[spec[1]] * math.prod(kernel[d] for d in spec[2:])
        return math.prod(out) * per_output
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
    return 0


def _jaxpr_multiply_adds(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += _equation_multiply_adds(eqn)
        repeat = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for sub in _subjaxprs(eqn):
            total += repeat * _jaxpr_multiply_adds(sub)
    return total


def _subjaxprs(eqn):
    for value in eqn.params.values():
        for item in (value if isinstance(value, (list, tuple)) else (value,)):
            if hasattr(item, "jaxpr") and hasattr(item, "consts"):  # ClosedJaxpr
                yield item.jaxpr
            elif hasattr(item, "eqns"):  # Jaxpr
                yield item


def count_multiply_adds(spec: ModelSpec, image_size: int, in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass for one image of image_size x image_size pixels."""
    graphdef, state = nnx.split(abstract_model(spec, in_channels))

    def forward(state, images):
        return nnx.merge(graphdef, state)(images, train=False)

    images = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
    closed = jax.make_jaxpr(forward)(state, images)
    return _jaxpr_multiply_adds(closed.jaxpr)
