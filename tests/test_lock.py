"""RunLock: one writer per folder, refused at once with the holder named, gone with its process."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pythia.lock import LOCK_NAME, LockedError, RunLock, read_holder

SRC = Path(__file__).resolve().parents[1] / "src"
_HOLDER = """
import sys
from pythia.lock import RunLock
lock = RunLock(sys.argv[1], "test holder").acquire()
print("locked", flush=True)
sys.stdin.read()  # hold until the parent closes stdin or kills us
"""


def _holder(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_writer_is_refused_with_holder_named_and_kill_9_frees_it(tmp_path):
    p = _holder(tmp_path)
    try:
        with pytest.raises(LockedError) as err:
            RunLock(tmp_path, "pythia train").acquire()
        msg = str(err.value)
        assert f"pid {p.pid}" in msg and socket.gethostname() in msg and "test holder" in msg
        assert "since 20" in msg and str(tmp_path) in msg
        assert err.value.holder["pid"] == p.pid and err.value.lock_file == tmp_path / LOCK_NAME
    finally:
        p.kill()  # SIGKILL: no cleanup code runs in the holder
        p.wait()
    assert p.returncode == -signal.SIGKILL
    assert read_holder(tmp_path / LOCK_NAME)["pid"] == p.pid  # its record is stale, yet...
    with RunLock(tmp_path, "pythia train") as lock:  # ...the lock is free
        assert lock.held and read_holder(lock.lock_file)["pid"] == os.getpid()
    assert read_holder(tmp_path / LOCK_NAME) == {}  # released: record cleared, file kept
    assert (tmp_path / LOCK_NAME).exists()


def test_holder_exit_releases_and_same_process_second_lock_is_refused(tmp_path):
    p = _holder(tmp_path)
    p.stdin.close()  # the holder exits normally
    p.wait(timeout=30)
    first = RunLock(tmp_path / "new", "writer one").acquire()  # creates the folder
    try:
        with pytest.raises(LockedError, match=f"writer one \\(pid {os.getpid()}"):
            RunLock(tmp_path / "new", "writer two").acquire()
    finally:
        first.release()
    RunLock(tmp_path / "new", "writer two").acquire().release()
    with RunLock(tmp_path, "x"):
        pass


def test_other_lock_names_do_not_conflict(tmp_path):
    with RunLock(tmp_path, "pythia train"), RunLock(tmp_path, "pythia analyze", name=".results.lock"):
        assert json.loads((tmp_path / ".results.lock").read_text())["purpose"] == "pythia analyze"

