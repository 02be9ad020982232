"""Bytes in and out of a run directory's files: atomic writes, the one JSON-object reader, and
write failures turned into one line the CLI shows.

A write that fails (no space left, a read-only or foreign folder, a quota) raises `WriteFailed`,
an InvalidChoice: the CLI prints it as one line naming the folder and exits with code 2, and the
same command resumes once the cause is gone (a run keeps its last complete checkpoint).

Reading never raises on a damaged file: `read_object` returns None and, when asked to warn,
names the file and what is wrong in one warning line (on the `resdepth.rundir` logger, which the
CLI shows on stderr). Pure Python, no JAX.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from resdepth.errors import InvalidChoice

log = logging.getLogger("resdepth.rundir")


class RunDirError(InvalidChoice):
    """The output folder cannot be created or written (found before a run starts)."""


class WriteFailed(InvalidChoice):
    """Writing a run's file failed mid-run (no space left, a read-only folder, a quota...)."""

    def __init__(self, folder: Path, reason: str, advice: str | None = None):
        self.folder, self.reason = Path(folder), reason
        advice = advice or (f"free space on {folder} (or make it writable) or choose another "
                            "--out, then run the same command to resume")
        super().__init__(f"cannot write to {folder}: {reason}; {advice}")


def reason_of(error: OSError) -> str:
    """'No space left on device' for an OSError (its errno's words where it has one)."""
    if error.strerror:
        return error.strerror
    return os.strerror(error.errno) if error.errno else str(error)


@contextlib.contextmanager
def failing_as_write_failed(folder: Path, advice: str | None = None) -> Iterator[None]:
    """Turns an OSError of the block into WriteFailed naming `folder`."""
    try:
        yield
    except OSError as error:
        raise WriteFailed(folder, reason_of(error), advice) from None


def ensure_writable(folder: Path) -> Path:
    """Creates `folder` and checks a file can be written there, or RunDirError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise RunDirError(f"cannot write to {folder}: {reason_of(error)}; "
                          "choose another folder with --out") from None
    return folder


def finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: a diverged loss is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_bytes_atomically(path: Path, data: bytes) -> Path:
    """Writes `data` to `path` via a temporary file in the same folder and os.replace.

    A reader (or a crash) never sees a half-written summary, figure or table. Raises OSError
    (callers writing into a run directory use `failing_as_write_failed`).
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


def json_bytes(data: dict[str, Any]) -> bytes:
    """The file text of a JSON object: sorted keys, indented, non-finite numbers as null."""
    clean = {key: finite(value) for key, value in data.items()}
    return (json.dumps(clean, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: Path, data: dict[str, Any], advice: str | None = None) -> Path:
    """Writes a JSON object atomically; WriteFailed naming the folder when it cannot."""
    path = Path(path)
    with failing_as_write_failed(path.parent, advice):
        return write_bytes_atomically(path, json_bytes(data))


def damaged(path: Path, problem: str, damage: list[str] | None, warn: bool) -> None:
    """Records what is wrong with a file: one warning line naming it (when `warn`), and
    "<file name>: <problem>" appended to `damage` (when given)."""
    if warn:
        log.warning("%s: %s", path, problem)
    if damage is not None:
        damage.append(f"{Path(path).name}: {problem}")


def short(value: Any) -> str:
    """A value as a warning quotes it, at most 40 characters."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_object(path: Path, damage: list[str] | None = None, warn: bool = True
                ) -> dict[str, Any] | None:
    """The JSON object a file holds, or None: quietly when the file is missing; when it cannot
    be read, is not UTF-8, is not JSON (cut short) or is not an object, with the problem
    recorded (`damaged`: a warning when `warn`, an entry in `damage`)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ENOENT:
            return None
        damaged(path, f"cannot be read ({reason_of(error)}); ignored", damage, warn)
        return None
    except UnicodeDecodeError:
        damaged(path, "not UTF-8 text (damaged bytes); ignored", damage, warn)
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        where = ", truncated?" if error.pos >= len(text.rstrip()) else f" at line {error.lineno}"
        damaged(path, f"not valid JSON ({error.msg}{where}); ignored", damage, warn)
        return None
    if not isinstance(data, dict):
        damaged(path, f"holds a JSON {type(data).__name__}, not an object; ignored", damage, warn)
        return None
    return data
