"""What each dataset is, and which depths its family of nets has: the facts the rest reads.

The bottom of the package, beside errors.py and choices.py (tests/test_layout.py): config
validation checks a dataset and a depth here, models/ builds the nets these facts describe and
data/ loads images of these sizes, so none of them has to ask another. Pure Python, no JAX.
"""

from __future__ import annotations

from typing import Literal

from resdepth.errors import InvalidChoice

Family = Literal["cifar", "imagenet"]
BlockKind = Literal["basic", "bottleneck"]

# Per dataset, keyed by the name data.dataset takes: the family of nets it trains (cifar10 and
# the digits share the CIFAR nets), the side of a training input image in pixels, its channels
# and its classes. A new dataset needs a line in each (tests/test_config.py checks).
DATASET_FAMILIES: dict[str, Family] = {
    "cifar10": "cifar", "digits": "cifar", "imagenet": "imagenet"}
IMAGE_SIZE_PIXELS = {"cifar10": 32, "digits": 8, "imagenet": 224}
IN_CHANNELS = {"cifar10": 3, "digits": 1, "imagenet": 3}
NUM_CLASSES = {"cifar10": 10, "digits": 10, "imagenet": 1000}

# CIFAR nets have 6n+2 weighted layers, n basic blocks per stage (§4.2); the paper trains these.
CIFAR_PAPER_DEPTHS = (20, 32, 44, 56, 110, 1202)
# ImageNet nets are Table 1's five: per depth, the block kind and the blocks of each stage.
IMAGENET_DEPTHS: dict[int, tuple[BlockKind, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def family_of(dataset: str) -> Family:
    """The family of nets `dataset` trains, or InvalidChoice naming the datasets."""
    try:
        return DATASET_FAMILIES[dataset]
    except KeyError:
        valid = ", ".join(DATASET_FAMILIES)
        raise InvalidChoice(f"unknown dataset {dataset!r}; choose one of {valid}") from None


def cifar_blocks_per_stage(depth: int, dataset: str | None = None) -> int:
    """n for depth 6n + 2, or InvalidChoice naming `dataset` (the user's) if given."""
    if depth < 8 or (depth - 2) % 6:
        what = "CIFAR" if dataset is None else dataset
        nets = "" if dataset in (None, "cifar10") else " (the CIFAR nets)"
        raise InvalidChoice(f"{what} depth must be 6n+2{nets} with n >= 1 "
                            f"(8, 14, {', '.join(map(str, CIFAR_PAPER_DEPTHS))}, ...), got {depth}")
    return (depth - 2) // 6


def check_depth(family: str, depth: int, dataset: str | None = None) -> None:
    """Nothing if `family` ("cifar" or "imagenet") has a net of `depth` weighted layers, else
    InvalidChoice saying which depths it has (naming `dataset`, the user's choice, if given)."""
    if family == "cifar":
        cifar_blocks_per_stage(depth, dataset)
    elif family == "imagenet":
        if depth not in IMAGENET_DEPTHS:
            valid = ", ".join(map(str, IMAGENET_DEPTHS))
            raise InvalidChoice(f"ImageNet depth must be one of {valid}, got {depth}")
    else:
        raise InvalidChoice(f"unknown model family {family!r}; choose cifar or imagenet")
