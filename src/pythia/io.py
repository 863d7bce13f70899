"""Crash-safe file output and hashing shared by every writer in the project.

Nothing is ever written under its final name until it is complete: writers get a temporary
path beside the target and the rename happens only when the block exits without error.
Every file and folder they publish gets the mode the process umask gives (0644/0755 under
umask 022): mkstemp, mkdtemp and safetensors create theirs private (0600), which would keep
colleagues on a shared machine from reading the weights.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    """The process umask; read from /proc where possible, since setting it to probe is not thread-safe."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _umask_mode(path: Path, mask: int) -> None:
    """chmod `path` to what open()/mkdir() would have made under `mask` (owner-executable files stay executable)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return
    full = 0o777 if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR else 0o666
    if stat.S_IMODE(st.st_mode) != full & ~mask:
        path.chmod(full & ~mask)


def apply_umask(root: str | os.PathLike) -> None:
    """Give `root` and everything below it the modes the umask gives (undoing private 0600 files)."""
    root, mask = Path(root), _umask()
    _umask_mode(root, mask)
    if root.is_dir() and not root.is_symlink():
        for p in root.rglob("*"):
            _umask_mode(p, mask)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file below `root`."""
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def _make_parent(target: Path) -> list[Path]:
    """mkdir -p the folder of `target`; returns the folders this call created, outermost first."""
    created = []
    parent = target.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    return created[::-1]


def _remove_if_empty(created: list[Path]) -> None:
    """Undo _make_parent after a failed write: no empty output folder is left behind."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:  # not empty (another writer's file) or gone: leave it
            return


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary file path next to `target`; rename it onto `target` on success.
    On failure nothing is left: neither the temporary file nor a folder made for it.

    durable=False skips the fsyncs: still never half-written if the process dies, but a power
    loss may lose the file; for caches that are recomputed when missing or unreadable."""
    target = Path(target)
    created = _make_parent(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    done = False
    try:
        yield tmp
        apply_umask(tmp)  # mkstemp made it 0600, and the writer may have re-created it
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
        done = True
        if durable:
            _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
        if not done:
            _remove_if_empty(created)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to `target`; it replaces `target` only on success.
    On failure nothing is left: neither the temporary directory nor a folder made for it."""
    target = Path(target)
    created = _make_parent(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        apply_umask(tmp)  # mkdtemp makes 0700, safetensors 0600
        fsync_tree(tmp)  # contents durable before the rename publishes the folder
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        if not target.exists():
            _remove_if_empty(created)


def write_text_atomic(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_npz_atomic(path: str | os.PathLike, arrays: dict, compress: bool = False) -> Path:
    """numpy arrays as one .npz (np.load reads it), written atomically and reproducibly: members
    in the order given, each with a fixed timestamp (np.savez stamps the current time), so
    equal arrays give equal bytes."""
    import zipfile

    import numpy as np

    path = Path(path)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
    return path


def save_png(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A matplotlib figure as PNG at `path` (its folder made), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def human_bytes(n: float, binary: bool = False) -> str:
    """Three significant figures in decimal units (987 B, 1.23 KB, 12.3 GB) or, with `binary`,
    binary ones (512 B, 1.50 GiB, 2.27 TiB)."""
    base, units = (1024, ("B", "KiB", "MiB", "GiB", "TiB", "PiB")) if binary else (1000, ("B", "KB", "MB", "GB", "TB"))
    for unit in units:
        if abs(n) < base - 0.5 or unit == units[-1]:
            break
        n /= base
    if unit == "B" or abs(n) >= 99.95:
        return f"{n:.0f} {unit}"
    return f"{n:.{1 if abs(n) >= 9.995 else 2}f} {unit}"


def existing_parent(path: str | os.PathLike) -> Path:
    """`path` made absolute, or its nearest parent that exists (where a file would be written)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes for an unprivileged user on the filesystem of `path` (or its nearest existing
    parent); None when that cannot be read."""
    with contextlib.suppress(OSError):
        return shutil.disk_usage(existing_parent(path)).free
    return None
