"""Work started on a background thread now and waited for where its result is first needed.

The training loop compiles each net's layer-signals measurement (training/signals.py) this way
while the net initializes. NNX initializes a CIFAR-family net op by op, compiling each op's
small program in turn, which keeps about one core busy for seconds; the measurement's compile,
as long as the training step's, runs beside it instead of delaying the first logging row.
"""

from __future__ import annotations

import threading
from typing import Callable


class Ahead:
    """`work()` running on its own thread from construction; `wait()` joins it and raises what
    it raised, once. The thread is not a daemon: an interpreter that exits meanwhile lets the
    work (a compile in XLA) finish rather than tearing it down mid-call."""

    def __init__(self, work: Callable[[], None], name: str = "resdepth-ahead"):
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(target=self._run, args=(work,),
                                                                  name=name)
        self._thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - raised again in the waiting thread
            self._error = error

    def wait(self) -> None:
        if self._thread is None:
            return
        self._thread.join()
        self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
