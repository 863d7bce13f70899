"""One writer per output folder: an advisory lock that dies with its process.

`RunLock(folder, purpose)` holds an exclusive `flock(2)` on `folder/.pythia.lock` for as long as
the process keeps it. The kernel drops the lock when the holder's file descriptor closes, which
includes exit, a crash and `kill -9`, so a stale lock can never block a resume; the file itself is
left in place (deleting it would let two processes lock two different inodes under one name).
The holder writes who it is (host, pid, user, since when, what for) into the file, so a refused
process can name it. Readers never lock. On NFS, Linux maps flock onto POSIX byte-range locks,
which the server arbitrates between machines; Lustre needs the `flock` mount option.

    with RunLock(run_dir, "pythia train"):      # raises LockedError at once if held elsewhere
        ...                                     # write into run_dir

A folder that is itself replaced wholesale (pythia.io.atomic_dir) must be locked from its parent
(`RunLock(parent, purpose, name=".results.lock")`), since a lock file inside would be swapped away.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import getpass
import json
import os
import socket
import sys
from pathlib import Path

LOCK_NAME = ".pythia.lock"


class LockedError(RuntimeError):
    """Another process holds the lock; the message names it (host, pid, user, since, purpose)."""

    def __init__(self, message: str, lock_file: Path | None = None, holder: dict | None = None):
        super().__init__(message)
        self.lock_file = lock_file
        self.holder = holder or {}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


def read_holder(lock_file: str | os.PathLike) -> dict:
    """The holder record in a lock file ({} if absent, empty or torn); says nothing about liveness."""
    try:
        return json.loads(Path(lock_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder.get("pid"):
        return "a process that has not yet written its details (it is just starting)"
    return (f"{holder.get('purpose', 'a writer')} (pid {holder['pid']} on host {holder.get('host', '?')}, "
            f"user {holder.get('user', '?')}, since {holder.get('since', '?')})")


class RunLock:
    """Exclusive, non-blocking writer lock on `folder/name`; a context manager, or acquire()/release()."""

    def __init__(self, folder: str | os.PathLike, purpose: str, name: str = LOCK_NAME):
        self.folder = Path(folder)
        self.purpose = purpose
        self.lock_file = self.folder / name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock or raise LockedError at once (never waits)."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)  # mode follows the umask
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = read_holder(self.lock_file)
            raise LockedError(
                f"{self.folder} is already being written by {describe_holder(holder)}. One writer per run: "
                f"wait for it to finish or stop it; the lock ({self.lock_file}) goes away with that process, "
                "even after kill -9. Read-only commands (pythia verify, pythia report) work meanwhile.",
                self.lock_file, holder) from None
        self._fd = fd
        self._write_holder()
        return self

    def _write_holder(self) -> None:
        now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        record = {"purpose": self.purpose, "pid": os.getpid(), "host": socket.gethostname(), "user": _user(),
                  "since": now, "command": " ".join(sys.argv)[:300]}
        data = (json.dumps(record, sort_keys=True) + "\n").encode()
        with contextlib.suppress(OSError):  # best effort: a full disk must not stop the lock itself
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Clear the holder record and drop the lock (closing the descriptor drops it too)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
