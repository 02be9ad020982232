"""summary.json: how a run ended and its final numbers, as its writers write it.

The training loop writes it when a run ends (completed, diverged, interrupted); a sweep writes
`Summary.failed` for a run that crashed. `RunDirectory.write_summary` puts it on disk. Pure
Python, no JAX.
"""

from __future__ import annotations

import dataclasses
from typing import Any

COMPLETED, DAMAGED = "completed", "damaged"
# A summary's statuses; a run without a current summary is "running", "stopped" or "incomplete".
ENDED = (COMPLETED, "diverged", "interrupted", "failed")
TEST, VALIDATION = "test", "validation"  # what a run's "test error" was measured on


@dataclasses.dataclass
class Summary:
    """summary.json: how a run ended and its final numbers (errors as fractions).

    status: "completed" | "diverged" | "interrupted" | "failed". The final errors are those of
    the last iteration (never the best over evaluations); None where the run did not get there.
    `eval_split` is "validation" for a --val-split run (its "test" errors are on training images
    held out). `packed_seeds`: how many runs trained in one program, this one included (1: alone).
    """

    status: str
    name: str
    experiment: str | None = None
    dataset: str | None = None
    arch: str | None = None
    depth: int | None = None
    shortcut: str | None = None
    seed: int | None = None
    params: int | None = None
    total_steps: int | None = None
    steps_done: int | None = None
    final_train_error: float | None = None
    final_test_error: float | None = None
    final_test_loss: float | None = None
    final_test_top5_error: float | None = None
    wall_s: float | None = None
    warmup_switch_step: int | None = None
    warmup_switch_reason: str | None = None
    eval_split: str = TEST
    fingerprint: str | None = None
    packed_seeds: int = 1
    message: str = ""
    traceback: str | None = None  # a failed run's, for whoever debugs it

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["traceback"] is None:
            del data["traceback"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Summary":
        """From a type-checked summary.json object (`read_run` checks it); unknown keys are
        dropped."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known and value is not None})

    @classmethod
    def failed(cls, name: str, config: Any, message: str, previous: dict[str, Any] | None = None,
               logged_step: int | None = None, traceback: str | None = None) -> "Summary":
        """The summary of a run that crashed: what its earlier summary (`previous`, checked)
        knew, with status "failed", the facts of `config` (an ExperimentConfig) and the
        iterations reached set to the last logged one (`logged_step`), so that it is the run's
        current summary (rundir/status.py)."""
        summary = cls.from_json({**(previous or {}), "name": name, "status": "failed"})
        model = config.model
        return dataclasses.replace(
            summary, experiment=config.name, dataset=config.data.dataset,
            arch="residual" if model.residual else "plain", depth=model.depth,
            seed=config.run.seed, shortcut=model.shortcut, total_steps=config.optim.total_steps,
            steps_done=logged_step if logged_step is not None else summary.steps_done,
            message=message, traceback=traceback)
