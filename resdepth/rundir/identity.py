"""What makes two runs the same run: the config fields that change results, and their hash.

A run directory belongs to one resolved config. Its `config.json` stores `fingerprint`, a hash
of every field that can change what the run computes (seed included), and `recipe_fingerprint`,
the same without the seed: runs that share a recipe fingerprint differ only in seed, so only
they may be averaged in a table or a plot.

Fields that change only how a run is observed or stored (logging, evaluation and checkpoint
intervals, evaluation batch size, where the data lives, the sweep grid, the experiment's name)
are left out, so a run can be resumed with them changed.

Pure Python with no JAX import: tables and plots use it on saved config dicts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

# Dotted keys (or whole sections, ending in ".") that never change a run's numbers.
RESULT_NEUTRAL = (
    "name",
    "data.data_dir",
    "data.manual_dir",
    "run.log_every_steps",
    "run.eval_every_steps",
    "run.checkpoint_every_steps",
    "run.keep_checkpoints",
    "run.eval_batch_size",
    "run.tag",
    "run.tensorboard",
    "run.steps_per_call",  # bit-identical to one step per call (a speed setting)
    "model.remat",  # rematerialization recomputes the same values (a memory setting)
    "sweep.",
)
SEED_KEY = "run.seed"

# config.json says `"precision_names": 2` since model.compute_dtype took three values (issue 14):
# "float32" is full float32 (precision HIGHEST), "tf32" float32 at JAX's default precision (TF32
# tensor cores on Ampere/Hopper GPUs), "bfloat16". A config.json without it was written when
# "float32" meant JAX's default precision, the arithmetic now named "tf32"; readers take its
# "float32" as "tf32" (`saved_as_current`), so such a run resumes, and is averaged, with the
# runs that compute as it did (on CPU the two are the same float32 arithmetic anyway).
PRECISION_NAMES_KEY = "precision_names"
PRECISION_NAMES = 2


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """{"optim": {"learning_rate": 0.1}, "name": "x"} -> {"optim.learning_rate": 0.1, "name": "x"}.

    Sections are the top-level tables; values inside a section (lists, dicts) are kept whole.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{field}": item for field, item in value.items()})
        else:
            flat[key] = value
    return flat


def _neutral(key: str) -> bool:
    return any(key == n or (n.endswith(".") and key.startswith(n)) for n in RESULT_NEUTRAL)


def result_settings(config: dict[str, Any], with_seed: bool = True) -> dict[str, Any]:
    """The flattened fields of a config dict (`ExperimentConfig.to_dict()`) that change results."""
    return {key: value for key, value in sorted(flatten(config).items())
            if not _neutral(key) and (with_seed or key != SEED_KEY)}


def _digest(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(config: dict[str, Any]) -> str:
    """16 hex digits identifying everything that changes this run's numbers, seed included."""
    return _digest(result_settings(config))


def recipe_fingerprint(config: dict[str, Any]) -> str:
    """The fingerprint without the seed: equal for runs that may be averaged over seeds."""
    return _digest(result_settings(config, with_seed=False))


def saved_as_current(saved: Any) -> Any:
    """config.json's contents ({"config": {...}, ...}) with an older file's settings in today's
    names: without `precision_names`, a `model.compute_dtype` of "float32" becomes "tf32", and
    the stored fingerprints, computed from the old name, are dropped (readers recompute them).
    Anything else, a damaged file included, comes back as it was."""
    if not isinstance(saved, dict) or saved.get(PRECISION_NAMES_KEY) == PRECISION_NAMES:
        return saved
    config = saved.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or model.get("compute_dtype") != "float32":
        return saved
    renamed = {key: value for key, value in saved.items()
               if key not in ("fingerprint", "recipe_fingerprint")}
    renamed["config"] = {**config, "model": {**model, "compute_dtype": "tf32"}}
    return renamed


def differing_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The result-changing dotted keys whose values differ between two config dicts, sorted."""
    a, b = result_settings(saved), result_settings(current)
    return sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))


# ------------------------------------------------------------------------------ the run's name
@dataclasses.dataclass(frozen=True)
class RunName:
    """What a run directory's name says: "resnet-56-A-seed0", "plain-20-seed3", either with a
    tag ("resnet-56-A-seed0-lr0.05"). `arch` is "plain" or "residual"; plain nets name no
    shortcut."""

    arch: str
    depth: int
    seed: int
    shortcut: str | None = None
    tag: str = ""

    def __str__(self) -> str:
        if self.arch == "plain":
            name = f"plain-{self.depth}-seed{self.seed}"
        else:
            name = f"resnet-{self.depth}-{self.shortcut}-seed{self.seed}"
        return f"{name}-{self.tag}" if self.tag else name


_RUN_NAME = re.compile(r"^(plain|resnet)-(\d+)(?:-([ABC]))?-seed(\d+)(?:-([A-Za-z0-9_.-]+))?$")


def run_name(config: Any) -> str:
    """The run directory's name for an ExperimentConfig: 'resnet-56-A-seed0', 'plain-56-seed0',
    with `run.tag` 'resnet-56-A-seed0-TAG'."""
    model = config.model
    return str(RunName("residual" if model.residual else "plain", model.depth, config.run.seed,
                       model.shortcut if model.residual else None, config.run.tag or ""))


def parse_run_name(name: str) -> RunName | None:
    """The RunName a directory name spells, or None for a name `run_name` never writes."""
    matched = _RUN_NAME.match(name)
    if not matched:
        return None
    plain = matched[1] == "plain"
    return RunName("plain" if plain else "residual", int(matched[2]), int(matched[4]),
                   None if plain else matched[3], matched[5] or "")
