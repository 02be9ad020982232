"""The training step as it was before layer signals existed, for benchmarks of what they cost.

`untap()` makes training/signals.py give the net no taps (`sinks` None, so network.ResNet runs
its responses untapped) and measure nothing (`step_signals` {}): a step traced afterwards is
the one of before signals existed, taking the same arguments. It returns the function that
undoes it; `untapped()` is both around a block. A step keeps what it was traced with, so the
patch must be in force when the step is first called (or lowered).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from resdepth.training import signals


def untap() -> Callable[[], None]:
    """Untaps every step traced from now on; returns what restores the taps."""
    saved = signals.sinks, signals.step_signals
    signals.sinks = lambda model, measuring: None
    signals.step_signals = lambda *arguments: {}

    def restore() -> None:
        signals.sinks, signals.step_signals = saved

    return restore


@contextlib.contextmanager
def untapped() -> Iterator[None]:
    restore = untap()
    try:
        yield
    finally:
        restore()
