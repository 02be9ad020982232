"""Live curves: a run's metrics rows also written as TensorBoard event files (opt-in).

With `run.tensorboard = true` (or `--tensorboard`), every "train" and "eval" row that a run
appends to metrics.jsonl is also written, field by field, as a scalar at the row's step into
RUN_DIR/tensorboard/, under the tag "<row type>/<field>" ("train/train_error",
"eval/test_error"; errors are fractions, as in the file), and every "signals" event (the rows of
signals.jsonl) as one scalar per layer and quantity, tagged "signals/<quantity>/<layer>"
("signals/response_grad_rms/stage1.block0.conv1"). `tensorboard --logdir results/<experiment>`
then shows every run of the experiment side by side while it trains. metrics.jsonl and
signals.jsonl stay the record: plots, tables and reports never read the event files.

The writer is tensorboardX: pure Python on protobuf, no TensorFlow import, its own flushing
thread. Only process 0 of a multi-process run writes. A resumed run starts a new event file
that purges the points after its checkpoint, as metrics.jsonl drops those rows.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from resdepth.errors import InvalidChoice
from resdepth.rundir.signals import LAYER_LISTS, SIGNALS

TENSORBOARD_DIR = "tensorboard"
ROW_KINDS = ("train", "eval")  # the Event kinds that carry a metrics.jsonl row
FLUSH_EVERY_S = 10  # curves appear this soon; tensorboardX's default is 2 minutes

EventSink = Callable[[Any], None]


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics row, by tag: {"train/train_error": 0.12, ...}.

    "type" and "step" are not values (the step is the x axis); booleans and text are skipped.
    """
    kind = row.get("type", "")
    return {f"{kind}/{key}": float(value) for key, value in row.items()
            if key not in ("type", "step") and isinstance(value, (int, float))
            and not isinstance(value, bool)}


def signal_scalars(data: dict[str, Any]) -> dict[str, float]:
    """A "signals" event's values by tag, one per layer and quantity:
    {"signals/response_grad_rms/stem": 0.02, ...}.

    `data` has the layer names ("weighted", "responses") and, per quantity of LAYER_LISTS, one
    value per name of its list; a value that is not a finite number (None) is skipped, as
    signals.jsonl holds null for it.
    """
    return {f"{SIGNALS}/{quantity}/{name}": float(value)
            for quantity, names_of in LAYER_LISTS.items()
            for name, value in zip(data[names_of], data[quantity])
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


class TensorBoardLog:
    """An event sink (see training/events.py) writing train and eval rows and signals to
    run_dir/tensorboard/.

    The writer opens at the first row or signals, so a run that is already complete (no events)
    or a process other than 0 leaves no folder behind; it closes at the run's "end" event.
    """

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / TENSORBOARD_DIR
        self.writer = None
        self.start_step = 0
        self.enabled: bool | None = None  # decided at the first row, once JAX is set up

    def __call__(self, event: Any) -> None:
        if event.kind == "start":
            self.start_step = event.step
        elif event.kind in (*ROW_KINDS, SIGNALS):
            writer = self._writer()
            if writer is not None:
                values = (signal_scalars(event.data) if event.kind == SIGNALS
                          else scalars({"type": event.kind, **event.data}))
                for tag, value in values.items():
                    writer.add_scalar(tag, value, event.step)
        elif event.kind == "end":
            self.close()

    def _writer(self):
        if self.enabled is None:
            # Asked here, not in __init__: train_and_evaluate joins a multi-process run
            # (jax.distributed.initialize) first, and asking earlier would start JAX alone.
            import jax

            self.enabled = jax.process_index() == 0
        if self.enabled and self.writer is None:
            from tensorboardX import SummaryWriter

            # purge_step: TensorBoard hides points at and after it from earlier event files,
            # the rows after the checkpoint that metrics.jsonl also dropped on resuming.
            # The suffix keeps a writer opened within the same second (a quick resume) from
            # truncating the last one's file: tensorboardX names files by the second and host.
            self.writer = SummaryWriter(str(self.folder), purge_step=self.start_step + 1,
                                        flush_secs=FLUSH_EVERY_S,
                                        filename_suffix=f".{time.time_ns()}.{os.getpid()}")
        return self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def require_writer() -> None:
    """InvalidChoice (one line, exit 2) when tensorboardX is missing, before a run starts."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise InvalidChoice("run.tensorboard needs the tensorboardX package: "
                            "pip install tensorboardX") from None


def with_tensorboard(sink: EventSink, run_dir: Path, enabled: bool) -> EventSink:
    """`sink`, also writing the run's metrics to run_dir/tensorboard/ when `enabled`."""
    if not enabled:
        return sink
    require_writer()
    log = TensorBoardLog(run_dir)

    def both(event: Any) -> None:
        sink(event)
        log(event)

    return both
