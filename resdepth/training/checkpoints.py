"""Orbax checkpoints of a run: the whole TrainState plus a little host-side JSON.

The last `keep` checkpoints are kept. Restoring tries the newest first and falls back to the
previous one when the newest cannot be read (for example a write cut short by a crash).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


@dataclasses.dataclass
class Restored:
    state: Any
    host: dict[str, Any]
    step: int
    skipped: list[tuple[int, str]]  # (step, reason) of newer checkpoints that could not be read


class Checkpointer:
    """Saves and restores a run's TrainState under `<run_dir>/checkpoints`."""

    def __init__(self, run_dir: Path, keep: int):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self.manager = ocp.CheckpointManager((run_dir / "checkpoints").absolute(), options=options)

    def save(self, step: int, state: Any, host: dict[str, Any]) -> None:
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host)), force=True)
        self.manager.wait_until_finished()

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """The newest readable checkpoint, restored with the shardings of `abstract_state`."""
        skipped = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()))
            except Exception as error:  # any unreadable checkpoint: report it and go back one
                skipped.append((step, f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"))
                continue
            return Restored(restored["state"], dict(restored["host"]), step, skipped)
        return Restored(None, {}, 0, skipped) if skipped else None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs with shardings, the target Orbax restores into."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
