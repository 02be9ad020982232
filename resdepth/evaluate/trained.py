"""A trained run brought back from its directory: config, model structure and final state."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from resdepth.errors import InvalidChoice
from resdepth.config import ExperimentConfig
from resdepth.rundir.directory import RunDirectory


@dataclasses.dataclass
class TrainedRun:
    config: ExperimentConfig
    graphdef: Any
    state: Any  # step.TrainState, replicated over the mesh
    step: int  # the iteration of the restored checkpoint


def load_trained_run(run_dir: Path, num_classes: int, in_channels: int,
                     data_dir: str | None = None) -> TrainedRun:
    """Restores the newest readable checkpoint of `run_dir`, or InvalidChoice."""
    from resdepth.training import step as steps
    from resdepth.training.mesh import make_mesh
    from resdepth.rundir.checkpoints import abstract_like
    from resdepth.models.network import build_model
    from resdepth.training.step import model_spec

    run = RunDirectory(run_dir)
    config = run.trained_config(data_dir)
    model = build_model(model_spec(config, num_classes), config.run.seed, in_channels)
    graphdef, state = steps.init_state(config, model, make_mesh())
    checkpointer = run.checkpointer(config.run.keep_checkpoints)
    try:
        restored = checkpointer.restore_latest(abstract_like(state))
    finally:
        checkpointer.close()
    if restored is None or restored.state is None:
        raise InvalidChoice(f"{run_dir} has no readable checkpoint")
    return TrainedRun(config, graphdef, restored.state, restored.step)

