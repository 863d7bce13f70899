"""Per-order step sidecar of an n-gram index: a count query becomes a slice, a compare and a histogram.

A suffix array keeps the occurrences of an n-gram in one contiguous rank range (ngram.py). Arrays
parallel to it that already hold, per suffix, the step at which its first token is trained (one
column per epoch copy) and how long an n-gram may be to be counted there answer `count` with no
per-query sort of the occurrences, item lookup or mapping through the order (counts.py does that
for the queries this does not answer: --documents, not_followed_by, n > 255). Built once per
(index, order, batch size) on first use, beside the index, in PREFIX.sa/steps-{order stem}-b{B}/:

    manifest.json          format; the index's dataset fingerprint and shards; the order's kind,
                           parameters and doc_idx/shuffle_idx fingerprints; the batch size and step
                           count. A sidecar recorded for anything else is stale: refused when opened
                           directly (StaleStepIndexError), rebuilt by `open_step_index`
    shard-00000.steps.npy  (N, E) uint16 (uint32 from 65535 steps): per suffix-array rank and epoch
                           copy, the optimizer step whose sample holds the suffix's first token as
                           an input position; T = num_steps where that copy is never trained
    shard-00000.room.npy   (N, E+1) uint8: column 0 = tokens from the suffix to the end of its
                           document; column 1+e = min(column 0, tokens left in copy e's sample of
                           S+1); both capped at 255. An n-gram (n <= 255) lies in its document iff
                           n <= column 0, and is counted for copy e iff n <= column 1+e
    shard-00000.hist{1,2}.npy  (R, T) uint32: the per-step counts of every 1-gram (2-gram) whose
                           range holds more than HIST_MIN * T copies, so the commonest terms read
                           T numbers instead of a histogram of 1e5 copies; with
    shard-00000.keys{1,2}.npy  (R, 2) int64: each such range's first rank (sorted) and its
                           occurrences inside documents

Disk: E (2 + 1) + 1 bytes per token with uint16 steps (4 for one epoch), E (4 + 1) + 1 from 65535
steps, plus the tables: at most 2 * 4 / HIST_MIN bytes per token and epoch (at 100M tokens of
Zipf text, 0.06). The build holds a shard's two columns in file order (E (steps + 1) + 1 bytes per
token), a flag per token and 8 bytes per distinct 2-token prefix in memory; the suffix-array-order
columns are written through memory maps.

Size guard: at the Pile's scale (3e11 tokens, 143,000 steps: uint32) a sidecar takes terabytes, so
`open_step_index` first bounds its size (`estimate_bytes`) and builds it unasked only below
`size_limit` (PYTHIA_STEP_INDEX_MAX or DEFAULT_MAX, and always within the free disk space less a
margin); above, counts take the suffix-array path with one warning. `pythia data count-index --run`
builds it whatever its size when the disk holds it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io import atomic_dir, existing_parent, human_bytes
from .ngram import CHUNK, NgramIndex, NgramIndexError, search_one, shard_bounds, file_fingerprint

STEP_FORMAT = "pythia-step-index/1"  # tick when the layout or the definition of a count changes
ROOM_MAX = 255  # room is capped here (uint8): exact for n-grams of up to 255 tokens
HIST_MIN = 8  # 1-/2-gram ranges of more than HIST_MIN * T copies get their (T,) counts stored
MAX_ENV = "PYTHIA_STEP_INDEX_MAX"  # the size up to which a sidecar is built unasked ("64GiB", "inf", "0")
DEFAULT_MAX = 16 * 2**30
DISK_MARGIN = 2**30  # left free on the disk (a tenth of the free space on a smaller one)


class StaleStepIndexError(NgramIndexError):
    """A step sidecar built for another index, order or batch size."""


class StepIndexSizeError(NgramIndexError):
    """A step sidecar larger than the size limit or than the disk's free space allows (`disk`)."""

    def __init__(self, message: str, disk: bool = False):
        super().__init__(message)
        self.disk = disk


def _array_fingerprint(arr) -> dict:
    """The file's fingerprint for a memory-mapped order array (how orders are loaded), else a
    hash of its bytes (an order built in memory: small)."""
    name = getattr(arr, "filename", None)
    if name:
        return file_fingerprint(name)
    return {"sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(), "shape": list(arr.shape)}


def order_record(index: NgramIndex, order, batch_size: int) -> dict:
    """What a sidecar is built from: any difference when it is opened makes it stale."""
    from .order import TrainingOrder

    rec = {"format": STEP_FORMAT, "room_max": ROOM_MAX, "hist_min": HIST_MIN,
           "index": {"dataset": index.manifest.get("dataset"),
                     "shards": [[s["file"], s["token_lo"], s["token_hi"]] for s in index.manifest["shards"]]},
           "batch_size": int(batch_size), "num_steps": -(-order.num_positions // batch_size),
           "num_positions": int(order.num_positions), "seq_len": int(order.seq_len)}
    if isinstance(order, TrainingOrder):
        rec["order"] = {"kind": "gpt-neox", "stem": Path(order.stem).name if order.stem else None,
                        "seed": order.seed, "num_samples": order.num_samples, "num_epochs": order.num_epochs,
                        "doc_idx": _array_fingerprint(order.doc_idx),
                        "shuffle_idx": _array_fingerprint(order.shuffle_idx)}
    else:
        rec["order"] = {"kind": "preshuffled", "num_epochs": 1}
    return rec


def step_index_dir(index: NgramIndex, record: dict) -> Path:
    o = record["order"]
    name = o.get("stem") or ("preshuffled" if o["kind"] == "preshuffled" else
                             hashlib.sha256(json.dumps(o, sort_keys=True).encode()).hexdigest()[:16])
    return index.dir / f"steps-{name}-b{record['batch_size']}"


def step_dtype(num_steps: int) -> np.dtype:
    return np.dtype(np.uint16 if num_steps < np.iinfo(np.uint16).max else np.uint32)  # T itself: never trained


def estimate_bytes(index: NgramIndex, record: dict) -> int:
    """An upper bound of the sidecar's bytes on disk: the columns exactly, each 1-gram table row
    exactly (from the first-token ranges), and the 2-gram rows bounded by those ranges (a 2-gram
    range of more than HIST_MIN * T copies lies in such a 1-gram range, disjoint from the others)."""
    t, e = record["num_steps"], record["order"]["num_epochs"]
    per_token = e * step_dtype(t).itemsize + e + 1
    row = t * (4 if record["batch_size"] * record["seq_len"] < 2**32 else 8) + 16  # hist + keys
    big_min = max(HIST_MIN * t, 1)
    total = 4096  # manifest
    for s in index.shards:
        lens = np.diff(np.asarray(s["ranks"], np.int64)) * e
        big = lens[lens > HIST_MIN * t]
        total += (s["token_hi"] - s["token_lo"]) * per_token + 6 * 128  # + .npy headers
        total += (big.size + int(np.sum(big // big_min))) * row
    return int(total)


def parse_size(text) -> float:
    """Bytes from "16GiB", "500MB", "1e9", "inf" (no limit) or "0" (never build unasked)."""
    units = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "KB": 10**3, "MB": 10**6,
             "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    t = str(text).strip().upper().replace(" ", "")
    if t in ("INF", "NONE", "UNLIMITED"):
        return math.inf
    number = t.rstrip("KMGTIB")
    try:
        value = float(number) * units[t[len(number):]]
    except (ValueError, KeyError):
        value = -1.0
    if not 0 <= value < math.inf:
        raise ValueError(f"a size such as 16GiB, 500MB, 0 or inf, not {text!r}")
    return value


def human(n: float) -> str:
    """Binary units, three significant figures: 512 B, 1.50 GiB, 2.27 TiB."""
    return human_bytes(n, binary=True)


def size_limit(path, max_bytes: float | None = None) -> tuple[float, str, bool]:
    """(bytes a sidecar at `path` may take, why, whether the free disk space sets it): max_bytes,
    else $PYTHIA_STEP_INDEX_MAX, else DEFAULT_MAX; never more than the free space less DISK_MARGIN."""
    if max_bytes is not None:
        why = "the limit asked for"
    elif os.environ.get(MAX_ENV, "").strip():
        try:
            max_bytes, why = parse_size(os.environ[MAX_ENV]), f"{MAX_ENV}={os.environ[MAX_ENV].strip()}"
        except ValueError as exc:
            raise ValueError(f"{MAX_ENV}: {exc}") from None
    else:
        max_bytes, why = DEFAULT_MAX, f"the default limit; {MAX_ENV} sets another"
    where = existing_parent(path)
    free = shutil.disk_usage(where).free
    room = max(free - min(DISK_MARGIN, free // 10), 0)
    if room < max_bytes:
        return room, f"the free space on {where}, {human(free)}, less a margin", True
    return max_bytes, why, False


def check_size(index: NgramIndex, record: dict, path, max_bytes: float | None = None) -> int:
    """The sidecar's estimated bytes; StepIndexSizeError when above `size_limit`."""
    need = estimate_bytes(index, record)
    limit, why, disk = size_limit(path, max_bytes)
    if need > limit:
        raise StepIndexSizeError(f"the step sidecar {path} would take up to {human(need)}, over {human(limit)} "
                                 f"({why})", disk=disk)
    return need


def tally(steps: np.ndarray, room: np.ndarray, n: int, num_steps: int) -> tuple[np.ndarray, int]:
    """(T,) int64 copies counted per step and the occurrences inside documents, of the n-gram whose
    suffix-array range has these `steps` (m, E) and `room` (m, E+1) rows (see the module doc)."""
    if n == 1:  # a 1-gram always lies in its document and in its sample
        return np.bincount(steps.reshape(-1), minlength=num_steps + 1)[:num_steps], steps.shape[0]
    inside = int(np.count_nonzero(room[:, 0] >= n))
    return np.bincount(steps[room[:, 1:] >= n], minlength=num_steps + 1)[:num_steps], inside


class StepIndex:
    """An opened step sidecar (checked against its index, order and batch size)."""

    def __init__(self, index: NgramIndex, path, record: dict):
        self.index, self.dir = index, Path(path)
        manifest = self.dir / "manifest.json"
        try:
            found = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StaleStepIndexError(f"{manifest}: no readable step sidecar ({exc})") from None
        changed = sorted(k for k in set(found) | set(record) if found.get(k) != record.get(k))
        if changed:
            raise StaleStepIndexError(f"{manifest}: built for another {', '.join(changed)}; rebuild it "
                                      "(pythia.data.stepindex.build_step_index, or delete the folder)")
        self.num_steps, self.epochs = record["num_steps"], record["order"]["num_epochs"]
        self.shards = [self._open_shard(i, s["token_hi"] - s["token_lo"]) for i, s in enumerate(index.shards)]

    def _open_shard(self, i: int, n: int) -> dict:
        e, t = self.epochs, self.num_steps
        names = ("steps", "room", "hist1", "keys1", "hist2", "keys2")
        arrays = {k: self._load(f"shard-{i:05d}.{k}.npy") for k in names}
        want = {"steps": (n, e), "room": (n, e + 1)} | {f"{k}{w}": (arrays[f"keys{w}"].shape[0], c)
                                                         for w in (1, 2) for k, c in (("hist", t), ("keys", 2))}
        bad = [k for k in want if arrays[k].shape != want[k]]
        if bad:
            raise StaleStepIndexError(f"{self.dir}: shard {i}: {bad[0]} has shape {arrays[bad[0]].shape}, "
                                      f"want {want[bad[0]]}; rebuild it")
        return arrays

    def _load(self, name: str) -> np.ndarray:
        try:  # a plain ndarray view of the map (indexing np.memmap objects is slower)
            return np.load(self.dir / name, mmap_mode="r", allow_pickle=False).view(np.ndarray)
        except (OSError, ValueError) as exc:
            raise StaleStepIndexError(f"{self.dir / name}: unreadable ({exc}); rebuild it") from None

    def count(self, pattern) -> tuple[np.ndarray, int]:
        """(num_steps,) int64 occurrences counted at each step, and the occurrences inside documents,
        of one n-gram (1 <= n <= ROOM_MAX) under the module's definition (that of counts.py)."""
        pattern = np.asarray(pattern, dtype=np.int64).reshape(-1)
        n, e, t = pattern.size, self.epochs, self.num_steps
        if not 1 <= n <= ROOM_MAX:
            raise ValueError(f"the step sidecar counts 1- to {ROOM_MAX}-grams, not {n}-grams")
        hist, corpus = np.zeros(t, np.int64), 0
        for s, side in zip(self.index.shards, self.shards):
            lo, hi = search_one(s["tokens"], s["sa"], s["ranks"], pattern)
            if hi <= lo:
                continue
            if n <= 2 and e * (hi - lo) > HIST_MIN * t:  # a common 1- or 2-gram: its stored counts
                keys = side[f"keys{n}"]
                row = int(np.searchsorted(keys[:, 0], lo))
                if row < keys.shape[0] and keys[row, 0] == lo:
                    hist += side[f"hist{n}"][row]
                    corpus += int(keys[row, 1])
                    continue
            h, inside = tally(side["steps"][lo:hi], side["room"][lo:hi], n, t)
            hist += h
            corpus += inside
        return hist, corpus


def build_step_index(index: NgramIndex, smap, batch_size: int, record: dict, path,
                     progress: bool = False) -> StepIndex:
    """Write the sidecar of `index` for the order behind `smap` (counts.OrderMap or PreshuffledMap)
    into `path`; the folder appears only when complete."""
    t = record["num_steps"]
    dt = step_dtype(t)
    with atomic_dir(path) as tmp:
        for i, s in enumerate(tqdm(index.shards, desc="step sidecar", unit="shard", disable=not progress or None)):
            steps, room = _token_columns(index, smap, s, batch_size, t, dt)  # file order
            by_rank = _write_columns(tmp, i, s["sa"], steps, room)
            del steps, room
            _write_tables(tmp, i, s, *by_rank, t, hist_dtype=np.uint32 if batch_size * smap.seq_len < 2**32
                          else np.int64)
            del by_rank
        (tmp / "manifest.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return StepIndex(index, path, record)


def _token_columns(index, smap, shard, batch_size, num_steps, dt) -> tuple[np.ndarray, np.ndarray]:
    """For every token of the shard in file order: (N, E) step of each copy, (N, E+1) room."""
    lo, hi, ia, ib = shard["token_lo"], shard["token_hi"], shard["item_lo"], shard["item_hi"]
    sizes = index.dataset.sizes[ia:ib].astype(np.int64)
    e = smap.epochs
    steps, room = np.empty((hi - lo, e), dt), np.empty((hi - lo, e + 1), np.uint8)
    for a, b in shard_bounds(sizes, CHUNK // 4):  # item blocks of <= 2^20 tokens (bounds the temporaries)
        item = np.repeat(np.arange(ia + a, ia + b), sizes[a:b])  # (m,) item of each token
        if item.size == 0:
            continue
        o = np.arange(index.starts[item[0]], index.starts[item[0]] + item.size)  # (m,) .bin offsets
        rel, left = o - index.starts[item], index.ends[item] - o  # (m,) offset in the item, tokens to its end
        k, sroom = smap.first_seen(item, rel)  # (m, E) training position (-1: never), tokens left in the sample
        r = slice(o[0] - lo, o[-1] + 1 - lo)
        steps[r] = np.where(k >= 0, k // batch_size, num_steps)
        room[r, 0] = np.minimum(left, ROOM_MAX)
        room[r, 1:] = np.minimum(np.minimum(sroom, left[:, None]), ROOM_MAX)
    return steps, room


def _write_columns(tmp: Path, i: int, sa: np.ndarray, steps: np.ndarray, room: np.ndarray) -> tuple:
    """The file-order columns permuted into suffix-array order, as .npy memory maps."""
    out = []
    for name, src in (("steps", steps), ("room", room)):
        dst = _npy(tmp / f"shard-{i:05d}.{name}.npy", src.dtype, src.shape)
        src_rows, dst_rows = _rows(src), _rows(dst)
        for a in range(0, sa.shape[0], CHUNK):
            idx = sa[a:a + CHUNK]
            dst_rows[a:a + idx.size] = np.take(src_rows, idx)
        out.append(dst)
    return tuple(out)


def _rows(arr: np.ndarray) -> np.ndarray:
    """(N,) view of a C-contiguous (N, k) array with one opaque item per row: a gather of rows is
    then one fast 1-D take (fancy indexing of 2-D rows copies element by element, ~5x slower)."""
    return arr.view(np.dtype((np.void, arr.shape[1] * arr.itemsize))).reshape(-1)


def _write_tables(tmp: Path, i: int, shard: dict, steps: np.ndarray, room: np.ndarray, num_steps: int,
                  hist_dtype) -> None:
    """hist/keys{1,2}: the counts of every 1- and 2-gram range of more than HIST_MIN * T copies,
    computed by `tally` exactly as a query would."""
    n, e = steps.shape
    ranks = shard["ranks"]
    for width, starts in ((1, ranks[:-1]), (2, _pair_starts(shard["tokens"], shard["sa"], ranks))):
        lens = np.diff(np.append(starts, n)) if width == 2 else np.diff(ranks)
        big = np.flatnonzero(lens * e > HIST_MIN * num_steps)
        hist, keys = np.zeros((big.size, num_steps), hist_dtype), np.zeros((big.size, 2), np.int64)
        for row, r in enumerate(big):
            lo, hi = int(starts[r]), int(starts[r]) + int(lens[r])
            hist[row], keys[row, 1] = tally(steps[lo:hi], room[lo:hi], width, num_steps)
            keys[row, 0] = lo
        np.save(tmp / f"shard-{i:05d}.hist{width}.npy", hist, allow_pickle=False)
        np.save(tmp / f"shard-{i:05d}.keys{width}.npy", keys, allow_pickle=False)
    for arr in (steps, room):
        if isinstance(arr, np.memmap):
            arr.flush()


def _pair_starts(tokens: np.ndarray, sa: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """First ranks of the runs of suffixes sharing their first two tokens (the shard's last
    token has no second: -1, which sorts first), in rank order."""
    n = sa.shape[0]
    new = np.zeros(n, bool)
    new[ranks[(ranks > 0) & (ranks < n)]] = True  # a new first token
    new[:1] = True
    last, prev = tokens.shape[0] - 1, None
    for a in range(0, n, CHUNK):
        s = sa[a:a + CHUNK].astype(np.int64) + 1  # (c,) where each suffix's second token is
        second = np.where(s <= last, np.asarray(tokens[np.minimum(s, last)], np.int64), -1)
        new[a + 1:a + s.size] |= second[1:] != second[:-1]
        if prev is not None:
            new[a] |= second[0] != prev
        prev = second[-1]
    return np.flatnonzero(new)


def _npy(path: Path, dtype, shape) -> np.ndarray:
    """A .npy file to fill in place (a memory map; an in-memory array saved now if empty: no 0-byte maps)."""
    if int(np.prod(shape)) == 0:
        arr = np.empty(shape, dtype)
        np.save(path, arr, allow_pickle=False)
        return arr
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


_warned: set[str] = set()  # index folders whose too-large sidecars were warned about (once a process)


def open_step_index(index: NgramIndex, order, batch_size: int, smap=None, build: bool = True,
                    progress: bool = False, max_bytes: float | None = None,
                    strict: bool = False) -> StepIndex | None:
    """The sidecar for (index, order, batch size): opened when fresh, else (re)built when `build`
    (smap: a callable giving the order's step map, built only then) and its estimated size is
    within `size_limit(max_bytes)`. None when too large or unwritable (a read-only index folder):
    callers count the slower way, after one warning. `strict` raises StepIndexSizeError/OSError instead."""
    record = order_record(index, order, batch_size)
    path = step_index_dir(index, record)
    if (path / "manifest.json").is_file():
        try:
            return StepIndex(index, path, record)
        except StaleStepIndexError:
            if not build:
                raise
    elif not build:
        return None
    try:
        check_size(index, record, path, max_bytes)
        return build_step_index(index, smap(), batch_size, record, path, progress=progress)
    except StepIndexSizeError as exc:
        if strict:
            raise
        if str(index.dir) not in _warned:
            _warned.add(str(index.dir))
            how = ("free some space or keep the index on a larger disk (--index DIR)" if exc.disk else
                   f"build it anyway with `pythia data count-index --run RUN [--member M]`, or raise the limit "
                   f"(`pythia data count --step-index-max SIZE`, {MAX_ENV}=SIZE)")
            warnings.warn(f"{exc}: not built, counting without it (slower, same answers); {how}", stacklevel=2)
    except OSError as exc:
        if strict:
            raise
        warnings.warn(f"cannot write the step sidecar {path} ({exc.strerror or exc}); counting without it "
                      "(slower, same answers)", stacklevel=2)
    return None


def sidecar_bytes(path) -> int:
    """Bytes on disk of a built sidecar's files."""
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def prebuild_step_index(index: NgramIndex, order, batch_size: int, smap, rebuild: bool = False,
                        max_bytes: float = math.inf, progress: bool = False) -> dict:
    """Build the sidecar ahead of the first count, whatever its size unless `max_bytes` (the
    disk's free space always applies): {"path", "built", "bytes", "estimate", "seconds"}; a
    fresh one is kept unless `rebuild`. StepIndexSizeError when it does not fit."""
    import time

    record = order_record(index, order, batch_size)
    path = step_index_dir(index, record)
    if not rebuild and (path / "manifest.json").is_file():
        try:
            StepIndex(index, path, record)
            return {"path": path, "built": False, "bytes": sidecar_bytes(path), "estimate": None, "seconds": 0.0}
        except StaleStepIndexError:
            pass
    need = check_size(index, record, path, max_bytes)
    start = time.perf_counter()
    build_step_index(index, smap(), batch_size, record, path, progress=progress)
    return {"path": path, "built": True, "bytes": sidecar_bytes(path), "estimate": need,
            "seconds": time.perf_counter() - start}


__all__ = ["DEFAULT_MAX", "HIST_MIN", "MAX_ENV", "ROOM_MAX", "STEP_FORMAT", "StaleStepIndexError", "StepIndex",
           "StepIndexSizeError", "build_step_index", "check_size", "estimate_bytes", "open_step_index",
           "order_record", "parse_size", "prebuild_step_index", "sidecar_bytes", "size_limit", "step_index_dir",
           "tally"]
