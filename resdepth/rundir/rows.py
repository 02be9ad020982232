"""A rows file (metrics.jsonl, signals.jsonl): one JSON object per line, each with a "type" and
a whole "step". Its one parser, `read_rows`, and `RowsLog`, the training loop's writer, which
reads its own rows back through that parser (so a resume keeps exactly the rows a reader shows).

Each file says what its rows must be by a `check(row) -> problem or None`. Pure Python, no JAX.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from resdepth.rundir.schema import INT, is_kind
from resdepth.rundir.storage import (
    damaged, failing_as_write_failed, finite, reason_of, write_bytes_atomically)

# A row of the file's own kinds -> None, else what is wrong with it ("type is 'x', not ...").
RowCheck = Callable[[dict[str, Any]], "str | None"]


def read_rows(path: Path, check: RowCheck, damage: list[str] | None = None, warn: bool = True
              ) -> tuple[dict[str, Any], ...]:
    """The well-formed rows of a rows file (a dict with a "type" and a whole "step" that `check`
    accepts), in file order; () when the file is missing.

    A last line without its newline is a row being written (or cut short by a crash, which a
    resume truncates) and is skipped quietly; any other malformed row is skipped, and recorded
    as the file's damage (one warning for the file when `warn`).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return ()
    except OSError as error:
        damaged(path, f"cannot be read ({reason_of(error)}); ignored", damage, warn)
        return ()
    lines = data.split(b"\n")
    rows, bad = [], []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append(f"line {number} is not UTF-8 text")
            continue
        except json.JSONDecodeError:
            if number < len(lines):  # the last piece has no newline after it: being written
                bad.append(f"line {number} is not JSON")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("type"), str) \
                or not is_kind(INT, row.get("step")) or row.get("step") is None:
            bad.append(f"line {number} is not a row with a type and a step")
            continue
        problem = check(row)
        if problem:
            bad.append(f"line {number}: {problem}")
            continue
        rows.append(row)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        damaged(path, f"skipped {len(bad)} malformed row{'s' if len(bad) > 1 else ''}: "
                      f"{bad[0]}{more}", damage, warn)
    return tuple(rows)


class RowsLog:
    """Appends rows to a rows file; on resume, drops rows logged after the checkpoint.

    `enabled` False (every process of a multi-host run but the first) writes nothing. A write
    that fails raises WriteFailed naming the folder.
    """

    def __init__(self, path: Path, check: RowCheck, enabled: bool = True):
        self.path, self.check, self.enabled = Path(path), check, enabled

    def rows(self) -> list[dict[str, Any]]:
        """The rows as a reader reads them, quietly (a resume is not the place to warn)."""
        return list(read_rows(self.path, self.check, warn=False))

    def truncate_after(self, step: int) -> None:
        """Keeps only whole rows with row['step'] <= step (the checkpoint being resumed from)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [row for row in self.rows() if row["step"] <= step]
        with failing_as_write_failed(self.path.parent):
            write_bytes_atomically(self.path, "".join(json.dumps(row) + "\n" for row in kept).encode())

    def append(self, row: dict[str, Any]) -> None:
        """One row, flushed to the disk before returning (a crash loses at most this row)."""
        if not self.enabled:
            return
        with failing_as_write_failed(self.path.parent), self.path.open("a") as handle:
            handle.write(json.dumps({k: finite(v) for k, v in row.items()}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
