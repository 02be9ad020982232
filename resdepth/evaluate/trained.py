"""A trained run brought back from its directory: config, model structure and final state."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from resdepth.errors import InvalidChoice
from resdepth.config import ExperimentConfig, config_from_dict
from resdepth.rundir.files import CONFIG_FILE, read_json
from resdepth.rundir.identity import saved_as_current


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
    from resdepth.training.checkpoints import Checkpointer, abstract_like
    from resdepth.models.network import build_model
    from resdepth.training.loop import model_spec

    config = run_config(run_dir, data_dir)
    model = build_model(model_spec(config, num_classes), config.run.seed, in_channels)
    graphdef, state = steps.init_state(config, model, make_mesh())
    restored = Checkpointer(run_dir, config.run.keep_checkpoints).restore_latest(abstract_like(state))
    if restored is None or restored.state is None:
        raise InvalidChoice(f"{run_dir} has no readable checkpoint")
    return TrainedRun(config, graphdef, restored.state, restored.step)


def run_config(run_dir: Path, data_dir: str | None = None) -> ExperimentConfig:
    """The resolved config a run was trained with (config.json), optionally with another data dir."""
    saved = read_json(run_dir / CONFIG_FILE)
    if saved is None:
        raise InvalidChoice(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    config = config_from_dict(saved_as_current(saved)["config"])
    if data_dir is not None:
        config.data.data_dir = data_dir
    return config
