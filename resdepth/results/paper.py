"""The numbers of He et al. (CVPR 2016) that resdepth's results are held against, as data.

Errors here are percent, as printed in the paper (files written by runs hold fractions).
Nets are keyed by `arch` ("plain" or "residual"), depth in weighted layers, and for the
ImageNet tables the shortcut option ("A", "B", "C"; None for a plain net, which has none).
"""

from __future__ import annotations

PaperKey = tuple[str, int, str | None]  # (arch, depth, shortcut)

# Table 6: CIFAR-10 test error (%) of ResNets with augmentation; the paper plots plain nets only.
TABLE6_TEST_ERROR_PERCENT: dict[int, float] = {
    20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
# ResNet-110's 6.43 is the best of 5 runs; their mean and standard deviation:
TABLE6_RESNET110_MEAN_STD_PERCENT: tuple[float, float] = (6.61, 0.16)
TABLE6_PARAM_LABELS: dict[int, str] = {
    20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M", 1202: "19.4M"}

# §4.2: exact parameter counts with option A shortcuts, 10 classes, RGB input.
CIFAR_PARAMS_OPTION_A: dict[int, int] = {
    20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}

# Table 1: multiply-adds of one 224x224 forward pass ("FLOPs" in the paper).
IMAGENET_MULTIPLY_ADDS: dict[int, float] = {
    18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}

# Option B parameter counts, 1000 classes, as torchvision counts them: not the paper's (it gives
# FLOPs for ImageNet, no parameter counts); a check of our nets, never shown as the paper's.
IMAGENET_PARAMS_OPTION_B: dict[int, int] = {
    18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}

# Table 2: ImageNet validation top-1 error (%), 10-crop testing; ResNets use option A.
TABLE2_TOP1_TENCROP_PERCENT: dict[PaperKey, float] = {
    ("plain", 18, None): 27.94, ("plain", 34, None): 28.54,
    ("residual", 18, "A"): 27.88, ("residual", 34, "A"): 25.03}

# Table 3: ImageNet validation (top-1, top-5) error (%), 10-crop testing.
TABLE3_TENCROP_PERCENT: dict[PaperKey, tuple[float, float]] = {
    ("plain", 34, None): (28.54, 10.02),
    ("residual", 34, "A"): (25.03, 7.76),
    ("residual", 34, "B"): (24.52, 7.46),
    ("residual", 34, "C"): (24.19, 7.40),
    ("residual", 50, "B"): (22.85, 6.71),
    ("residual", 101, "B"): (21.75, 6.05),
    ("residual", 152, "B"): (21.43, 5.71)}

# Table 4: single-model ImageNet validation (top-1, top-5) error (%), multi-scale testing.
TABLE4_MULTISCALE_PERCENT: dict[PaperKey, tuple[float, float]] = {
    ("residual", 34, "B"): (21.84, 5.71),
    ("residual", 34, "C"): (21.53, 5.60),
    ("residual", 50, "B"): (20.74, 5.25),
    ("residual", 101, "B"): (19.87, 4.60),
    ("residual", 152, "B"): (19.38, 4.49)}


def paper_key(arch: str, depth: int, shortcut: str | None) -> PaperKey:
    """The table key of a net; a plain net has no shortcut, whatever its config says."""
    return (arch, depth, None if arch == "plain" else shortcut)


def label_count(label: str | None) -> int | None:
    """The number a rounded label of Table 6 stands for ("0.27M" -> 270000), or None."""
    if not label:
        return None
    return round(float(label.removesuffix("M")) * 1_000_000)


def cifar_params_option_a(depth: int) -> int:
    """97,216 n - 21,926 parameters for depth 6n + 2 (§4.2; 10 classes, RGB input)."""
    return 97_216 * ((depth - 2) // 6) - 21_926


def table6_test_error(arch: str, depth: int) -> float | None:
    """Table 6's CIFAR-10 test error (%) of this net, or None (plain nets, unlisted depths)."""
    return TABLE6_TEST_ERROR_PERCENT.get(depth) if arch == "residual" else None


def tencrop_error(arch: str, depth: int, shortcut: str | None
                  ) -> tuple[float, float | None] | None:
    """(top-1, top-5 or None) 10-crop error (%) from Table 3, else Table 2, else None."""
    key = paper_key(arch, depth, shortcut)
    if key in TABLE3_TENCROP_PERCENT:
        return TABLE3_TENCROP_PERCENT[key]
    if key in TABLE2_TOP1_TENCROP_PERCENT:
        return TABLE2_TOP1_TENCROP_PERCENT[key], None  # Table 2 gives top-1 only
    return None


def multiscale_error(arch: str, depth: int, shortcut: str | None
                     ) -> tuple[float, float] | None:
    """(top-1, top-5) multi-scale error (%) from Table 4, or None."""
    return TABLE4_MULTISCALE_PERCENT.get(paper_key(arch, depth, shortcut))
