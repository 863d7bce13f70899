"""Suffix-array index over a dataset's token stream: every occurrence of an n-gram as arrays.

Layout of the index folder (default PREFIX.sa/, format `pythia-ngram-index/1`):

    manifest.json      format, the dataset's fingerprint (file sizes and hashes), its tokenizer,
                       and one entry per shard: file, token range [token_lo, token_hi), item range
    shard-00000.npy    suffix array of tokens [token_lo, token_hi) of PREFIX.bin: token offsets
                       relative to token_lo (uint32; int64 for a shard of 2^32+ tokens), sorted
                       so that the suffixes starting there are in lexicographic order
    shard-00000.first.npy  int64 (max token + 2,): the suffixes starting with token t are ranks
                       [first[t], first[t+1]) of the suffix array (where every search starts)

The tokens are not copied (queries read PREFIX.bin through its memory map), so the index costs
4 bytes per token on disk (plus 8 bytes per vocabulary entry and shard). Shards are cut at item
(document) boundaries; each holds at most `shard_tokens` tokens, which bounds the build's
memory (~15 bytes per token of the shard), and is searched separately: a query's occurrences
are the union over shards.

Occurrences never span two items: the .bin lays documents out in file order, which is not the
order they are trained in, so an n-gram across a file-order boundary is an artefact. (Documents
end with <|endoftext|>, so this only matters for n-grams holding that token before their end.)

Why libdivsufsort (pydivsufsort): it sorts the big-endian bytes of the tokens (byte order =
token order), keeping the suffixes at whole-token offsets, at ~2.4M tokens/s on one core
(benchmarks/bench_ngram.py); the result is a plain numpy array, so the occurrences of an n-gram
are a bisection and a slice away, ready for the vectorised mapping to training steps
(counts.py). infini-gram (github.com/liujch1998/infini-gram) builds a comparable index with an
external-memory Rust indexer that scales to trillions of tokens, but it is not a dependency
here, keeps a second copy of the tokens in its own layout, and its engine answers counts and
per-rank lookups rather than arrays of positions.
"""
from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from ..io import atomic_dir, sha256_file
from .indexed import DataFormatError, IndexedDataset, strip_prefix

INDEX_FORMAT = "pythia-ngram-index/1"  # tick when the layout or the build changes
SHARD_TOKENS = 1 << 28  # tokens per shard: ~3.8 GB of build memory at 14 B/token
CHUNK = 1 << 22  # suffix-array entries handled at once (bounds temporaries)
_WHOLE_HASH = 64 << 20  # files up to this size are hashed whole; larger ones by samples
_SAMPLES, _BLOCK = 1024, 4096


class NgramIndexError(DataFormatError):
    """An n-gram index is missing, malformed or does not belong to its dataset."""


class StaleIndexError(NgramIndexError):
    """The dataset changed since its n-gram index was built."""


def default_index_dir(prefix) -> Path:
    return Path(strip_prefix(prefix) + ".sa")


def file_fingerprint(path) -> dict:
    """Size + sha256 (of the whole file up to 64 MiB, else of 1024 blocks of 4 KiB spread over
    it and its last block): cheap enough to check at every open, and it changes whenever a
    dataset is re-tokenized or edited in place (a changed .bin without a changed .idx, in an
    unsampled block, is the case it can miss)."""
    path = Path(path)
    size = path.stat().st_size
    if size <= _WHOLE_HASH:
        return {"bytes": size, "sha256": sha256_file(path)}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for k in range(_SAMPLES):
            f.seek((size - _BLOCK) * k // (_SAMPLES - 1))
            h.update(f.read(_BLOCK))
    return {"bytes": size, "sampled_sha256": h.hexdigest()}


def index_fingerprint(ds: IndexedDataset) -> dict:
    """What an n-gram index records of the dataset it was built from (sampled file hashes, sizes,
    the tokenizer manifest's .bin sha256), to refuse a stale index cheaply. Not the order's
    `pythia.data.order.dataset_fingerprint`, which hashes every document size."""
    from .tokenize import read_manifest

    fp = {"bin": file_fingerprint(ds.bin_path), "idx": file_fingerprint(ds.idx_path),
          "tokens": ds.num_tokens, "items": len(ds), "dtype": ds.dtype.name}
    made = read_manifest(ds.prefix) or {}
    if made.get("bin", {}).get("sha256"):
        fp["manifest_bin_sha256"] = made["bin"]["sha256"]
    return fp


def item_starts(ds: IndexedDataset) -> np.ndarray:
    """Token offset of every item, checked to be back to back in file order (as GPT-NeoX's
    preprocessing writes them): the index maps a stream offset to its item by binary search."""
    starts = np.asarray(ds.pointers, dtype=np.int64) // ds.dtype.itemsize  # (n,)
    expected = np.cumsum(ds.sizes, dtype=np.int64) - ds.sizes
    bad = np.flatnonzero(starts != expected)
    if bad.size:
        raise NgramIndexError(f"{ds.idx_path}: item {bad[0]} starts at token {starts[bad[0]]}, not right after "
                              f"item {bad[0] - 1} (token {expected[bad[0]]}): items are not back to back")
    return starts


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """Suffix array of a token array (token offsets in suffix order; uint32, or int64 past
    2^32 tokens): libdivsufsort on the big-endian bytes, keeping the whole-token offsets (the
    same trick pydivsufsort applies to wide dtypes, done chunk by chunk to bound memory)."""
    from pydivsufsort import divsufsort

    width = tokens.dtype.itemsize
    raw = np.ascontiguousarray(tokens, dtype=f">u{width}").view(np.uint8)  # (w*N,)
    byte_sa = divsufsort(raw)  # (w*N,) int32 or int64 byte offsets, sorted by suffix
    del raw
    out = np.empty(tokens.size, np.uint32 if tokens.size < 2**32 else np.int64)
    done = 0
    for a in range(0, byte_sa.size, CHUNK):
        part = byte_sa[a:a + CHUNK]
        part = part[part % width == 0] // width if width > 1 else part
        out[done:done + part.size] = part
        done += part.size
    if done != tokens.size:
        raise AssertionError(f"suffix array kept {done} of {tokens.size} token offsets")
    return out


def first_token_ranks(tokens: np.ndarray) -> np.ndarray:
    """(max token + 2,) int64: suffixes starting with token t hold ranks [r[t], r[t+1]) of the
    suffix array (they are sorted by their first token), so a query starts from that range."""
    counts = np.bincount(tokens, minlength=1) if tokens.size else np.zeros(1, np.int64)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _save(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def shard_bounds(sizes: np.ndarray, shard_tokens: int) -> list[tuple[int, int]]:
    """Item ranges [a, b) of at most shard_tokens tokens each (one item if it alone is larger)."""
    ends = np.cumsum(sizes, dtype=np.int64)  # (n,) token end of each item
    bounds, a = [], 0
    while a < len(sizes):
        base = int(ends[a - 1]) if a else 0
        b = max(int(np.searchsorted(ends, base + shard_tokens, side="right")), a + 1)
        bounds.append((a, b))
        a = b
    return bounds


def build_index(prefix, index_dir=None, shard_tokens: int = SHARD_TOKENS, progress: bool = True) -> "NgramIndex":
    """Build the suffix-array index of PREFIX.bin into index_dir (default PREFIX.sa/), shard by
    shard; the folder appears only when complete."""
    ds = IndexedDataset(prefix)
    index_dir = Path(index_dir) if index_dir is not None else default_index_dir(ds.prefix)
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
    starts = item_starts(ds)
    shards = []
    with atomic_dir(index_dir) as tmp:
        bounds = shard_bounds(ds.sizes, shard_tokens) if ds.num_tokens else []
        for i, (a, b) in enumerate(tqdm(bounds, desc=f"suffix array {Path(ds.prefix).name}", unit="shard",
                                        disable=not progress or None)):
            lo, hi = int(starts[a]), int(starts[b - 1]) + int(ds.sizes[b - 1])
            tokens = np.asarray(ds.tokens[lo:hi])
            name = f"shard-{i:05d}"
            _save(tmp / f"{name}.npy", suffix_array(tokens))
            _save(tmp / f"{name}.first.npy", first_token_ranks(tokens))
            shards.append({"file": f"{name}.npy", "first": f"{name}.first.npy", "token_lo": lo, "token_hi": hi,
                           "item_lo": a, "item_hi": b})
            del tokens
        manifest = {"format": INDEX_FORMAT, "dataset": index_fingerprint(ds), "prefix": Path(ds.prefix).name,
                    "tokenizer": _tokenizer_record(ds.prefix), "shard_tokens": shard_tokens, "shards": shards}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return NgramIndex(ds.prefix, index_dir)


def _tokenizer_record(prefix) -> dict | None:
    from .tokenize import read_manifest

    tok = (read_manifest(prefix) or {}).get("tokenizer")
    return {k: tok[k] for k in ("sha256", "vocab_size", "eod_id", "file") if k in tok} if tok else None


@dataclass(frozen=True)
class Occurrences:
    """One chunk of occurrences: which pattern, where in the .bin, in which item, at which offset."""

    pattern: np.ndarray  # (m,) index of the pattern each occurrence belongs to
    offset: np.ndarray  # (m,) token offset in PREFIX.bin
    item: np.ndarray  # (m,) item (document) id
    rel: np.ndarray  # (m,) offset inside the item


class NgramIndex:
    """An opened index (checked against its dataset): occurrences of token n-grams."""

    def __init__(self, prefix, index_dir=None, check: bool = True):
        self.dataset = ds = IndexedDataset(prefix)
        self.dir = Path(index_dir) if index_dir is not None else default_index_dir(ds.prefix)
        path = self.dir / "manifest.json"
        if not path.is_file():
            raise NgramIndexError(f"{path}: no n-gram index for {ds.prefix}; build it with "
                                  f"`pythia data count-index {ds.prefix}`")
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise NgramIndexError(f"{path}: unreadable manifest ({exc}); rebuild the index") from None
        if self.manifest.get("format") != INDEX_FORMAT:
            raise NgramIndexError(f"{path}: format {self.manifest.get('format')!r}, this version reads "
                                  f"{INDEX_FORMAT!r}; rebuild with `pythia data count-index {ds.prefix} --rebuild`")
        if check:
            self._check_fresh(path)
        self.tokens = ds.tokens
        self.shards = [dict(s, sa=self._load_shard(s), ranks=self._load(s["first"]),
                            tokens=ds.tokens[s["token_lo"]:s["token_hi"]]) for s in self.manifest["shards"]]
        self.starts = item_starts(ds)
        self.ends = self.starts + ds.sizes  # (n,) exclusive token end of each item

    def _check_fresh(self, path: Path) -> None:
        found, now = self.manifest.get("dataset", {}), index_fingerprint(self.dataset)
        changed = sorted(k for k in set(found) | set(now) if found.get(k) != now.get(k))
        if changed:
            raise StaleIndexError(
                f"{path}: the dataset {self.dataset.prefix} changed since this index was built ({', '.join(changed)} "
                f"differ); rebuild it: `pythia data count-index {self.dataset.prefix} --rebuild`")

    def _load(self, name: str) -> np.ndarray:
        path = self.dir / name
        try:  # a plain ndarray view of the map: indexing np.memmap objects is several times slower
            return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
        except (OSError, ValueError) as exc:
            raise NgramIndexError(f"{path}: unreadable index file ({exc}); rebuild the index") from None

    def _load_shard(self, shard: dict) -> np.ndarray:
        path = self.dir / shard["file"]
        sa = self._load(shard["file"])
        if sa.shape != (shard["token_hi"] - shard["token_lo"],):
            raise NgramIndexError(f"{path}: {sa.shape[0]} entries for tokens [{shard['token_lo']}, "
                                  f"{shard['token_hi']}); rebuild the index")
        return sa

    @property
    def tokenizer(self) -> dict | None:
        return self.manifest.get("tokenizer")

    def ranges(self, patterns: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per shard, the suffix-array range [lo, hi) of each pattern (P, n) -> ((P,), (P,)):
        one pattern by a scalar bisection (fastest alone), several by a vectorised one."""
        patterns = np.atleast_2d(np.asarray(patterns, dtype=np.int64))
        if patterns.shape[0] == 1:
            return [tuple(np.array([x]) for x in search_one(s["tokens"], s["sa"], s["ranks"], patterns[0]))
                    for s in self.shards]
        return [_search(s["tokens"], s["sa"], s["ranks"], patterns) for s in self.shards]

    def find(self, patterns, chunk: int = CHUNK) -> Iterator[Occurrences]:
        """Occurrences of each pattern (rows of a (P, n) array, or one 1-D pattern) that lie
        inside one item, in chunks of at most `chunk` (each in file order), shard by shard."""
        patterns = np.atleast_2d(np.asarray(patterns, dtype=np.int64))
        n = patterns.shape[1]
        for shard, (lo, hi) in zip(self.shards, self.ranges(patterns)):
            for pid, idx in _range_chunks(lo, hi, chunk):
                offset = shard["sa"][idx].astype(np.int64)  # (m,)
                offset += shard["token_lo"]
                if patterns.shape[0] == 1:  # in file order: searchsorted on sorted keys is ~10x faster
                    offset.sort()
                else:
                    by_offset = np.argsort(offset)
                    offset, pid = offset[by_offset], pid[by_offset]
                item = np.searchsorted(self.starts, offset, side="right")  # (m,)
                item -= 1
                keep = offset + n <= self.ends[item]
                if not keep.all():
                    pid, offset, item = pid[keep], offset[keep], item[keep]
                yield Occurrences(pid, offset, item, offset - self.starts[item])

    def count(self, pattern) -> int:
        """Occurrences of one pattern in the dataset (inside items), each counted once."""
        return sum(int(o.offset.size) for o in self.find(pattern))


def _first_range(ranks: np.ndarray, first) -> tuple:
    """Ranks [lo, hi) of the suffixes starting with token(s) `first` (empty past the table)."""
    t = np.minimum(first, ranks.shape[0] - 1)
    lo, hi = ranks[t], ranks[np.minimum(t + 1, ranks.shape[0] - 1)]
    return np.where(first < ranks.shape[0] - 1, lo, 0), np.where(first < ranks.shape[0] - 1, hi, 0)


def search_one(tokens: np.ndarray, sa: np.ndarray, ranks: np.ndarray, pattern: np.ndarray) -> tuple[int, int]:
    """Suffix-array range of one pattern: its first token's range, then a bisection on the next
    n-1 tokens as a list of ints (lists compare element-wise and a shorter suffix that is a prefix
    sorts first, as in the suffix array; ~3x faster per probe than comparing big-endian bytes)."""
    t = int(pattern[0])
    lo, hi = (int(ranks[t]), int(ranks[t + 1])) if t + 1 < ranks.shape[0] else (0, 0)
    if pattern.size == 1 or lo == hi:
        return lo, hi
    n, ranks_ = pattern.size, range(lo, hi)
    if n == 2:  # the second token as an int (-1 past the shard's end, which sorts first): ~5x faster
        rest, last = int(pattern[1]), tokens.shape[0] - 1

        def key2(rank: int) -> int:
            s = int(sa[rank])
            return int(tokens[s + 1]) if s < last else -1

        return lo + bisect.bisect_left(ranks_, rest, key=key2), lo + bisect.bisect_right(ranks_, rest, key=key2)
    rest = pattern[1:].tolist()  # lists compare like the suffix array: element-wise, a prefix first

    def key(rank: int) -> list:
        s = int(sa[rank])
        return tokens[s + 1:s + n].tolist()

    return lo + bisect.bisect_left(ranks_, rest, key=key), lo + bisect.bisect_right(ranks_, rest, key=key)


def _search(tokens: np.ndarray, sa: np.ndarray, ranks: np.ndarray,
            patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised binary search of P patterns at once, within their first token's range: lower
    and upper bounds in one loop of ~log2(range) rounds (row r < P: first suffix >= pattern;
    row P + r: first suffix > pattern)."""
    p = patterns.shape[0]
    pats = np.concatenate([patterns, patterns])  # (2P, n)
    strict = np.repeat([False, True], p)  # (2P,) upper-bound rows move right on equality too
    lo, hi = (np.tile(x.astype(np.int64), 2) for x in _first_range(ranks, patterns[:, 0]))
    active = np.flatnonzero(lo < hi)
    while active.size:
        mid = (lo[active] + hi[active]) // 2
        cmp = _compare(tokens, sa, mid, pats[active])
        right = (cmp < 0) | (strict[active] & (cmp == 0))
        lo[active] = np.where(right, mid + 1, lo[active])
        hi[active] = np.where(right, hi[active], mid)
        active = active[lo[active] < hi[active]]
    return lo[:p], lo[p:]


def _compare(tokens: np.ndarray, sa: np.ndarray, idx: np.ndarray, pats: np.ndarray) -> np.ndarray:
    """Sign of (suffix at sa[idx], first n tokens) - pattern, per row; a suffix cut short by the
    end of the shard that matches so far is smaller (the end sorts before every token)."""
    m, n = pats.shape
    pos = sa[idx].astype(np.int64)[:, None] + np.arange(n)  # (m, n)
    inside = pos < tokens.shape[0]
    window = tokens[np.minimum(pos, tokens.shape[0] - 1)].astype(np.int64)  # (m, n)
    window[~inside] = -1
    diff = window != pats  # (m, n)
    first = diff.argmax(axis=1)  # (m,) first differing column (0 if none)
    rows = np.arange(m)
    return np.where(diff[rows, first], np.sign(window[rows, first] - pats[rows, first]), 0)


def _range_chunks(lo: np.ndarray, hi: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray | slice]]:
    """The concatenated ranges [lo_i, hi_i) as (pattern ids, suffix-array indices), <= chunk at a time."""
    if lo.size == 1:  # one pattern: plain slices
        for a in range(int(lo[0]), int(hi[0]), chunk):
            b = min(int(hi[0]), a + chunk)
            yield np.zeros(b - a, np.int64), slice(a, b)
        return
    counts = np.maximum(hi - lo, 0)
    ends = np.cumsum(counts)
    total = int(ends[-1]) if ends.size else 0
    for a in range(0, total, chunk):
        k = np.arange(a, min(total, a + chunk), dtype=np.int64)  # (c,) rank in the concatenation
        pid = np.searchsorted(ends, k, side="right")  # (c,)
        yield pid, lo[pid] + k - (ends[pid] - counts[pid])


def open_index(prefix, index_dir=None, build: bool = False, progress: bool = True,
               shard_tokens: int = SHARD_TOKENS) -> NgramIndex:
    """Open PREFIX's index; build it first when absent and `build` (a stale one is refused)."""
    index_dir = Path(index_dir) if index_dir is not None else default_index_dir(prefix)
    if build and not (index_dir / "manifest.json").is_file():
        try:
            return build_index(prefix, index_dir, shard_tokens=shard_tokens, progress=progress)
        except PermissionError as exc:
            raise NgramIndexError(f"cannot write the n-gram index to {index_dir} ({exc.strerror}); "
                                  "choose a writable folder (--index DIR)") from None
    return NgramIndex(prefix, index_dir)


__all__ = ["NgramIndex", "NgramIndexError", "Occurrences", "StaleIndexError", "build_index", "default_index_dir",
           "open_index", "suffix_array"]
