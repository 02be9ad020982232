"""Which blocks each depth has: §4.2 (CIFAR, depth 6n+2) and Table 1 (ImageNet).

Pure Python with no JAX import, so the CLI can check a net before loading anything heavy. Which
depths exist is a fact of the dataset's family (dataset_facts.py); this module lays them out.
"""

from __future__ import annotations

import dataclasses

from resdepth.choices import SHORTCUTS
from resdepth.dataset_facts import (
    IMAGENET_DEPTHS, BlockKind, cifar_blocks_per_stage, check_depth)
from resdepth.errors import InvalidChoice

DEFAULT_SHORTCUT = {"cifar": "A", "imagenet": "B"}  # the paper's option per family (§4.2, §3.3)


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """Stem width, block kind, and per stage its block count and (bottleneck) width."""

    block_kind: BlockKind
    stage_sizes: tuple[int, ...]
    widths: tuple[int, ...]
    stem_features: int


def stage_plan(family: str, depth: int, dataset: str | None = None) -> StagePlan:
    """The stage layout of the `family` ("cifar" or "imagenet") net with `depth` weighted layers;
    a bad depth's message names `dataset`, the user's choice, if given."""
    check_depth(family, depth, dataset)
    if family == "cifar":
        n = cifar_blocks_per_stage(depth)
        return StagePlan("basic", (n, n, n), (16, 32, 64), stem_features=16)
    kind, sizes = IMAGENET_DEPTHS[depth]
    return StagePlan(kind, sizes, (64, 128, 256, 512), stem_features=64)


def check_shortcut(option: str) -> str:
    """The upper-cased shortcut option, or InvalidChoice naming A, B, C."""
    if option.upper() not in SHORTCUTS:
        choose = f"{', '.join(SHORTCUTS[:-1])} or {SHORTCUTS[-1]}"
        raise InvalidChoice(f"unknown shortcut option {option!r}; choose {choose} (paper §3.3)")
    return option.upper()


def weighted_layers(plan: StagePlan) -> int:
    """Convolutions on the main path plus the final dense layer (the paper's 'layers')."""
    per_block = 2 if plan.block_kind == "basic" else 3
    return 1 + per_block * sum(plan.stage_sizes) + 1
