"""The single-run core: the step, the loop and the run's life know nothing of packs, and the
package defines its nets once (a pack is network.ResNet with the runs as its lanes)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "resdepth"
CORE = ("training/step.py", "training/loop.py", "training/session.py")
PACK_WORDS = re.compile(r"pack|stacked|formulation|graphdefs", re.IGNORECASE)


@pytest.mark.parametrize("module", CORE)
def test_the_single_run_core_never_speaks_of_packs(module):
    text = (PACKAGE / module).read_text()
    found = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
             if PACK_WORDS.search(line)]
    assert not found, f"{module} mentions packing: {found}"


def test_the_word_check_would_see_a_pack():
    assert PACK_WORDS.search("session.packed") and PACK_WORDS.search("graphdefs[0]")
    assert not PACK_WORDS.search("one run alone, its graphdef")


def resnet_classes() -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and "resnet" in node.name.lower():
                found.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    return found


def test_the_package_defines_one_resnet_class():
    assert resnet_classes() == ["models/network.py:ResNet"]


def test_a_packed_net_is_that_one_class_with_lanes():
    from flax import nnx

    from resdepth.models.network import ModelSpec, ResNet
    from resdepth.training.packing.net import lanes_for

    spec = ModelSpec("cifar", 8, True, "A", 10, "tf32", backend="cpu")
    single = nnx.eval_shape(lambda: ResNet(spec, rngs=nnx.Rngs(0), in_channels=1))
    wide = nnx.eval_shape(lambda: ResNet(spec, rngs=nnx.Rngs(0), in_channels=1,
                                         lanes=lanes_for(spec, [True, False], "wide")))
    assert wide.lanes == 2 and single.lanes == 1
    # The same parameter paths, each leaf the two runs' joined on its last axis.
    ones, twos = (list(nnx.state(model, nnx.Param).flat_state()) for model in (single, wide))
    assert [path for path, _ in ones] == [path for path, _ in twos]
    for (path, one), (_, two) in zip(ones, twos):
        assert two.value.shape[:-1] == one.value.shape[:-1], path
        assert two.value.shape[-1] == 2 * one.value.shape[-1], path
