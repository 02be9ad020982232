"""Did a run's backward signal vanish? The one rule, its threshold and the sentence stating it.

He et al. (§4.1) argue that deep plain nets degrade *not* because gradients vanish: with
BatchNorm "the backward propagated gradients exhibit healthy norms". Each row of a run's
signals.jsonl gives, per 3x3 layer, the RMS of the per-example loss gradient w.r.t. the layer's
response; its backward ratio (`Signals.backward_ratio`) is the smallest of those over the
largest. `backward_verdict` turns a run's ratios into yes, no or unknown, and `rule_text` says
how, in words made from VANISHING_RATIO, so table.md, the report and the signals figure state the
rule they apply. Pure Python, no JAX.
"""

from __future__ import annotations

import dataclasses

from resdepth.rundir.signals import Signals

VANISHING_RATIO = 1e-3
"""The backward ratio below which a run's backward signal counts as vanished: its worst-served
3x3 layer receives less than this fraction (1e-3: three orders of magnitude less) of the
gradient RMS its best-served layer receives, so SGD all but stops updating the former's weights.

Chosen from measured runs (docs/signals.md, `python -m benchmarks.signals_study`): after the
first row, nets that train (plain and residual 20 and 56 on the digits and on random
CIFAR-shaped data, ResNet-110 on the latter) never went below 0.0126, and their worst layers
still moved; plain-110 on random CIFAR-shaped data, whose first updates blew up its stem, stayed
between 6.6e-7 and 4.7e-6, its first stage's gradients a millionth of its last stage's. 1e-3 is
a factor 12 below the first and over 200 above the second; 1e-2 would have called ResNet-56
(0.017) and plain-56 (0.0126) on random data nearly vanished."""


def rule_text() -> str:
    """The rule in words, made from VANISHING_RATIO (shown beside every verdict)."""
    ratio = VANISHING_RATIO
    return (f"Backward signal vanished: \"yes\" when the backward ratio (smallest over largest, "
            f"across the 3x3 layers, of the RMS of the loss gradient w.r.t. each layer's "
            f"response) is below {ratio:g} at some logged row after the first (the "
            f"worst-served layer gets under 1/{1 / ratio:g} of the best-served one's gradient); "
            f"\"no\" when it is at or above {ratio:g} at every row after the first that has "
            f"one; \"—\" when no row after the first has one (a single row, or values not "
            f"finite). The first row (the net as initialized) is shown, not judged: the claim "
            f"is about training.")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a run's backward ratios say (ratios are fractions in [0, 1]; steps are iterations).

    start_ratio, start_step: the first row's (None: no row, or no ratio at that row).
    end_ratio, end_step: the last row's.
    lowest_ratio, lowest_step: the smallest ratio of the rows after the first, and its row.
    unmeasured: rows after the first without a ratio (a value was not finite, as in a run that
      diverged, or every layer's gradient was 0).
    vanished: the rule's answer (`rule_text`); None when no row after the first has a ratio.
    """

    start_ratio: float | None
    start_step: int | None
    end_ratio: float | None
    end_step: int | None
    lowest_ratio: float | None
    lowest_step: int | None
    unmeasured: int
    vanished: bool | None


def backward_verdict(signals: Signals) -> Verdict:
    """The rule applied to a run's signals: vanished when some row after the first has a
    backward ratio below VANISHING_RATIO."""
    ratios = [signals.backward_ratio(row) for row in range(len(signals.steps))]
    steps = signals.steps
    later = [(ratio, step) for ratio, step in zip(ratios[1:], steps[1:]) if ratio is not None]
    lowest = min(later, default=(None, None))
    return Verdict(
        start_ratio=ratios[0] if ratios else None, start_step=steps[0] if steps else None,
        end_ratio=ratios[-1] if ratios else None, end_step=steps[-1] if steps else None,
        lowest_ratio=lowest[0], lowest_step=lowest[1],
        unmeasured=len(ratios[1:]) - len(later),
        vanished=None if not later else lowest[0] < VANISHING_RATIO)
