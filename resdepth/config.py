"""Typed experiment configuration: TOML files in experiments/, overridable field by field.

Every setting of a run lives here, with its unit in its name. `load_config` reads an experiment
file, applies `section.field=value` overrides, and rejects unknown keys and wrong types with a
`ConfigError` whose message is one line for the user.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from resdepth.architectures import InvalidChoice


class ConfigError(InvalidChoice):
    """A config file or override the user got wrong."""


@dataclasses.dataclass
class ModelConfig:
    depth: int = 20
    residual: bool = True
    shortcut: str = "A"  # §3.3: A zero-pad, B project where dims grow, C project everywhere
    compute_dtype: str = "float32"  # or "bfloat16"; parameters stay float32
    remat: bool = False  # rematerialize blocks in the backward pass (very deep nets)


@dataclasses.dataclass
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | digits | imagenet
    data_dir: str = ""  # TFDS data dir; "" uses TFDS's default (~/tensorflow_datasets)
    manual_dir: str = ""  # ImageNet archives; "" uses <data_dir>/downloads/manual
    val_split: bool = False  # hold out 5k training images (the paper's schedule search)
    augment: bool = True  # random crop and flip (§4.2 for CIFAR, §3.4 for ImageNet)
    pad_pixels: int = 4  # zero padding per side before the random crop (small datasets)
    random_flip: bool = True  # horizontal flips (off for digits, which are not mirror-symmetric)
    image_size: int = 224  # ImageNet training crop side, pixels


@dataclasses.dataclass
class OptimConfig:
    batch_size: int = 128  # global batch per iteration, however many devices share it
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: str = "steps"  # "steps" (fixed boundaries) or "plateau" (ImageNet, §3.4)
    lr_boundaries_steps: list[int] = dataclasses.field(default_factory=lambda: [32000, 48000])
    lr_decay_factor: float = 0.1
    plateau_patience_evals: int = 5  # evaluations without improvement before dividing by 10
    total_steps: int = 64000
    warmup_learning_rate: float = 0.01  # §4.2: ResNet-110/1202 start at 0.01 ...
    warmup_until_train_error: float = 0.8  # ... until the training error falls below 80%
    warmup_min_depth: int = 110  # nets at least this deep use the warm-up


@dataclasses.dataclass
class RunConfig:
    seed: int = 0
    log_every_steps: int = 100
    eval_every_steps: int = 391  # about one epoch of 50k images at batch 128
    checkpoint_every_steps: int = 2000
    keep_checkpoints: int = 2
    eval_batch_size: int = 1000
    eval_examples: int = 0  # ImageNet: validate on the first N images at each evaluation (0: all)


@dataclasses.dataclass
class SweepConfig:
    archs: list[str] = dataclasses.field(default_factory=lambda: ["plain", "residual"])
    depths: list[int] = dataclasses.field(default_factory=lambda: [20, 56])
    # Depths per architecture, where they differ (Table 6 has no plain-1202): {"plain": [...]}.
    depths_by_arch: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    # Other seeds for some nets, keyed "<arch>-<depth>" or "<depth>" (the paper reports
    # ResNet-110 over 5 runs): {"residual-110": [0, 1, 2, 3, 4]}.
    seeds_by_depth: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    def seeds_for(self, arch: str, depth: int) -> list[int]:
        return self.seeds_by_depth.get(f"{arch}-{depth}", self.seeds_by_depth.get(str(depth), self.seeds))


@dataclasses.dataclass
class ExperimentConfig:
    name: str = "default"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (bool, str):
        return isinstance(value, annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_matches(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(annotation)
        return isinstance(value, dict) and all(
            _type_matches(k, key) and _type_matches(v, item) for k, v in value.items())
    if origin in (typing.Union, types.UnionType):
        return any(_type_matches(value, arg) for arg in typing.get_args(annotation))
    return False


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _coerce(value: Any, annotation: Any) -> Any:
    return float(value) if annotation is float else value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"unknown config key {where}{unknown[0]!r}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"config section {where}{name} must be a table")
            kwargs[name] = _build(annotation, value, f"{where}{name}.")
        elif not _type_matches(value, annotation):
            raise ConfigError(f"config key {where}{name} must be {_type_name(annotation)}, got {value!r}")
        else:
            kwargs[name] = _coerce(value, annotation)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """'optim.total_steps=500' -> {'optim': {'total_steps': 500}}; values are TOML, else strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    path, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    nested: dict[str, Any] = {}
    cursor = nested
    keys = path.strip().split(".")
    for key in keys[:-1]:
        cursor = cursor.setdefault(key, {})
    cursor[keys[-1]] = value
    return nested


def experiment_path(name_or_path: str) -> Path:
    """An experiment file by path, or by name from experiments/ (repo or installed package)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    for folder in (Path.cwd() / "experiments", Path(str(resources.files("resdepth") / "experiments"))):
        candidate = folder / f"{path.stem}.toml"
        if candidate.exists():
            return candidate
    raise ConfigError(f"no experiment file {name_or_path!r} (looked in ./experiments and the package)")


def _read_experiment(name_or_path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """An experiment file as a dict; `base = "other"` inherits another file's settings."""
    path = experiment_path(name_or_path)
    if path.stem in seen:
        raise ConfigError(f"{path}: experiment files inherit from each other in a loop")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    own_name = data.get("name", path.stem)  # a child never takes its base's name
    base = data.pop("base", None)
    if base is not None:
        data = _merge(_read_experiment(base, (*seen, path.stem)), data)
    return {**data, "name": own_name}


def load_config(experiment: str | None = None, overrides: list[dict[str, Any]] | None = None
                ) -> ExperimentConfig:
    """Defaults <- experiment file <- overrides (each a nested dict, later ones win)."""
    data = _read_experiment(experiment) if experiment else {}
    for override in overrides or []:
        data = _merge(data, override)
    return _build(ExperimentConfig, data, "")


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Rebuilds a saved config (config.json of a run directory)."""
    return _build(ExperimentConfig, data, "")
