"""The nets of a dataset, measured, beside the paper's own figures: `resdepth info`'s rows.

A report, not a model: it sits in results/ beside the paper's numbers it is read against
(results/paper.py). Parameter and multiply-add counts are read off the model
(models/complexity.py); the paper's figures are as it prints them: Table 6's rounded parameter
counts (CIFAR-10, option A; it gives none for ImageNet) and Table 1's FLOPs (ImageNet
multiply-adds; none for CIFAR).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from resdepth.dataset_facts import (
    CIFAR_PAPER_DEPTHS, IMAGE_SIZE_PIXELS, IMAGENET_DEPTHS, IN_CHANNELS, NUM_CLASSES, check_depth,
    family_of)
from resdepth.models.architectures import (
    DEFAULT_SHORTCUT, check_shortcut, stage_plan, weighted_layers)
from resdepth.results import paper

PAPER_SOURCES = {
    "paper_params": "Table 6 (CIFAR-10, option A), rounded as printed (0.27M -> 270000); null where "
                    "the paper gives none (ImageNet, whose Table 1 gives FLOPs; digits; options B, C)",
    "paper_multiply_adds": "Table 1 (ImageNet FLOPs, i.e. multiply-adds); null for CIFAR"}


@dataclasses.dataclass(frozen=True)
class Catalog:
    """The residual nets of one dataset and shortcut option, one row per depth."""

    dataset: str
    shortcut: str
    image_size_pixels: int
    in_channels: int
    rows: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "paper_sources": PAPER_SOURCES}


def catalog(dataset: str, depths: list[int] | None = None, shortcut: str | None = None) -> Catalog:
    """The residual nets of `dataset` at `depths` (the paper's by default), with `shortcut`
    (the paper's option for the family by default). InvalidChoice for a bad dataset, depth or
    shortcut, before any model is built."""
    family = family_of(dataset)
    option = check_shortcut(shortcut or DEFAULT_SHORTCUT[family])
    chosen = depths or list(CIFAR_PAPER_DEPTHS if family == "cifar" else IMAGENET_DEPTHS)
    for depth in chosen:
        check_depth(family, depth, dataset)

    from resdepth.models.complexity import count_multiply_adds, count_params
    from resdepth.models.network import ModelSpec, abstract_model  # JAX: after the checks

    channels, size = IN_CHANNELS[dataset], IMAGE_SIZE_PIXELS[dataset]
    rows = []
    for depth in chosen:
        spec = ModelSpec(family, depth, True, option, NUM_CLASSES[dataset])
        plan = stage_plan(family, depth)
        label = paper.TABLE6_PARAM_LABELS.get(depth) if dataset == "cifar10" and option == "A" else None
        rows.append({"depth": depth, "layers": weighted_layers(plan),
                     "blocks_per_stage": list(plan.stage_sizes),
                     "params": count_params(abstract_model(spec, channels)),
                     "paper_params": paper.label_count(label), "paper_params_label": label,
                     "multiply_adds": count_multiply_adds(spec, size, channels),
                     "paper_multiply_adds": paper.IMAGENET_MULTIPLY_ADDS.get(depth)
                     if family == "imagenet" else None})
    return Catalog(dataset, option, size, channels, rows)
