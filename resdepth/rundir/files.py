"""The files of a run directory (see docs/run-directory.md): names, atomic JSON, metrics rows.

Only the first process of a multi-host run writes them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from resdepth.errors import InvalidChoice
from resdepth.config import ExperimentConfig
from resdepth.rundir.identity import flatten, run_name  # noqa: F401  (run_name: its old home)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
RESPONSES_FILE = "layer_responses.json"


class RunDirError(InvalidChoice):
    """The output folder cannot be created or written."""


class RunConflict(InvalidChoice):
    """A run directory holds a run of another config than the one asked for."""


def check_same_run(run_dir: Path, config: ExperimentConfig) -> None:
    """RunConflict unless `run_dir` is new or was started with the same result-changing settings.

    Settings that do not change results (logging, evaluation and checkpoint intervals, the eval
    batch size, data folders) may differ; anything else would mix two experiments' numbers in
    one directory (a longer schedule reported as the old one, a resumed run at another rate).
    """
    from resdepth.config import ConfigError, config_from_dict
    from resdepth.rundir.identity import differing_keys, saved_as_current

    saved = saved_as_current(read_json(run_dir / CONFIG_FILE))
    if saved is None:
        return
    advice = "use --tag NAME for a separate run, or another --out"
    try:
        # Through the config class, so fields added since the run started take their defaults.
        saved_settings = config_from_dict(saved["config"]).to_dict()
    except (ConfigError, KeyError, TypeError) as error:
        raise RunConflict(f"{run_dir} holds a run whose config.json cannot be read ({error}); "
                          f"{advice}") from None
    keys = differing_keys(saved_settings, config.to_dict())
    if keys:
        flat_saved, flat_now = flatten(saved_settings), flatten(config.to_dict())
        changes = ", ".join(f"{key} {flat_saved.get(key)!r} -> {flat_now.get(key)!r}" for key in keys)
        raise RunConflict(f"{run_dir} was started with other settings ({changes}); {advice}")


def ensure_writable(folder: Path) -> Path:
    """Creates `folder` and checks a file can be written there, or RunDirError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise RunDirError(f"cannot write to {folder}: {error.strerror or error}; "
                          "choose another folder with --out") from None
    return folder


def _finite(value: Any) -> Any:
    # JSON has no NaN or Infinity: a diverged loss is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_bytes_atomically(path: Path, data: bytes) -> Path:
    """Writes `data` to `path` via a temporary file in the same folder and os.replace.

    A reader (or a crash) never sees a half-written summary, figure or table.
    """
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temp_name, 0o644)  # mkstemp makes it owner-only; results are for everyone
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes JSON atomically; non-finite numbers become null."""
    clean = {key: _finite(value) for key, value in data.items()}
    write_bytes_atomically(path, (json.dumps(clean, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    """The file's JSON, or None when it is missing or unreadable (not UTF-8 and not JSON
    included: both are ValueErrors). Quiet: rundir/record.py's readers say what is damaged."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; a half-written last line (a crash mid-append, or a live
    run being read) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except ValueError:  # not JSON, or not UTF-8 text
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):  # a row, not debris
            rows.append(row)
    return rows


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


class MetricsLog:
    """Appends rows to metrics.jsonl; on resume, drops rows logged after the checkpoint."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def truncate_after(self, step: int) -> None:
        """Keeps only whole rows with row['step'] <= step (the checkpoint being resumed from)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [row for row in self.rows() if row["step"] <= step]
        write_bytes_atomically(self.path, "".join(json.dumps(row) + "\n" for row in kept).encode())

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({k: _finite(v) for k, v in row.items()}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
