"""Config values: every field's rule in config.RULES, did-you-mean for misspelt keys, and
`resdepth config`, whose TOML loads back as the same config."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resdepth.cli.app import app
from resdepth import choices, dataset_facts
from resdepth.config import (
    RULES, UNCHECKED, ConfigError, ExperimentConfig, config_from_dict, config_to_toml, load_config,
    parse_override, validate, validate_sweep)

runner = CliRunner()
EXPERIMENTS = sorted(Path(str(resources.files("resdepth") / "experiments")).glob("*.toml"))


def load(experiment: str, *overrides: str) -> ExperimentConfig:
    return load_config(experiment, [parse_override(text) for text in overrides])


def rejection(experiment: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(experiment, *overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def leaf_fields(cls: type = ExperimentConfig, where: str = "") -> dict[str, typing.Any]:
    """{"optim.learning_rate": float, ...} for every field that is not a section."""
    hints = typing.get_type_hints(cls)
    leaves = {}
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            leaves.update(leaf_fields(hints[field.name], f"{where}{field.name}."))
        else:
            leaves[f"{where}{field.name}"] = hints[field.name]
    return leaves


# --------------------------------------------------------------------------- the rule table
def test_every_field_has_a_rule_or_is_free_form_or_bool():
    leaves = leaf_fields()
    missing = [key for key, kind in leaves.items() if kind is not bool and key not in {*RULES, *UNCHECKED}]
    assert not missing, f"add a rule to config.RULES (or UNCHECKED) for {missing}"
    assert set(RULES) <= set(leaves) and set(UNCHECKED) <= set(leaves)


def test_the_shipped_experiments_are_found():
    assert {"cifar10", "digits", "imagenet", "demo", "table6"} <= {path.stem for path in EXPERIMENTS}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda path: path.stem)
def test_every_shipped_experiment_loads(path):
    config = load_config(str(path))
    assert validate(config) is config
    assert config_from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_defaults_are_valid():
    validate(ExperimentConfig())


# (experiment, overrides separated by "; ", what the message says is allowed). The last override
# sets a value just outside its rule.
BAD_VALUES = [
    ("cifar10", "name='a/b'", "folder name"),
    ("cifar10", "data.dataset='mnist'", "cifar10, digits or imagenet"),
    ("cifar10", "data.pad_pixels=-1", ">= 0"),
    ("imagenet", "data.image_size=0", ">= 1"),
    ("cifar10", "optim.lr_schedule='plateau'; data.plateau_holdout_examples=0", "plateau"),
    ("cifar10", "data.plateau_holdout_examples=-1", ">= 0"),
    ("cifar10", "model.depth=21", "6n+2"),
    ("digits", "model.depth=2", "6n+2"),
    ("imagenet", "model.depth=20", "18, 34, 50, 101 or 152"),
    ("cifar10", "model.shortcut='D'", "A, B or C"),
    ("cifar10", "model.compute_dtype='float16'", "float32, tf32 or bfloat16"),
    ("cifar10", "model.bn_group_size=-1", ">= 0"),
    ("cifar10", "model.bn_group_size=48", "must divide optim.batch_size=128"),
    ("cifar10", "optim.batch_size=0", ">= 1"),
    ("cifar10", "optim.learning_rate=-0.1", "> 0"),
    ("cifar10", "optim.learning_rate=0", "> 0"),
    ("cifar10", "optim.learning_rate=nan", "> 0"),
    ("cifar10", "optim.momentum=1", "[0, 1)"),
    ("cifar10", "optim.momentum=-0.1", "[0, 1)"),
    ("cifar10", "optim.weight_decay=-1e-4", ">= 0"),
    ("cifar10", "optim.lr_schedule='cosine'", "steps or plateau"),
    ("cifar10", "optim.lr_decay_factor=0", "(0, 1]"),
    ("cifar10", "optim.lr_decay_factor=10", "(0, 1]"),
    ("cifar10", "optim.lr_boundaries_steps=[48000, 32000]", "strictly increasing"),
    ("cifar10", "optim.lr_boundaries_steps=[32000, 32000]", "strictly increasing"),
    ("cifar10", "optim.lr_boundaries_steps=[0, 48000]", "boundaries must lie inside total_steps=64000"),
    ("cifar10", "optim.total_steps=1000", "boundaries must lie inside total_steps=1000"),
    ("cifar10", "optim.total_steps=0", ">= 1"),
    ("cifar10", "optim.plateau_patience_evals=0", ">= 1"),
    ("cifar10", "optim.plateau_threshold=-1", ">= 0"),
    ("cifar10", "optim.warmup_learning_rate=0", "> 0"),
    ("cifar10", "optim.warmup_until_train_error=0", "(0, 1]"),
    ("cifar10", "optim.warmup_until_train_error=80", "(0, 1]"),
    ("cifar10", "optim.warmup_min_depth=0", ">= 1"),
    ("cifar10", "optim.warmup_max_steps=-1", ">= 0"),
    ("cifar10", "run.seed=-1", ">= 0"),
    ("cifar10", "run.log_every_steps=0", ">= 1"),
    ("cifar10", "run.eval_every_steps=0", ">= 1"),
    ("cifar10", "run.checkpoint_every_steps=0", ">= 1"),
    ("cifar10", "run.keep_checkpoints=0", ">= 1"),
    ("cifar10", "run.eval_batch_size=0", ">= 1"),
    ("cifar10", "run.eval_examples=-1", ">= 0"),
    ("cifar10", "run.tag='my run'", "A-Z a-z 0-9 _ . -"),
    ("cifar10", "sweep.archs=['plain', 'dense']", "plain or residual"),
    ("cifar10", "sweep.archs=[]", "not be empty"),
    ("cifar10", "sweep.archs=['plain', 'plain']", "not repeat"),
    ("cifar10", "sweep.depths=[0]", ">= 1"),
    ("cifar10", "sweep.depths=[]", "not be empty"),
    ("cifar10", "sweep.depths_by_arch={plain=[20, 21]}", "6n+2"),
    ("cifar10", "sweep.depths_by_arch={dense=[20]}", "plain or residual"),
    ("cifar10", "sweep.seeds=[-1]", ">= 0"),
    ("cifar10", "sweep.seeds=[]", "not be empty"),
    ("cifar10", "sweep.seeds_by_depth={'resnet-110'=[0]}", '"residual-110" or "110"'),
    ("cifar10", "sweep.seeds_by_depth={'110'=[]}", "not be empty"),
]


@pytest.mark.parametrize("experiment,override,allowed", BAD_VALUES, ids=[o for _, o, _ in BAD_VALUES])
def test_a_value_outside_its_rule_is_one_line_naming_key_value_and_what_is_allowed(experiment, override, allowed):
    message = rejection(experiment, *override.split("; "))
    key = override.split("; ")[-1].split("=")[0]
    if "total_steps=1000" not in override:  # that one blames the boundaries it strands
        assert message.startswith(f"invalid config value {key} = ")
    assert allowed in message


@pytest.mark.parametrize("experiment,overrides", [
    ("cifar10", ["optim.momentum=0", "optim.lr_decay_factor=1", "optim.warmup_until_train_error=1"]),
    ("cifar10", ["model.bn_group_size=0"]),
    ("cifar10", ["model.bn_group_size=32"]),
    ("cifar10", ["optim.batch_size=16"]),  # a group of 64 covers the whole batch of 16
    ("cifar10", ["optim.total_steps=1000", "optim.lr_boundaries_steps=[500, 750]"]),
    ("cifar10", ["optim.total_steps=10", "optim.lr_boundaries_steps=[]"]),
    ("cifar10", ["optim.weight_decay=0", "run.seed=7", "run.tag='v2_wd0.0-x'"]),
    ("cifar10", ["optim.lr_schedule='steps'", "data.plateau_holdout_examples=0"]),
    ("imagenet", ["optim.lr_schedule='plateau'", "optim.total_steps=3"]),  # reads no boundaries
    ("imagenet", ["model.depth=152", "model.compute_dtype='float32'"]),
    ("digits", ["model.depth=8", "data.pad_pixels=0"]),
    ("cifar10", ["sweep.seeds_by_depth={'residual-110'=[0, 1], '56'=[3]}",
                 "sweep.depths_by_arch={residual=[20, 1202]}"]),
])
def test_values_inside_the_rules_are_accepted(experiment, overrides):
    load(experiment, *overrides)


def test_shortcut_is_upper_cased_as_the_cli_takes_it():
    assert load("cifar10", "model.shortcut='b'").model.shortcut == "B"
    assert config_from_dict({"model": {"shortcut": "c"}}).model.shortcut == "C"


def test_saved_configs_are_checked_too():
    saved = load("digits").to_dict()
    assert config_from_dict(saved).to_dict() == saved
    saved["optim"]["learning_rate"] = -1.0
    with pytest.raises(ConfigError, match="optim.learning_rate = -1.0: must be > 0"):
        config_from_dict(saved)


# Each list of choices is spelled once, in choices.py or dataset_facts.py: the config takes every
# item of it and, by its message, nothing else.
CHOICE_LISTS = [
    ("data.dataset", tuple(dataset_facts.DATASET_FAMILIES)),
    ("model.shortcut", choices.SHORTCUTS),
    ("model.compute_dtype", choices.COMPUTE_DTYPES),
    ("optim.lr_schedule", choices.LR_SCHEDULES),
    ("sweep.pack_formulation", ("auto", *choices.PACK_LAYOUTS)),
]


@pytest.mark.parametrize("key,options", CHOICE_LISTS, ids=[key for key, _ in CHOICE_LISTS])
def test_a_choice_is_checked_against_its_one_list(key, options):
    section, field = key.split(".")
    for option in options:
        config = ExperimentConfig()
        setattr(getattr(config, section), field, option)
        if key == "data.dataset" and dataset_facts.family_of(option) == "imagenet":
            config.model.depth = 34  # the default 20 is a CIFAR depth
        validate(config)
    config = ExperimentConfig()
    setattr(getattr(config, section), field, "none-of-these")
    with pytest.raises(ConfigError) as caught:
        validate(config)
    assert all(option in str(caught.value) for option in options)


def test_sweep_archs_are_the_one_list():
    assert ExperimentConfig().sweep.archs == list(choices.ARCHS)
    assert "plain or residual" in rejection("cifar10", "sweep.archs=['dense']")


def test_every_dataset_has_each_of_its_facts():
    datasets = set(dataset_facts.DATASET_FAMILIES)
    for facts in (dataset_facts.IMAGE_SIZE_PIXELS, dataset_facts.IN_CHANNELS,
                  dataset_facts.NUM_CLASSES):
        assert set(facts) == datasets
    assert set(dataset_facts.DATASET_FAMILIES.values()) == {"cifar", "imagenet"}


# A sweep's depths are checked against the dataset's family when it is swept (validate_sweep),
# not at every load: imagenet.toml, and every ImageNet run it saved, keeps the default CIFAR grid.
@pytest.mark.parametrize("experiment,overrides,allowed", [
    ("cifar10", ["sweep.depths=[20, 21]"], "6n+2 with n >= 1 for cifar10"),
    ("digits", ["sweep.depths=[9]"], "6n+2 with n >= 1 for digits"),
    ("imagenet", [], "18, 34, 50, 101 or 152 for imagenet"),
    ("imagenet", ["sweep.depths_by_arch={plain=[18]}"], "18, 34, 50, 101 or 152"),
])
def test_a_sweep_checks_its_depths_against_the_dataset(experiment, overrides, allowed):
    config = load(experiment, *overrides)  # a load alone takes them
    with pytest.raises(ConfigError) as caught:
        validate_sweep(config)
    assert str(caught.value).startswith("invalid config value sweep.depths = ")
    assert allowed in str(caught.value)


@pytest.mark.parametrize("experiment,overrides", [
    ("table6", []),  # depths of its own for both architectures; the default grid goes unread
    ("table3", []),
    ("imagenet", ["sweep.depths=[18, 34]"]),
    ("imagenet", ["sweep.depths_by_arch={plain=[18], residual=[50]}"]),
    ("digits", ["sweep.depths=[8, 14]"]),
])
def test_a_sweep_takes_the_depths_of_its_dataset(experiment, overrides):
    config = load(experiment, *overrides)
    assert validate_sweep(config) is config


# ----------------------------------------------------------------------------- did you mean
@pytest.mark.parametrize("override,message", [
    ("optim.learnig_rate=0.2", "unknown config key optim.learnig_rate; did you mean optim.learning_rate?"),
    ("optm.learning_rate=0.2", "unknown config key optm.learning_rate; did you mean optim.learning_rate?"),
    ("optm.learnig_rate=0.2", "unknown config key optm.learnig_rate; did you mean optim.learning_rate?"),
    ("run.sed=1", "unknown config key run.sed; did you mean run.seed?"),
    ("nmae='x'", "unknown config key nmae; did you mean name?"),
])
def test_a_misspelt_key_or_section_gets_the_nearest_valid_one(override, message):
    assert rejection("cifar10", override) == message


def test_a_misspelt_section_table_and_a_key_with_no_near_match():
    with pytest.raises(ConfigError, match=r"^unknown config section modle; did you mean model\?$"):
        load_config("cifar10", [{"modle": {"depth": 20, "residual": True}}])
    message = rejection("cifar10", "optim.zzz=1")
    assert message.startswith("unknown config key optim.zzz; valid keys in optim: ")
    assert "learning_rate" in message and "did you mean" not in message


def test_a_misspelt_key_in_an_experiment_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "cifar10"\n[optim]\nweight_decy = 5e-4\n')
    with pytest.raises(ConfigError, match="did you mean optim.weight_decay"):
        load_config(str(path))


# ------------------------------------------------------------------------- resdepth config
def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("experiment,dataset,sets", [
    (None, None, []),
    (None, "digits", ["optim.total_steps=1000", "model.shortcut='b'"]),
    (None, "imagenet", ["model.depth=50"]),
    ("table6", None, ["run.tag='x1'"]),
    ("demo", None, []),
], ids=["default", "digits-overridden", "imagenet", "table6", "demo"])
def test_config_prints_toml_that_loads_back_as_the_same_config(tmp_path, experiment, dataset, sets):
    from resdepth.cli.common import _build_config

    args = [*(["--experiment", experiment] if experiment else []), *(["--dataset", dataset] if dataset else []),
            *(arg for text in sets for arg in ("--set", text))]
    result = runner.invoke(app, ["config", *args])
    assert result.exit_code == 0, result.output
    resolved = _build_config(experiment, dataset, sets, **{"data.dataset": dataset}).to_dict()
    assert tomllib.loads(result.stdout) == resolved  # stdout holds the TOML and nothing else
    path = tmp_path / "resolved.toml"
    path.write_text(result.stdout)
    assert load_config(str(path)).to_dict() == resolved


def test_config_output_matches_what_train_would_build():
    result = runner.invoke(app, ["config", "--dataset", "digits", "--set", "optim.total_steps=1000"])
    expected = load("digits", "optim.total_steps=1000", "data.dataset='digits'")
    assert tomllib.loads(result.stdout) == expected.to_dict()
    assert config_to_toml(expected) == result.stdout


@pytest.mark.parametrize("args,expected", [
    (["--set", "optim.lr_schedule=cosine"], 'optim.lr_schedule = "cosine": must be steps or plateau'),
    (["--set", "optim.learning_rate=-0.1"], "optim.learning_rate = -0.1: must be > 0"),
    (["--set", "optim.learnig_rate=0.2"], "did you mean optim.learning_rate?"),
    (["--set", "optm.learning_rate=0.2"], "did you mean optim.learning_rate?"),
    (["--set", "optim.total_steps='many'"], "must be int"),
    (["--set", "novalue"], "section.key=value"),
    (["--dataset", "mnist"], "cifar10, digits, imagenet"),
    (["--experiment", "no-such-experiment"], "no experiment file"),
])
def test_config_bad_input_is_one_line_on_stderr_and_exit_code_2(args, expected):
    assert expected in one_line_error(runner.invoke(app, ["config", *args]))


def test_config_help_ends_with_an_example():
    result = runner.invoke(app, ["config", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert result.stdout.rstrip().splitlines()[-1].strip() == "resdepth train --experiment mine.toml"
