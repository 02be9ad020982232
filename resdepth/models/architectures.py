"""Which blocks each depth has: §4.2 (CIFAR, depth 6n+2) and Table 1 (ImageNet).

Pure Python with no JAX import, so the CLI can validate a depth before loading anything heavy.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from resdepth.errors import InvalidChoice

BlockKind = Literal["basic", "bottleneck"]

IMAGENET_DEPTHS: dict[int, tuple[BlockKind, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
CIFAR_PAPER_DEPTHS = (20, 32, 44, 56, 110, 1202)
DATASET_FAMILIES = {"cifar10": "cifar", "digits": "cifar", "imagenet": "imagenet"}
SHORTCUT_OPTIONS = ("A", "B", "C")
DEFAULT_SHORTCUT = {"cifar": "A", "imagenet": "B"}


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """Stem width, block kind, and per stage its block count and (bottleneck) width."""

    block_kind: BlockKind
    stage_sizes: tuple[int, ...]
    widths: tuple[int, ...]
    stem_features: int


def cifar_blocks_per_stage(depth: int, dataset: str | None = None) -> int:
    """n for depth 6n + 2, or InvalidChoice naming `dataset` (the user's) if given."""
    if depth < 8 or (depth - 2) % 6:
        what = "CIFAR" if dataset is None else dataset
        nets = "" if dataset in (None, "cifar10") else " (the CIFAR nets)"
        raise InvalidChoice(f"{what} depth must be 6n+2{nets} with n >= 1 "
                            f"(8, 14, 20, 32, 44, 56, 110, 1202, ...), got {depth}")
    return (depth - 2) // 6


def stage_plan(family: str, depth: int, dataset: str | None = None) -> StagePlan:
    """The stage layout of the `family` ("cifar" or "imagenet") net with `depth` weighted layers;
    a bad depth's message names `dataset`, the user's choice, if given."""
    if family == "cifar":
        n = cifar_blocks_per_stage(depth, dataset)
        return StagePlan("basic", (n, n, n), (16, 32, 64), stem_features=16)
    if family == "imagenet":
        if depth not in IMAGENET_DEPTHS:
            valid = ", ".join(map(str, IMAGENET_DEPTHS))
            raise InvalidChoice(f"ImageNet depth must be one of {valid}, got {depth}")
        kind, sizes = IMAGENET_DEPTHS[depth]
        return StagePlan(kind, sizes, (64, 128, 256, 512), stem_features=64)
    raise InvalidChoice(f"unknown model family {family!r}; choose cifar or imagenet")


def family_of(dataset: str) -> str:
    """The model family a dataset uses, or InvalidChoice naming the datasets."""
    try:
        return DATASET_FAMILIES[dataset]
    except KeyError:
        valid = ", ".join(DATASET_FAMILIES)
        raise InvalidChoice(f"unknown dataset {dataset!r}; choose one of {valid}") from None


def check_shortcut(option: str) -> str:
    """The upper-cased shortcut option, or InvalidChoice naming A, B, C."""
    if option.upper() not in SHORTCUT_OPTIONS:
        raise InvalidChoice(f"unknown shortcut option {option!r}; choose A, B or C (paper §3.3)")
    return option.upper()


def parse_depths(text: str) -> list[int]:
    """'20,56,110' -> [20, 56, 110], or InvalidChoice."""
    try:
        depths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidChoice(f"depths must be comma-separated integers, got {text!r}") from None
    if not depths:
        raise InvalidChoice("no depth given")
    return depths


def weighted_layers(plan: StagePlan) -> int:
    """Convolutions on the main path plus the final dense layer (the paper's 'layers')."""
    per_block = 2 if plan.block_kind == "basic" else 3
    return 1 + per_block * sum(plan.stage_sizes) + 1
