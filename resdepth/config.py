"""Typed experiment configuration: TOML files in experiments/, overridable field by field.

Every setting of a run lives here, with its unit in its name. `load_config` reads an experiment
file, applies `section.field=value` overrides, and rejects unknown keys (suggesting the nearest
valid one), wrong types and values outside each field's rule in `RULES` with a `ConfigError`
whose message is one line for the user. `config_to_toml` writes a config back as an experiment file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from resdepth.choices import ARCHS, COMPUTE_DTYPES, LR_SCHEDULES, PACK_LAYOUTS, SHORTCUTS
from resdepth.dataset_facts import (
    CIFAR_PAPER_DEPTHS, DATASET_FAMILIES, IMAGENET_DEPTHS, check_depth, family_of)
from resdepth.errors import InvalidChoice


class ConfigError(InvalidChoice):
    """A config file or override the user got wrong."""


@dataclasses.dataclass
class ModelConfig:
    depth: int = 20
    residual: bool = True
    shortcut: str = "A"  # §3.3: A zero-pad, B project where dims grow, C project everywhere
    # "tf32": float32 at JAX's default precision (TF32 tensor cores on Ampere/Hopper GPUs);
    # "float32": full float32 (precision HIGHEST, as the paper's Caffe); "bfloat16". Parameters
    # and BatchNorm stay float32 (models/network.py `arithmetic`).
    compute_dtype: str = "tf32"
    remat: bool = False  # rematerialize blocks in the backward pass (very deep nets)
    # BatchNorm statistics over groups of this many images of the global batch, the same on any
    # number of devices (0: the whole batch). 64: the paper's 128 on two GPUs, Caffe's per-GPU BN.
    bn_group_size: int = 64


@dataclasses.dataclass
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | digits | imagenet
    data_dir: str = ""  # TFDS data dir; "": digits in the user's cache, others TFDS's default
    manual_dir: str = ""  # ImageNet archives; "" uses <data_dir>/downloads/manual
    val_split: bool = False  # hold out 5k training images (the paper's schedule search)
    augment: bool = True  # random crop and flip (§4.2 for CIFAR, §3.4 for ImageNet)
    pad_pixels: int = 4  # zero padding per side before the random crop (small datasets)
    random_flip: bool = True  # horizontal flips (off for digits, which are not mirror-symmetric)
    image_size: int = 224  # ImageNet training crop side, pixels
    # With optim.lr_schedule = "plateau" only: training images held out of training, on whose
    # error the plateau rule decides (never on the test set). 5000: CIFAR-10's 45k/5k split size.
    plateau_holdout_examples: int = 5000


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
    plateau_threshold: float = 1e-4  # an error this much below the best counts as improvement
    total_steps: int = 64000
    warmup_learning_rate: float = 0.01  # §4.2: ResNet-110/1202 start at 0.01 ...
    warmup_until_train_error: float = 0.8  # ... until the training error falls below 80%
    warmup_min_depth: int = 110  # nets at least this deep use the warm-up
    # The warm-up also ends here (the paper's switch came after "about 400 iterations"; 5x that
    # leaves a normal run its own switch) and at the first decay boundary, whichever is first.
    warmup_max_steps: int = 2000


@dataclasses.dataclass
class RunConfig:
    seed: int = 0
    log_every_steps: int = 100
    eval_every_steps: int = 391  # about one epoch of 50k images at batch 128
    checkpoint_every_steps: int = 2000
    keep_checkpoints: int = 2
    eval_batch_size: int = 1000
    eval_examples: int = 0  # ImageNet: validate on the first N images at each evaluation (0: all)
    tag: str = ""  # a suffix for the run directory's name, to keep a variant apart from the default
    # Iterations per compiled call (a scan inside the call) so a small net on a fast GPU is not
    # bound by Python dispatch; 0 = automatic: 1 on CPU, up to the next logging point elsewhere.
    steps_per_call: int = 0
    tensorboard: bool = False  # also write metrics as TensorBoard event files in RUN_DIR/tensorboard


@dataclasses.dataclass
class SweepConfig:
    archs: list[str] = dataclasses.field(default_factory=lambda: list(ARCHS))
    depths: list[int] = dataclasses.field(default_factory=lambda: [20, 56])
    # Depths per architecture, where they differ (Table 6 has no plain-1202): {"plain": [...]}.
    depths_by_arch: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    # Other seeds for some nets, keyed "<arch>-<depth>" or "<depth>" (the paper reports
    # ResNet-110 over 5 runs): {"residual-110": [0, 1, 2, 3, 4]}.
    seeds_by_depth: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    # Train runs of one shape (the seeds of a net, and plain-N with ResNet-N where the layout
    # allows) packed into one compiled program: true, false, or "auto" = on TPUs only
    # (training/sweep.py packs). Was `pack_seeds`.
    pack: bool | str = "auto"
    # How a pack is laid out (training/packing/): "tuple", "vmap", "wide", "grouped", or
    # "auto" = tuple on CPU (exact), vmap on accelerators until the H200 measures the others.
    pack_formulation: str = "auto"
    pack_size: int = 8  # at most this many runs in one pack

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


# ------------------------------------------------------------------------------ value rules
# A rule takes (value, config) and returns None when the value is allowed, else what is allowed
# ("must be > 0"). Types are checked before any rule runs. Rules run in RULES' order, so a rule
# that reads another field (model.depth reads data.dataset) comes after that field's own rule.
Rule = Callable[[Any, "ExperimentConfig"], "str | None"]
TAG_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")


def _choices(options: typing.Sequence[str]) -> str:
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def one_of(*options: str, note: str = "") -> Rule:
    return lambda value, config: None if value in options else f"must be {_choices(options)}{note}"


def in_range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False) -> Rule:
    """low <= value <= high, with either end open (strict) or absent (unbounded)."""
    if high is None:
        allowed = f"must be {'>' if low_open else '>='} {low}"
    elif low is None:
        allowed = f"must be {'<' if high_open else '<='} {high}"
    else:
        allowed = f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def rule(value, config):
        ok = (math.isfinite(value)
              and (low is None or (value > low if low_open else value >= low))
              and (high is None or (value < high if high_open else value <= high)))
        return None if ok else allowed
    return rule


positive, non_negative, at_least_one = in_range(0, low_open=True), in_range(0), in_range(1)


def each(rule: Rule, *, non_empty: bool = False) -> Rule:
    """Every item of a list passes `rule` (and the list has one at least, if `non_empty`)."""
    def check(values, config):
        if non_empty and not values:
            return "must not be empty"
        complaints = [rule(value, config) for value in values]
        bad = next((c for c in complaints if c is not None), None)
        return None if bad is None else f"each item {bad}"
    return check


def _depth_for(dataset: str, depth: int) -> str | None:
    try:
        check_depth(family_of(dataset), depth)
        return None
    except InvalidChoice:
        if family_of(dataset) == "imagenet":
            return f"must be {_choices([str(d) for d in IMAGENET_DEPTHS])} for imagenet (Table 1)"
        return (f"must be 6n+2 with n >= 1 for {dataset} "
                f"({', '.join(map(str, (8, 14, *CIFAR_PAPER_DEPTHS)))}, ...)")


def _model_depth(depth, config):
    return _depth_for(config.data.dataset, depth)


def _bn_group_size(size, config):
    batch = config.optim.batch_size
    if size < 0:
        return "must be >= 0 (0: statistics over the whole batch)"
    if 0 < size < batch and batch % size:
        return f"must divide optim.batch_size={batch} (or be 0, or at least the batch)"
    return None


def _lr_boundaries(boundaries, config):
    if config.optim.lr_schedule != "steps":
        return None  # only the "steps" schedule reads them
    if any(b >= a for a, b in zip(boundaries[1:], boundaries)):
        return "must be strictly increasing"
    total = config.optim.total_steps
    if any(not 0 < b < total for b in boundaries):
        return f"boundaries must lie inside total_steps={total} (each > 0 and < {total}; [] for none)"
    return None


def _plateau_holdout(count, config):
    if config.optim.lr_schedule == "plateau" and count < 1:
        return 'must be >= 1 with optim.lr_schedule = "plateau" (it decides on these images)'
    return None if count >= 0 else "must be >= 0"


def _run_tag(tag, config):
    return None if tag == "" or TAG_PATTERN.fullmatch(tag) else "must be empty or of A-Z a-z 0-9 _ . -"


def _folder_name(name, config):
    ok = name not in ("", ".", "..") and not set(name) & {"/", "\\"}
    return None if ok else "must be a folder name: not empty, no / or \\, not . or .."


def _sweep_archs(archs, config):
    if not archs:
        return "must not be empty"
    if len(set(archs)) != len(archs):
        return "must not repeat an architecture"
    return each(one_of(*ARCHS))(archs, config)


def _depths_by_arch(table, config):
    for arch, depths in table.items():
        if arch not in ARCHS:
            return f"keys must be {_choices(ARCHS)}"
        if not depths:
            return f"{arch}: must not be empty"
        bad = next((c for c in (_depth_for(config.data.dataset, d) for d in depths) if c), None)
        if bad:
            return f"{arch}: each depth {bad}"
    return None


def _sweep_depths(depths, config):
    sweep = config.sweep
    if all(arch in sweep.depths_by_arch for arch in sweep.archs):
        return None  # every architecture has depths of its own: the grid never reads these
    bad = next((c for c in (_depth_for(config.data.dataset, d) for d in depths) if c), None)
    return None if bad is None else f"each depth {bad}"


def _seeds_by_depth(table, config):
    key_pattern = re.compile(rf"(({'|'.join(ARCHS)})-)?\d+")
    for key, seeds in table.items():
        if not key_pattern.fullmatch(key):
            return f'keys must look like "residual-110" or "110", got "{key}"'
        bad = each(non_negative, non_empty=True)(seeds, config)
        if bad:
            return f"{key}: {bad}"
    return None


# Every field a user can get wrong, and what it allows. Boolean fields need no rule (their type
# is their rule); UNCHECKED lists the free-form ones. tests/test_config.py fails for a new field
# that is in neither, so add its rule here with it.
RULES: dict[str, Rule] = {
    "name": _folder_name,
    "data.dataset": one_of(*DATASET_FAMILIES),
    "data.pad_pixels": non_negative,
    "data.image_size": at_least_one,
    "data.plateau_holdout_examples": _plateau_holdout,
    "model.depth": _model_depth,
    "model.shortcut": one_of(*SHORTCUTS, note=" (§3.3)"),
    "model.compute_dtype": one_of(*COMPUTE_DTYPES),
    "optim.batch_size": at_least_one,
    "model.bn_group_size": _bn_group_size,
    "optim.learning_rate": positive,
    "optim.momentum": in_range(0, 1, high_open=True),
    "optim.weight_decay": non_negative,
    "optim.lr_schedule": one_of(*LR_SCHEDULES),
    "optim.total_steps": at_least_one,
    "optim.lr_boundaries_steps": _lr_boundaries,
    "optim.lr_decay_factor": in_range(0, 1, low_open=True),
    "optim.plateau_patience_evals": at_least_one,
    "optim.plateau_threshold": non_negative,
    "optim.warmup_learning_rate": positive,
    "optim.warmup_until_train_error": in_range(0, 1, low_open=True),
    "optim.warmup_min_depth": at_least_one,
    "optim.warmup_max_steps": non_negative,
    "run.seed": non_negative,
    "run.log_every_steps": at_least_one,
    "run.eval_every_steps": at_least_one,
    "run.checkpoint_every_steps": at_least_one,
    "run.keep_checkpoints": at_least_one,
    "run.eval_batch_size": at_least_one,
    "run.eval_examples": non_negative,
    "run.tag": _run_tag,
    "run.steps_per_call": non_negative,
    "sweep.pack": lambda value, config: (
        None if value in (True, False, "auto") else 'must be true, false or "auto"'),
    "sweep.pack_formulation": one_of("auto", *PACK_LAYOUTS),
    "sweep.pack_size": at_least_one,
    "sweep.archs": _sweep_archs,
    # Checked against the dataset's family only for a sweep (SWEEP_RULES).
    "sweep.depths": each(at_least_one, non_empty=True),
    "sweep.depths_by_arch": _depths_by_arch,
    "sweep.seeds": each(non_negative, non_empty=True),
    "sweep.seeds_by_depth": _seeds_by_depth,
}
UNCHECKED = ("data.data_dir", "data.manual_dir")
# Checked only for a config about to be swept (validate_sweep), after RULES: a train-only
# experiment (imagenet.toml), and every run it saved, keeps the CIFAR default grid it never sweeps.
SWEEP_RULES: dict[str, Rule] = {"sweep.depths": _sweep_depths}


def _get(config: ExperimentConfig, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def validate(config: ExperimentConfig) -> ExperimentConfig:
    """Normalizes (shortcut upper-cased, as the CLI takes it) and checks every value against
    RULES; the same config, or ConfigError naming the key, the value and what is allowed."""
    config.model.shortcut = config.model.shortcut.upper()
    _check(config, RULES)
    return config


def validate_sweep(config: ExperimentConfig) -> ExperimentConfig:
    """The sweep grid's depths against the dataset's family (SWEEP_RULES), what a sweep checks
    of a config validated as it loaded, before it expands its grid. The same config, or
    ConfigError."""
    _check(config, SWEEP_RULES)
    return config


def _check(config: ExperimentConfig, rules: dict[str, Rule]) -> None:
    for key, rule in rules.items():
        value = _get(config, key)
        allowed = rule(value, config)
        if allowed is not None:
            raise ConfigError(f"invalid config value {key} = {json.dumps(value)}: {allowed}")


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


def _closest(word: str, options: typing.Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(options), n=1)
    return matches[0] if matches else None


def _unknown_key(cls: type, name: str, value: Any, where: str) -> ConfigError:
    """'unknown config key optim.learnig_rate; did you mean optim.learning_rate?' — a misspelt
    section (optm.learning_rate, one key as --set gives) gets the whole corrected path."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    shown, kind = f"{where}{name}", "key"
    if isinstance(value, dict):
        if len(value) == 1 and not isinstance(next(iter(value.values())), dict):
            shown += f".{next(iter(value))}"
        else:
            kind = "section"
    guess = _closest(name, fields)
    if guess is not None and dataclasses.is_dataclass(hints[guess]) and isinstance(value, dict):
        inner = [f.name for f in dataclasses.fields(hints[guess])]
        if kind == "key":
            key = next(iter(value))
            key = key if key in inner else _closest(key, inner)
            guess = f"{guess}.{key}" if key else guess
    if guess is not None:
        return ConfigError(f"unknown config {kind} {shown}; did you mean {where}{guess}?")
    return ConfigError(f"unknown config {kind} {shown}; valid keys{f' in {where[:-1]}' if where else ''}: "
                       f"{', '.join(sorted(fields))}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise _unknown_key(cls, unknown[0], data[unknown[0]], where)
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
    """`update` over `base`, section by section; an empty table replaces (`{}` clears a
    mapping such as sweep.depths_by_arch)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and value and isinstance(merged.get(key), dict):
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


def _experiment_folders() -> tuple[Path, Path]:
    """Where experiments are found by name: ./experiments, then the installed package's."""
    return Path.cwd() / "experiments", Path(str(resources.files("resdepth") / "experiments"))


def experiment_path(name_or_path: str) -> Path:
    """An experiment file by path, or by name from experiments/ (repo or installed package)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    for folder in _experiment_folders():
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


def dataset_setter(name_or_path: str) -> Path | None:
    """The experiment file that sets data.dataset for `name_or_path`: the file itself or the
    nearest base it inherits from; None when none does, and the config has DataConfig's
    default (cifar10). For a file that loads (load_config has read it without error)."""
    seen: set[Path] = set()
    path: Path | None = experiment_path(name_or_path)
    while path is not None and path.resolve() not in seen:
        seen.add(path.resolve())
        data = tomllib.loads(path.read_text())
        if isinstance(data.get("data"), dict) and "dataset" in data["data"]:
            return path
        base = data.get("base")
        path = experiment_path(base) if isinstance(base, str) else None
    return None


def borrowed_name(name_or_path: str) -> str | None:
    """The name of a shipped experiment that a file outside the experiment folders carries as
    its own: `resdepth config --dataset digits > mine.toml` writes name = "digits", and runs
    trained from mine.toml would go among the digits experiment's, meeting its runs of the same
    nets. None for a file in an experiment folder (table4.toml shares table3's runs on purpose),
    a file whose name is its own stem, or a name no experiment file has."""
    path = experiment_path(name_or_path)
    folders = {folder.resolve() for folder in _experiment_folders()}
    if path.resolve().parent in folders:
        return None
    try:
        name = tomllib.loads(path.read_text()).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None  # load_config says what is wrong with it
    if not isinstance(name, str) or name == path.stem:
        return None
    return name if any((folder / f"{name}.toml").is_file() for folder in folders) else None


def load_config(experiment: str | None = None, overrides: list[dict[str, Any]] | None = None
                ) -> ExperimentConfig:
    """Defaults <- experiment file <- overrides (each a nested dict, later ones win)."""
    data = _read_experiment(experiment) if experiment else {}
    for override in overrides or []:
        data = _merge(data, override)
    return validate(_build(ExperimentConfig, _renamed_keys(data, refuse=True), ""))


def scale_schedule(config: ExperimentConfig, total_steps: int) -> dict[str, Any] | None:
    """Sets `config` to `total_steps` iterations with its learning-rate drops at the same
    fractions of the run, rounded half up to whole iterations (what `--steps` does): CIFAR-10's
    32000, 48000 of 64000 become 5000, 7500 of 10000. Only the drops move; the warm-up cap
    (optim.warmup_max_steps) and the logging, evaluation and checkpoint intervals stay.

    Returns {"total_steps", "lr_boundaries_steps", "from_total_steps",
    "from_lr_boundaries_steps"} when the drops moved, None when nothing was scaled (no drops,
    the plateau schedule, or the same length). ConfigError when the scaled drops do not fit.
    """
    optim = config.optim
    before, old_total = list(optim.lr_boundaries_steps), optim.total_steps
    optim.total_steps = total_steps
    if optim.lr_schedule != "steps" or not before or total_steps == old_total or total_steps < 1:
        validate(config)
        return None
    optim.lr_boundaries_steps = [(2 * b * total_steps + old_total) // (2 * old_total) for b in before]
    problem = _lr_boundaries(optim.lr_boundaries_steps, config)
    if problem is not None:
        raise ConfigError(
            f"the learning-rate drops at {', '.join(map(str, before))} of {old_total} iterations, "
            f"scaled to {total_steps} iterations, fall at "
            f"{', '.join(map(str, optim.lr_boundaries_steps))}: {problem}; give them with "
            f"--set optim.lr_boundaries_steps=[...]")
    validate(config)
    return {"total_steps": total_steps, "lr_boundaries_steps": list(optim.lr_boundaries_steps),
            "from_total_steps": old_total, "from_lr_boundaries_steps": before}


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Rebuilds a saved config (config.json of a run directory; older names taken)."""
    return validate(_build(ExperimentConfig, _renamed_keys(data, refuse=False), ""))


def _renamed_keys(data: dict[str, Any], refuse: bool) -> dict[str, Any]:
    """`data` with sweep.pack_seeds, the old name of sweep.pack, as sweep.pack: a saved
    config.json keeps its old name; an experiment file or --set is told the new one."""
    sweep = data.get("sweep")
    if not isinstance(sweep, dict) or "pack_seeds" not in sweep:
        return data
    if refuse:
        raise ConfigError('config key sweep.pack_seeds is now sweep.pack (true, false or "auto"; '
                          'sweep.pack_formulation chooses how a pack is laid out)')
    sweep = {key: value for key, value in sweep.items() if key != "pack_seeds"}
    sweep.setdefault("pack", data["sweep"]["pack_seeds"])
    return {**data, "sweep": sweep}


def config_to_toml(config: ExperimentConfig) -> str:
    """The config as an experiment file: `load_config(path)` of it gives back the same config."""
    import tomli_w  # the writer that pairs with tomllib

    return tomli_w.dumps(config.to_dict())
