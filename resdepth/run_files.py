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

from resdepth.architectures import InvalidChoice
from resdepth.config import ExperimentConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
RESPONSES_FILE = "layer_responses.json"


class RunDirError(InvalidChoice):
    """The output folder cannot be created or written."""


def run_name(config: ExperimentConfig) -> str:
    """'resnet-56-A-seed0' or 'plain-56-seed0': the run directory's name."""
    model = config.model
    if model.residual:
        return f"resnet-{model.depth}-{model.shortcut}-seed{config.run.seed}"
    return f"plain-{model.depth}-seed{config.run.seed}"


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


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes JSON atomically (temp file + rename), so a reader never sees half a file."""
    clean = {key: _finite(value) for key, value in data.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def code_version() -> str:
    """The git commit of the checkout (with '+dirty' if modified), else the package version."""
    from importlib.metadata import version

    root = Path(__file__).resolve().parent.parent
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
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Keeps only rows with row['step'] <= step (the checkpoint being resumed from)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [row for row in self.rows() if row["step"] <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        os.replace(tmp, self.path)

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({k: _finite(v) for k, v in row.items()}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
