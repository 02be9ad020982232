"""Testing as He et al. 2016 do (§3.4): the centre view, 10-crop, and multi-scale scores.

`logits_fn` maps mean-subtracted float32 images (N, H, W, 3) to logits (N, classes), typically a
jitted model call. Scores are softmax probabilities; a prediction averages the scores of its views.

All resizing is bilinear, antialiased when downscaling (`imagenet_input.resize_bilinear`), the
same as the training input, so train and test views are resampled alike.

The multi-scale test is the fully convolutional form: the whole image at each scale goes through
the net, whose global average pooling reduces any spatial size to one score vector. Each image
size compiles `logits_fn` anew, so by default the longer side is rounded to a multiple of 32
pixels (the net's total stride), changing the aspect ratio by under 32 / (2 * shorter side) but
bounding the number of compiled shapes; `long_side_multiple=1` keeps exact aspect ratios.
"""

from __future__ import annotations

from typing import Callable, Iterable, Literal

import numpy as np

from resdepth.errors import InvalidChoice
from resdepth.data.imagenet_input import (
    IMAGE_SIZE, IMAGENET_RGB_MEAN, TEST_SHORTER_SIDE, resize_bilinear)

LogitsFn = Callable[[np.ndarray], np.ndarray]
Mode = Literal["center", "10crop", "multiscale"]
MODES: tuple[str, ...] = ("center", "10crop", "multiscale")
TEST_SCALES = (224, 256, 384, 480, 640)  # §3.4: shorter side in {224, 256, 384, 480, 640}


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def resize_shorter_side(image: np.ndarray, shorter: int, long_side_multiple: int = 1
                        ) -> np.ndarray:
    """uint8 or float (H, W, 3) -> float32 with its shorter side `shorter` pixels.

    The longer side keeps the aspect ratio, rounded to a multiple of `long_side_multiple`.
    """
    height, width = image.shape[:2]
    scale = shorter / min(height, width)
    long_side = _round_to(max(height, width) * scale, long_side_multiple)
    size = (shorter, long_side) if height <= width else (long_side, shorter)
    if size == (height, width):
        return image.astype(np.float32)  # skip the resampler: an exact identity
    return resize_bilinear(image, size).numpy().astype(np.float32)


def _subtract_mean(images: np.ndarray) -> np.ndarray:
    return (images - np.asarray(IMAGENET_RGB_MEAN, np.float32)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float64 for exact averaging."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _mean_scores(logits_fn: LogitsFn, views: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(logits_fn(_subtract_mean(views)))).mean(axis=0)


def center_crop_scores(logits_fn: LogitsFn, image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> scores (classes,) of the single view: shorter side 256, centre 224."""
    resized = resize_shorter_side(image, TEST_SHORTER_SIDE)
    height, width = resized.shape[:2]
    top, left = (height - IMAGE_SIZE) // 2, (width - IMAGE_SIZE) // 2
    return _mean_scores(logits_fn, resized[None, top:top + IMAGE_SIZE, left:left + IMAGE_SIZE])


def ten_crops(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (10, 224, 224, 3): at shorter side 256, the four corner and
    the centre crops (top-left, top-right, bottom-left, bottom-right, centre), then their flips."""
    resized = resize_shorter_side(image, TEST_SHORTER_SIDE)
    height, width = resized.shape[:2]
    size = IMAGE_SIZE
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size),
               ((height - size) // 2, (width - size) // 2)]
    crops = np.stack([resized[top:top + size, left:left + size] for top, left in corners])
    return np.concatenate([crops, crops[:, :, ::-1]])


def ten_crop_scores(logits_fn: LogitsFn, image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> scores (classes,) averaged over the 10 crops (one logits_fn call)."""
    return _mean_scores(logits_fn, ten_crops(image))


def multiscale_scores(logits_fn: LogitsFn, image: np.ndarray,
                      scales: tuple[int, ...] = TEST_SCALES, long_side_multiple: int = 32
                      ) -> np.ndarray:
    """uint8 (H, W, 3) -> scores (classes,) averaged over the whole image and its flip at each
    shorter side in `scales` (2 * len(scales) views, one logits_fn call of 2 per scale)."""
    total = 0.0
    for shorter in scales:
        resized = resize_shorter_side(image, shorter, long_side_multiple)
        total = total + _mean_scores(logits_fn, np.stack([resized, resized[:, ::-1]]))
    return total / len(scales)


def topk_errors(scores: np.ndarray, label: int) -> tuple[bool, bool]:
    """(top-1 wrong, top-5 wrong) for scores (classes,); ties broken towards lower class ids."""
    order = np.argsort(-scores, kind="stable")
    return bool(order[0] != label), bool(label not in order[:5])


def evaluate(logits_fn: LogitsFn, examples: Iterable[tuple[np.ndarray, int]], mode: Mode
             ) -> dict[str, float | int]:
    """Top-1 and top-5 error (fractions) over (uint8 image (H, W, 3), label) pairs.

    mode: "center" (one 224 view), "10crop" (the paper's Tables 2-3), or "multiscale" (Table 4).
    Returns {"top1_error", "top5_error", "count"}; errors are 0.0 for no examples. The count lets
    processes that each evaluate their own part combine the errors.
    """
    return evaluate_modes(logits_fn, examples, (mode,))[mode]


def evaluate_modes(logits_fn: LogitsFn, examples: Iterable[tuple[np.ndarray, int]],
                   modes: tuple[str, ...]) -> dict[str, dict[str, float | int]]:
    """`evaluate` for several modes in one pass over the examples (each image decoded once)."""
    score_fns = {"center": center_crop_scores, "10crop": ten_crop_scores,
                 "multiscale": multiscale_scores}
    for mode in modes:
        if mode not in score_fns:
            raise InvalidChoice(f"unknown test mode {mode!r}; choose one of {', '.join(MODES)}")
    count = 0
    wrong = {mode: [0, 0] for mode in modes}  # top-1, top-5 misses
    for image, label in examples:
        count += 1
        for mode in modes:
            wrong1, wrong5 = topk_errors(score_fns[mode](logits_fn, image), int(label))
            wrong[mode][0] += wrong1
            wrong[mode][1] += wrong5
    return {mode: {"top1_error": top1 / count if count else 0.0,
                   "top5_error": top5 / count if count else 0.0,
                   "count": count}
            for mode, (top1, top5) in wrong.items()}
