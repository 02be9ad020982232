"""How the loop trains the runs of a session: the seam between one run and several.

The loop (training/loop.py) holds one opaque training state for the runs it trains together and
asks a `Trainer` for the few things that depend on how that state is laid out: join the runs'
own states into it, train it k iterations, give back one run's own state and layer signals,
and read or set one scalar field (the interval sums, the warm-up flag, the plateau scale) per
run. `Alone` trains one run, its state a TrainState; training/packing/ trains several runs of
one shape in one compiled program behind the same interface, and the sweep plugs it in.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

from jax.sharding import Mesh

from resdepth.config import ExperimentConfig
from resdepth.training.mesh import host_value, replicated_scalar
from resdepth.training.step import TrainState


class Trainer(Protocol):
    """The operations the loop needs of the runs it trains together (in their given order)."""

    def join(self, states: list[TrainState]) -> Any:
        """The runs' own states (fresh or restored, all at one iteration) as the training state."""

    def compile(self, source: Any, graphdefs: list[Any], start_step: int) -> None:
        """Builds the compiled iterations from the data source (training/sources.py) and each
        run's net; called once before the first `train`."""

    def train(self, state: Any, step: int, count: int) -> tuple[Any, Any]:
        """Iterations step .. step + count - 1 of every run in one call, the state donated:
        (the state, the iterations' layer signals in the trainer's own layout)."""

    def signals_of(self, signals: Any, position: int) -> dict[str, Any]:
        """The run at `position`'s layer signals from what `train` returned: (count, layers)
        per quantity, zeros on iterations that do not record them (training/signals.py)."""

    def state_of(self, state: Any, position: int) -> TrainState:
        """The run at `position`'s own state, in the single-run form its checkpoint holds."""

    def values(self, state: Any, field: str) -> list[Any]:
        """A scalar field of TrainState for each run, on the host."""

    def with_values(self, state: Any, **per_run: list[Any]) -> Any:
        """`state` with scalar fields set per run, e.g. loss_sum=[0.0]."""

    def recorded(self) -> dict[str, Any]:
        """What each run's summary.json records of how it was trained (Summary's fields)."""


# Builds the trainer of a session's runs: (their configs, the device mesh, the backend).
TrainerFactory = Callable[[list[ExperimentConfig], Mesh, str], Trainer]


class Alone:
    """One run trained by itself: the training state is its TrainState."""

    def __init__(self, configs: list[ExperimentConfig], mesh: Mesh, backend: str):
        if len(configs) != 1:
            raise ValueError(f"Alone trains one run, not {len(configs)}")
        self.mesh = mesh

    def join(self, states: list[TrainState]) -> TrainState:
        (state,) = states
        return state

    def compile(self, source: Any, graphdefs: list[Any], start_step: int) -> None:
        (graphdef,) = graphdefs
        source.compile(graphdef, start_step)
        self.source = source

    def train(self, state: TrainState, step: int, count: int) -> tuple[TrainState, Any]:
        return self.source.train_steps(state, step, count)

    def signals_of(self, signals: dict[str, Any], position: int) -> dict[str, Any]:
        return signals

    def state_of(self, state: TrainState, position: int) -> TrainState:
        return state

    def values(self, state: TrainState, field: str) -> list[Any]:
        return [host_value(getattr(state, field)).item()]

    def with_values(self, state: TrainState, **per_run: list[Any]) -> TrainState:
        return dataclasses.replace(state, **{
            name: replicated_scalar(values[0], getattr(state, name).dtype, self.mesh)
            for name, values in per_run.items()})

    def recorded(self) -> dict[str, Any]:
        return {}  # Summary's defaults: trained alone
