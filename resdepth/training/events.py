"""What a run reports while it trains: `Event`s, which the CLI renders and TensorBoard records.

Light on purpose (no JAX): the CLI and `training/session.py` use it before JAX starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass
class Event:
    """Progress of a run; `data` holds the row. kind:

    - "start": training begins (or resumes) at `step`; data: params, resumed
    - "train", "eval": a metrics.jsonl row of that type. At an iteration that is both logged and
      evaluated the "eval" event comes first and the "train" event after it (metrics.jsonl keeps
      the train row first), so a display can show a train row beside the test error of the
      same iteration
    - "signals": a signals.jsonl row (rundir/signals.py), measured by iteration `step` on the
      state before its update; data: weighted, responses (the layer names, in network order),
      weight_grad_rms, weight_rms (one float per weighted layer), response_grad_rms,
      response_std (one per 3x3 layer); None where a value was not finite. TensorBoard writes
      it (training/tensorboard_log.py); the console shows nothing of it
    - "note": data: message, one line worth showing
    - "end": the run stops (completed, diverged or interrupted); data: its summary
    - "already_completed": the run was found finished, nothing was trained; data: its summary
    """

    kind: str
    step: int
    total_steps: int
    data: dict[str, Any]


EventSink = Callable[[Event], None]
