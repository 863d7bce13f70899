"""Split a large .bin into Hub-style shards {name}-{i:05d}-of-{n-1:05d}.bin with a sha256
manifest, verify them (naming the bad shard), and rejoin them streaming with bounded memory."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from ..io import atomic_path, sha256_file, write_json_atomic

BLOCK = 1 << 22
SHARDS_FORMAT = "pythia-shards/1"


class ShardError(ValueError):
    """A shard is missing, has the wrong size or the wrong hash."""


def shard_name(name: str, i: int, n: int) -> str:
    """Pythia Hub naming: 20 shards -> document-00000-of-00019.bin ... document-00019-of-00019.bin."""
    return f"{name}-{i:05d}-of-{n - 1:05d}.bin"


def _copy(src, dst, nbytes: int, h, bar) -> None:
    while nbytes > 0:
        block = src.read(min(BLOCK, nbytes))
        if not block:
            raise ShardError(f"{src.name}: ended {nbytes} bytes early")
        dst.write(block)
        h.update(block)
        nbytes -= len(block)
        bar.update(len(block))


def shard(bin_path, out_dir, num_shards: int, align: int = 2, progress: bool = True) -> dict:
    """Split bin_path into num_shards nearly equal pieces (cut at multiples of `align` bytes;
    2 = one uint16 token). Copies PREFIX.idx beside them if present. Writes {name}.shards.json."""
    bin_path, out_dir = Path(bin_path), Path(out_dir)
    if bin_path.suffix != ".bin":
        bin_path = bin_path.with_name(bin_path.name + ".bin")
    if not bin_path.is_file():
        raise FileNotFoundError(f"{bin_path}: no such file")
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    name, total = bin_path.stem, bin_path.stat().st_size
    units = total // align
    cuts = [min(total, (units * i // num_shards) * align) for i in range(num_shards)] + [total]
    whole, entries = hashlib.sha256(), []
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(bin_path, "rb") as src, tqdm(total=total, unit="B", unit_scale=True, desc="shard",
                                           disable=not progress or None) as bar:
        for i in range(num_shards):
            path, h = out_dir / shard_name(name, i, num_shards), hashlib.sha256()
            with atomic_path(path) as tmp, open(tmp, "wb") as dst:
                _copy(src, dst, cuts[i + 1] - cuts[i], _Tee(h, whole), bar)
            entries.append({"file": path.name, "bytes": cuts[i + 1] - cuts[i], "sha256": h.hexdigest()})
    manifest = {"format": SHARDS_FORMAT, "name": name, "bytes": total, "sha256": whole.hexdigest(),
                "shards": entries}
    idx = bin_path.with_suffix(".idx")
    if idx.is_file():
        with atomic_path(out_dir / idx.name) as tmp:
            shutil.copyfile(idx, tmp)
        manifest["idx"] = {"file": idx.name, "sha256": sha256_file(idx)}
    write_json_atomic(out_dir / f"{name}.shards.json", manifest)
    return manifest


class _Tee:
    def __init__(self, *hashes):
        self.hashes = hashes

    def update(self, block: bytes) -> None:
        for h in self.hashes:
            h.update(block)


def _manifest(path) -> tuple[Path, dict]:
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.shards.json"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected one *.shards.json manifest, found {len(found)}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shard manifest not found")
    return path.parent, json.loads(path.read_text())


def verify(manifest_or_dir) -> dict:
    """Check every shard's size and sha256 (and the .idx copy); raise ShardError naming the first bad one."""
    folder, manifest = _manifest(manifest_or_dir)
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        if not path.is_file():
            raise ShardError(f"{path}: shard missing")
        if path.stat().st_size != entry["bytes"]:
            raise ShardError(f"{path}: {path.stat().st_size} bytes, manifest says {entry['bytes']}")
        if sha256_file(path) != entry["sha256"]:
            raise ShardError(f"{path}: sha256 mismatch (corrupted shard)")
    if "idx" in manifest and sha256_file(folder / manifest["idx"]["file"]) != manifest["idx"]["sha256"]:
        raise ShardError(f"{folder / manifest['idx']['file']}: sha256 mismatch")
    return manifest


def unshard(manifest_or_dir, out_prefix, progress: bool = True) -> Path:
    """Concatenate the shards into out_prefix.bin (and copy the .idx), checking each shard's
    hash and the whole file's hash on the fly; nothing stays under the final name on failure."""
    folder, manifest = _manifest(manifest_or_dir)
    out_bin = Path(str(out_prefix).removesuffix(".bin") + ".bin")
    whole = hashlib.sha256()
    with atomic_path(out_bin) as tmp, open(tmp, "wb") as dst, tqdm(
            total=manifest["bytes"], unit="B", unit_scale=True, desc="unshard",
            disable=not progress or None) as bar:
        for entry in manifest["shards"]:
            path, h = folder / entry["file"], hashlib.sha256()
            if not path.is_file():
                raise ShardError(f"{path}: shard missing")
            with open(path, "rb") as src:
                _copy(src, dst, entry["bytes"], _Tee(h, whole), bar)
                if src.read(1):
                    raise ShardError(f"{path}: longer than the manifest's {entry['bytes']} bytes")
            if h.hexdigest() != entry["sha256"]:
                raise ShardError(f"{path}: sha256 mismatch (corrupted shard)")
        if whole.hexdigest() != manifest["sha256"]:
            raise ShardError(f"{out_bin}: rejoined file's sha256 differs from the manifest")
    if "idx" in manifest:
        with atomic_path(out_bin.with_suffix(".idx")) as tmp:
            src = folder / manifest["idx"]["file"]
            shutil.copyfile(src, tmp)
            if manifest["idx"].get("sha256") and sha256_file(tmp) != manifest["idx"]["sha256"]:
                raise ShardError(f"{src}: sha256 mismatch (corrupted index)")
    return out_bin
