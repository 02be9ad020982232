"""Orbax checkpoints of a run: the whole TrainState plus a little host-side JSON, in the run
directory's checkpoints/ folder (`RunDirectory.checkpointer`).

The last `keep` checkpoints are kept. Restoring tries the newest first and falls back to the
previous one when the newest cannot be read (for example a write cut short by a crash); each
one passed over is named in one line by the caller, from `Restored.skipped`.

A save that cannot write (no space left, a read-only folder, a quota) removes its partial
`<step>.orbax-checkpoint-tmp` folder and raises WriteFailed (one line, exit code 2): the run's
newest complete checkpoint stays, and the same command resumes from it once the cause is gone.

The checkpoint library reports such failures itself, loudly: absl ERROR lines, tracebacks
("RuntimeError: Event loop is closed", one per pending read or write) that TensorStore's
threads hand to `sys.unraisablehook` when Orbax has closed the event loop they report to,
"Exception ignored in <coroutine ...>" for its abandoned coroutines and asyncio's "Task (or
Future) exception was never retrieved" for its abandoned tasks and futures. `_library_quiet`
keeps all of that off the console while Orbax works; what the user needs is the one line above.
Two of them may come later, when Orbax is done and the user's line is being written: the
abandoned work is collected whenever it is, and a pending write finishes whenever the disk
answers. Those are dropped for the whole process, from this module's import on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp

from resdepth.rundir.storage import WriteFailed, failing_as_write_failed, reason_of

# Orbax writes step N into "N.orbax-checkpoint-tmp..." and renames it to "N" when complete.
PARTIAL_SUFFIX = ".orbax-checkpoint-tmp"
# TensorStore reports an OS error inside its message: "... [os_error_code='28']".
_OS_ERROR_CODE = re.compile(r"os_error_code='(\d+)'")


@dataclasses.dataclass
class Restored:
    state: Any
    host: dict[str, Any]
    step: int
    skipped: list[tuple[int, str]]  # (step, reason) of newer checkpoints that could not be read


class _OrbaxTasks(logging.Filter):
    """Drops asyncio's reports about Orbax's own work ("Task exception was never retrieved",
    "Future exception was never retrieved"): after a failed save, the tasks and futures it
    abandoned report when they are collected, which may be after `_library_quiet` (at the
    interpreter's exit). A task's report names Orbax's source file in its coroutine; a future's
    names only its exception, whose message holds the partial checkpoint's folder
    ("<step>.orbax-checkpoint-tmp"): either way the report mentions orbax."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "orbax" not in record.getMessage()


def _is_orbax_late_report(unraisable: Any) -> bool:
    """Whether `unraisable` (a `sys.unraisablehook` argument) is what a failed save leaves behind:
    - TensorStore reporting a read or write that finished after Orbax closed the event loop
      awaiting it: its completion callback, on a TensorStore thread, calls the closed loop's
      `call_soon_threadsafe`, and TensorStore hands the RuntimeError over with no object
      (nothing else in the process awaits TensorStore);
    - "Exception ignored in <coroutine ...>" for a coroutine of Orbax's, abandoned, collected."""
    first_frame = unraisable.exc_traceback
    late_callback = (isinstance(unraisable.exc_value, RuntimeError)
                     and str(unraisable.exc_value) == "Event loop is closed"
                     and unraisable.object is None and first_frame is not None
                     and first_frame.tb_frame.f_code.co_name == "call_soon_threadsafe")
    code = getattr(unraisable.object, "cr_code", None)
    return late_callback or (code is not None and "orbax" in code.co_filename)


def _without_orbax_late_reports(previous: Any) -> Any:
    """An unraisable hook that drops `_is_orbax_late_report` reports and passes every other
    report to `previous`."""
    def hook(unraisable: Any) -> None:
        if not _is_orbax_late_report(unraisable):
            previous(unraisable)
    return hook


# For the whole process, not only inside `_library_quiet`: the reports come when the abandoned
# work is collected and when a pending write finishes, whenever that is.
logging.getLogger("asyncio").addFilter(_OrbaxTasks())
sys.unraisablehook = _without_orbax_late_reports(sys.unraisablehook)


@contextlib.contextmanager
def _library_quiet() -> Iterator[None]:
    """Orbax's and TensorStore's own reports (see the module docstring) dropped while the block
    runs: the absl logger muted, `sys.stderr` and the unraisable-exception hook swapped for
    sinks. The block runs on the main thread while training waits for it, so nothing of ours is
    written to stderr meanwhile. When the block fails, the coroutines it abandoned are collected
    before leaving, so their reports fall in here too rather than at the interpreter's exit (a
    full collection costs a noticeable fraction of a second: not after every save)."""
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    levels, stderr, unraisable = [lg.level for lg in loggers], sys.stderr, sys.unraisablehook
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    sys.stderr, sys.unraisablehook = io.StringIO(), lambda _: None
    try:
        yield
    except BaseException:
        gc.collect()
        raise
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        sys.stderr, sys.unraisablehook = stderr, unraisable


def write_failure(error: BaseException) -> str | None:
    """Why a failed save could not write ("No space left on device"), or None when the error is
    not a refused write. Orbax raises OSError for its own files; TensorStore raises ValueError
    naming the OS error code."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError):
            return reason_of(error)
        code = _OS_ERROR_CODE.search(str(error))
        if code:
            return os.strerror(int(code[1]))
        error = error.__cause__ or error.__context__
    return None


# How much of a restore error `unreadable_reason` keeps: the caller's line ("<run>: checkpoint
# N unreadable (...); using the previous one") then fits a 140-column log or terminal.
REASON_CHARS = 60


def unreadable_reason(error: Exception) -> str:
    """A few words for a checkpoint that cannot be restored: the error's type and the start of
    its message's first line (TensorStore's run to hundreds of characters of paths)."""
    first = (str(error).splitlines() or [""])[0].split(" See full TensorStore details")[0]
    reason = f"{type(error).__name__}: {first}"
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 3] + "..."


class Checkpointer:
    """Saves and restores a run's TrainState in `folder` (a run directory's checkpoints/)."""

    def __init__(self, folder: Path, keep: int):
        self.folder = Path(folder).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        with failing_as_write_failed(self.folder.parent), _library_quiet():
            self.manager = ocp.CheckpointManager(self.folder, options=options)

    def save(self, step: int, state: Any, host: dict[str, Any]) -> None:
        """Checkpoint `step` written and complete on return (a step saved already is kept);
        WriteFailed, with the partial folder removed, when it cannot be written."""
        if step in self.manager.all_steps():
            return
        try:
            with _library_quiet():
                self.manager.save(step, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host)), force=True)
                self.manager.wait_until_finished()
        except Exception as error:
            reason = write_failure(error)
            self._abandon(step)
            if reason is None:
                raise
            raise WriteFailed(self.folder.parent, reason) from None

    def _abandon(self, step: int) -> None:
        """After a failed save: the manager's threads stopped and step's partial folder removed,
        so the folder holds only complete checkpoints for the next resume."""
        with _library_quiet():
            with contextlib.suppress(Exception):
                self.manager.close()
            gc.collect()  # the failed save's abandoned coroutines report in here
        for partial in self.folder.glob(f"{step}{PARTIAL_SUFFIX}*"):
            shutil.rmtree(partial, ignore_errors=True)

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """The newest readable checkpoint, restored with the shardings of `abstract_state`."""
        skipped = []
        with _library_quiet():
            for step in sorted(self.manager.all_steps(), reverse=True):
                try:
                    restored = self.manager.restore(step, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()))
                except Exception as error:  # any unreadable checkpoint: report it and go back one
                    skipped.append((step, unreadable_reason(error)))
                    gc.collect()  # its abandoned coroutines report in here
                    continue
                return Restored(restored["state"], dict(restored["host"]), step, skipped)
        return Restored(None, {}, 0, skipped) if skipped else None

    def close(self) -> None:
        with _library_quiet():
            self.manager.wait_until_finished()
            self.manager.close()


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs with shardings, the target Orbax restores into."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
