"""One process per run directory: an advisory lock file that the kernel releases if we die.

`RunLock(run_dir)` takes `flock(LOCK_EX)` on `<run_dir>/run.lock` and writes who holds it
(host, pid, start time) into the file, so a second job on the same run, on this machine or on
another one sharing the results folder, is told who has it. A process killed with SIGKILL, or a
machine that goes away, holds nothing: the kernel (or the NFS lock manager) drops the lock, and
the stale text left in the file is ignored by the next holder and by `holder()`.

flock works across machines on NFS (Linux emulates it with POSIX byte-range locks there) and on
Lustre or GPFS mounted with locking enabled (Lustre: `-o flock`).

No JAX here: a multi-process run decides in `training.session.claim_runs` which process takes the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from resdepth.errors import InvalidChoice

LOCK_FILE = "run.lock"
# `holder()` probes the lock for an instant with a shared lock; a trainer asking at that very
# instant retries for this long before it calls the run taken.
ACQUIRE_RETRY_S = 0.5


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a run's lock, as written in its lock file (fields may be unknown: "?", 0)."""

    host: str
    pid: int
    since: str  # ISO 8601 time the lock was taken, or ""

    def describe(self) -> str:
        return f"{self.host} pid {self.pid}" + (f" since {self.since}" if self.since else "")


class RunLocked(InvalidChoice):
    """Another process holds the run directory's lock."""

    def __init__(self, run_dir: Path, holder: Holder | None):
        self.run_dir, self.holder = Path(run_dir), holder
        who = holder.describe() if holder else "another process"
        super().__init__(f"{run_dir} is being trained by {who}; wait for it, or stop that process")


def _read_holder(handle_or_path) -> Holder:
    try:
        if isinstance(handle_or_path, Path):
            text = handle_or_path.read_text()
        else:
            handle_or_path.seek(0)
            text = handle_or_path.read()
        data = json.loads(text)
        return Holder(str(data.get("host", "?")), int(data.get("pid", 0)), str(data.get("since", "")))
    except (OSError, ValueError, TypeError, AttributeError):
        return Holder("?", 0, "")  # taken a moment ago, not yet written; or not our format


class RunLock:
    """An exclusive lock on `run_dir` for one process (`with RunLock(run_dir): ...`).

    `acquire()` creates the folder if needed and raises RunLocked, naming the holder, when
    another process has it. `release()` removes the lock file, so a finished run's folder holds
    only the files of docs/run-directory.md.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + ACQUIRE_RETRY_S
        while True:
            try:
                handle = open(self.path, "a+")
            except FileNotFoundError:  # the folder was removed just now (a run failing at start)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    handle.close()
                    raise
                holder = _read_holder(handle)
                handle.close()
                if time.monotonic() >= deadline:
                    raise RunLocked(self.run_dir, holder) from None
                time.sleep(0.05)
                continue
            # The previous holder may have removed the file between our open and our flock:
            # then we locked a file nobody else will see; start again on the current one.
            try:
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({
                "host": socket.gethostname(), "pid": os.getpid(),
                "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}) + "\n")
            handle.flush()
            self._handle = handle
            return self

    def release(self) -> None:
        if self._handle is None:
            return
        # Unlink before unlocking: whoever opened the old file meanwhile sees it is gone.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._handle.close()  # closing the last descriptor drops the flock
        self._handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(run_dir: Path) -> Holder | None:
    """Who holds `run_dir`'s lock now, or None when nobody does. Reads, never creates, files.

    Holding a shared lock for an instant is the only way to tell a live holder from the stale
    text a killed one left; `RunLock.acquire` retries past such an instant.
    """
    path = Path(run_dir) / LOCK_FILE
    try:
        handle = open(path, "r")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return _read_holder(handle)
            return None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


@contextlib.contextmanager
def removed_if_left_empty(run_dir: Path, below: Path | None = None) -> Iterator[None]:
    """If the block raises, removes `run_dir` and then its parents while they are empty, among
    those the block created and those strictly below `below`: a run that failed before training
    (a missing dataset, say) leaves no empty folder. `below` itself is never removed.

    Use it outside `RunLock`, whose release removes the lock file first.
    """
    run_dir = Path(run_dir)
    chain = [run_dir, *run_dir.parents]
    if below is not None and Path(below) in chain:
        chain = chain[:chain.index(Path(below))]
        inside = set(chain)
    else:
        inside = set()
    new = {folder for folder in chain if not folder.exists()}
    try:
        yield
    except BaseException:
        for folder in chain:  # innermost first
            if folder not in new and folder not in inside:
                break
            try:
                folder.rmdir()  # only an empty folder goes
            except FileNotFoundError:
                continue  # removed already (by an inner block like this one)
            except OSError:
                break
        raise
