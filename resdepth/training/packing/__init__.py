"""Packs: several runs of one shape trained in one compiled program, behind training/trainer.py.

A sweep whose `sweep.pack` is on (`packs`) groups its runs of one shape and trains each group
through `Pack`, a `Trainer`: the loop sees one opaque state and asks it for each run's own
state and scalars, never knowing the layout (`sweep.pack_formulation`, states.py). Each run
keeps its own initialization, data order, augmentation, learning rate and run directory, and
checkpoints its own single-run state, so it resumes alone or in any pack.

  states.py  the layouts of a pack's state, and per-run reads and writes of it
  net.py     the wide and grouped layouts' net: network.ResNet with the runs as its lanes
  steps.py   the compiled iterations of each layout
"""

from __future__ import annotations

from typing import Any

import numpy as np
from jax.sharding import Mesh

from resdepth.config import ExperimentConfig
from resdepth.errors import InvalidChoice
from resdepth.dataset_facts import family_of
from resdepth.rundir.identity import recipe_fingerprint
from resdepth.training.packing.net import packed_graphdef
from resdepth.training.packing.states import (
    layout, mixes_architectures, pack_states, replace_per_seed, seed_slice, seed_values)
from resdepth.training.packing.steps import make_step, signals_of
from resdepth.training.step import TrainState, model_spec


def packs(base: ExperimentConfig, backend: str) -> bool:
    """Whether a sweep trains runs of one shape packed into one program on `backend`.

    `sweep.pack`: true, false, or "auto" = on TPUs only. On an H200 (docs/benchmarks.md)
    seeds packed by vmap made fewer images/s in all than one seed alone at every depth, so on
    GPUs one run at a time is faster until benchmarks/pack_check.py measures a layout that
    wins there; on CPU the cores are busy with one net already. TPUs are unmeasured: packing
    stays the default there on the premise that S small nets fill the matrix units better
    than one. Only the on-device datasets and the fixed-boundary schedule can be packed.
    """
    wanted = base.sweep.pack
    if wanted == "auto":
        wanted = backend == "tpu"
    return (bool(wanted) and family_of(base.data.dataset) != "imagenet"
            and base.optim.lr_schedule == "steps")


def check_packable(configs: list[ExperimentConfig], layout_name: str) -> None:
    """Packed runs share one program: the same recipe, seeds apart (and plain or residual,
    where the layout lets them share a pack), the steps schedule, an on-device dataset."""
    config = configs[0]
    mixes = mixes_architectures(layout_name, config.model.shortcut)

    def recipe(each: ExperimentConfig) -> str:
        settings = each.to_dict()
        if mixes:
            settings["model"] = {**settings["model"], "residual": None}
        return recipe_fingerprint(settings)

    if len({recipe(each) for each in configs}) > 1:
        allowed = "run.seed and model.residual" if mixes else "run.seed"
        raise ValueError(f"the runs of a {layout_name} pack must differ in {allowed} alone")
    if config.optim.lr_schedule != "steps":
        raise InvalidChoice("packed seeds need lr_schedule 'steps' (a plateau decides per run)")
    if family_of(config.data.dataset) == "imagenet":
        raise InvalidChoice("packed seeds are for the on-device datasets (cifar10, digits)")


class Pack:
    """The runs of `configs` trained in one program laid out by their `sweep.pack_formulation`
    on `backend` (a training/trainer.py Trainer)."""

    def __init__(self, configs: list[ExperimentConfig], mesh: Mesh, backend: str):
        self.layout = layout(configs[0].sweep.pack_formulation, backend)
        check_packable(configs, self.layout)
        self.configs, self.mesh, self.backend = configs, mesh, backend

    def join(self, states: list[TrainState]) -> Any:
        return pack_states(states, self.mesh, self.layout)

    def compile(self, source: Any, graphdefs: list[Any], start_step: int) -> None:
        source.load()
        packed_net = None
        if self.layout in ("wide", "grouped"):  # one net for the pack
            packed_net = packed_graphdef(
                model_spec(self.configs[0], source.num_classes, self.backend),
                [config.model.residual for config in self.configs], self.layout,
                source.in_channels)
        self._step = make_step(self.configs[0], self.mesh, self.layout, graphdefs, packed_net)
        self.source = source

    def train(self, state: Any, step: int, count: int) -> tuple[Any, Any]:
        indices = np.stack([self.source.batch_indices(config.run.seed, step, count)
                            for config in self.configs])
        return self._step(state, self.source.device_data, self.source.on_devices(indices),
                          self.source.measuring(step, count))

    def signals_of(self, signals: Any, position: int) -> dict[str, Any]:
        return signals_of(self.layout, signals, position)

    def state_of(self, state: Any, position: int) -> TrainState:
        return seed_slice(state, position)

    def values(self, state: Any, field: str) -> list[Any]:
        return seed_values(state, field)

    def with_values(self, state: Any, **per_run: list[Any]) -> Any:
        return replace_per_seed(state, self.mesh, **per_run)

    def recorded(self) -> dict[str, Any]:
        return {"packed_seeds": len(self.configs)}
