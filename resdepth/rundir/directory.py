"""`RunDirectory`: one run's folder, the one owner of its path, its file names and the writing
and reading of config.json, summary.json, metrics.jsonl, the result files and the checkpoints
(docs/run-directory.md).

`read_run` (rundir/record.py) reads a whole run for the commands; the training loop, the sweep
and the evaluations go through the methods here. A write that fails raises WriteFailed (one line,
exit code 2). JAX is imported only by the methods that need it (`write_config`, `checkpointer`):
tables and figures never load it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resdepth.errors import InvalidChoice
from resdepth.rundir import identity
from resdepth.rundir.lock import LOCK_FILE
from resdepth.rundir.metrics import MetricsLog, last_step
from resdepth.rundir.signals import Signals, SignalsLog, read_signals
from resdepth.rundir.schema import SUMMARY_FIELDS, bad_fields, checked_config, read_checked
from resdepth.rundir.storage import ensure_writable, read_object, write_json
from resdepth.rundir.summary import COMPLETED, Summary

if TYPE_CHECKING:
    from resdepth.config import ExperimentConfig
    from resdepth.rundir.checkpoints import Checkpointer

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
RESPONSES_FILE = "layer_responses.json"
SIGNALS_FILE = "signals.jsonl"
CHECKPOINTS_FOLDER = "checkpoints"
# `resdepth evaluate --mode`: the file each ImageNet test protocol writes its errors to.
RESULT_FILES = {"10crop": "tencrop.json", "multiscale": "multiscale.json"}
# A folder holding any of these is a run directory (a run that has only started holds a lock
# file or config.json, no metrics yet).
RUN_FILES = (SUMMARY_FILE, METRICS_FILE, CONFIG_FILE, LOCK_FILE)
# What `resdepth evaluate` and `analyze` say when they cannot write their result.
EVALUATION_ADVICE = "free space there (or make it writable), then run the same command again"


class RunConflict(InvalidChoice):
    """A run directory holds a run of another config than the one asked for, or one whose
    config.json cannot be read."""


class RunDirectory:
    """The folder of one run: `RunDirectory(path)`, or `RunDirectory.of(out, config)` for
    out/<experiment>/<run name>."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def of(cls, out: Path, config: "ExperimentConfig") -> "RunDirectory":
        """The run directory of `config` under the results folder `out`:
        out/<config.name>/<run name> ("results/demo/resnet-56-A-seed0")."""
        return cls(Path(out) / config.name / identity.run_name(config))

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDirectory) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # ------------------------------------------------------------------------- its files
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def signals_path(self) -> Path:
        return self.path / SIGNALS_FILE

    @property
    def responses_path(self) -> Path:
        return self.path / RESPONSES_FILE

    @property
    def checkpoints_path(self) -> Path:
        return self.path / CHECKPOINTS_FOLDER

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    def result_path(self, mode: str) -> Path:
        """The file of an ImageNet test protocol ("10crop", "multiscale": RESULT_FILES)."""
        return self.path / RESULT_FILES[mode]

    def is_run(self) -> bool:
        """Whether the folder holds a run (any of RUN_FILES)."""
        return self.path.is_dir() and any((self.path / name).is_file() for name in RUN_FILES)

    # ------------------------------------------------------------- before a run trains
    def ensure_writable(self) -> "RunDirectory":
        """Creates the folder and checks a file can be written there, or RunDirError."""
        ensure_writable(self.path)
        return self

    def check_same_run(self, config: "ExperimentConfig") -> None:
        """RunConflict unless the folder is new or was started with the same result-changing
        settings as `config`, or its config.json cannot be read (then nobody can tell).

        Settings that do not change results (logging, evaluation and checkpoint intervals, the
        eval batch size, data folders) may differ; anything else would mix two experiments'
        numbers in one directory. A completed run whose config.json is damaged is let through:
        it is recognised as finished and left untouched, never trained again.
        """
        from resdepth.config import ConfigError, config_from_dict

        advice = "use --tag NAME for a separate run, or another --out"
        problems: list[str] = []
        saved = self.read_config(warn=False, damage=problems)
        if problems or (saved is None and self.config_path.exists()):
            if self.completed_summary() is not None:
                return
            what = problems[0].split(": ", 1)[-1] if problems else "it cannot be read"
            raise RunConflict(f"{self.path} holds a run whose {CONFIG_FILE} cannot be read "
                              f"({what}); {advice}")
        if saved is None:
            return
        try:
            # Through the config class, so fields added since the run started take their defaults.
            saved_settings = config_from_dict(saved["config"]).to_dict()
        except (ConfigError, KeyError, TypeError) as error:
            raise RunConflict(f"{self.path} holds a run whose {CONFIG_FILE} cannot be read "
                              f"({error}); {advice}") from None
        keys = identity.differing_keys(saved_settings, config.to_dict())
        if keys:
            flat_saved, flat_now = identity.flatten(saved_settings), identity.flatten(config.to_dict())
            changes = ", ".join(f"{key} {flat_saved.get(key)!r} -> {flat_now.get(key)!r}" for key in keys)
            raise RunConflict(f"{self.path} was started with other settings ({changes}); {advice}")

    def completed_summary(self) -> Summary | None:
        """The summary of a finished run (one a rerun leaves untouched), or None; quiet, and
        never raises on a damaged file (a run whose summary cannot be read is not finished)."""
        data = read_object(self.summary_path, warn=False)
        if isinstance(data, dict) and data.get("status") == COMPLETED and not bad_fields(data, SUMMARY_FIELDS):
            return Summary.from_json(data)
        return None

    # ------------------------------------------------------------------------- config.json
    def write_config(self, config: "ExperimentConfig", notes: dict[str, Any] | None = None) -> None:
        """The one writer of config.json, on process 0 only (call it once JAX has started).

        Absent, the file is written: {"config": the settings, "fingerprint",
        "recipe_fingerprint", "precision_names", "code_version", "jax_version", "devices"}
        and `notes`. Present, each key of `notes` it lacks is added (they describe how the run
        was started, e.g. `--steps` scaling the schedule); the rest is never rewritten.
        """
        import jax

        if jax.process_index() != 0:
            return
        notes = notes or {}
        if self.config_path.exists():
            saved = read_object(self.config_path, warn=False)
            missing = {key: value for key, value in notes.items()
                       if isinstance(saved, dict) and key not in saved}
            if missing:
                write_json(self.config_path, {**saved, **missing})
            return
        settings = config.to_dict()
        write_json(self.config_path, {
            "config": settings, "fingerprint": identity.fingerprint(settings),
            "recipe_fingerprint": identity.recipe_fingerprint(settings),
            identity.PRECISION_NAMES_KEY: identity.PRECISION_NAMES, "code_version": code_version(),
            "jax_version": jax.__version__, "devices": [str(d) for d in jax.devices()],
            **notes})

    def read_config(self, warn: bool = True, damage: list[str] | None = None
                    ) -> dict[str, Any] | None:
        """The one reader of config.json: {"config": {...}, "fingerprint": ..., ...} type-checked
        (docs/run-directory.md) and in today's names (`identity.saved_as_current`), or None
        when the file is missing or unreadable. What is damaged is named in a warning (`warn`)
        and appended to `damage`."""
        return identity.saved_as_current(checked_config(
            read_object(self.config_path, damage, warn), self.config_path, damage, warn))

    def trained_config(self, data_dir: str | None = None) -> "ExperimentConfig":
        """The resolved config the run was trained with, optionally with another data folder;
        InvalidChoice when config.json is missing or unreadable."""
        from resdepth.config import ConfigError, config_from_dict

        problems: list[str] = []
        saved = self.read_config(warn=False, damage=problems)
        if saved is None or problems:
            why = problems[0] if problems else f"no {CONFIG_FILE}"
            raise InvalidChoice(f"{self.path} is not a run directory ({why})")
        try:
            config = config_from_dict(saved["config"])
        except (ConfigError, KeyError, TypeError) as error:
            raise InvalidChoice(f"{self.path}: {CONFIG_FILE} cannot be read ({error})") from None
        if data_dir is not None:
            config.data.data_dir = data_dir
        return config

    # ------------------------------------------------------------- what a run writes
    def metrics_log(self, enabled: bool = True) -> MetricsLog:
        """metrics.jsonl's writer (`enabled` False on every process but the first)."""
        return MetricsLog(self.metrics_path, enabled)

    def signals_log(self, enabled: bool = True) -> SignalsLog:
        """signals.jsonl's writer (`enabled` False on every process but the first)."""
        return SignalsLog(self.signals_path, enabled)

    def read_signals(self, damage: list[str] | None = None, warn: bool = True) -> Signals | None:
        """signals.jsonl read back; None for a run without one (made before signals were
        recorded) or whose file is unreadable (named in a warning and in `damage`)."""
        return read_signals(self.signals_path, damage, warn)

    def write_summary(self, summary: Summary) -> None:
        """summary.json, written atomically (a reader never sees half of it)."""
        write_json(self.summary_path, summary.to_json())

    def failed_summary(self, config: "ExperimentConfig", message: str,
                       traceback: str | None = None) -> Summary:
        """The summary of this run after a crash (not written): what its earlier summary knew,
        status "failed", the iterations reached being the last logged (Summary.failed)."""
        previous = read_checked(self.summary_path, SUMMARY_FIELDS, warn=False)
        return Summary.failed(self.name, config, message, previous, last_step(self.metrics_path),
                              traceback)

    def checkpointer(self, keep: int) -> "Checkpointer":
        """The run's checkpoints (the newest `keep` kept), in checkpoints/."""
        from resdepth.rundir.checkpoints import Checkpointer

        return Checkpointer(self.checkpoints_path, keep)

    def write_responses(self, responses: dict[str, Any]) -> Path:
        """layer_responses.json (`resdepth analyze`)."""
        return write_json(self.responses_path, responses, EVALUATION_ADVICE)

    def write_result(self, mode: str, result: dict[str, Any]) -> Path:
        """The errors of an ImageNet test protocol (`resdepth evaluate --mode`)."""
        return write_json(self.result_path(mode), result, EVALUATION_ADVICE)


def code_version() -> str:
    """The git commit of the checkout (with '+dirty' if modified), else the package version."""
    from importlib.metadata import version

    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                             capture_output=True, check=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               text=True, capture_output=True, timeout=5).stdout.strip()
        return f"git:{sha}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return f"resdepth {version('resdepth')}"
