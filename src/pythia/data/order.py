"""GPT-NeoX v1.0's exact training order (megatron/data/gpt2_dataset.py + helpers.cpp),
rebuilt with vectorized numpy and cached under GPT-NeoX's own file names, so its caches and
ours are interchangeable.

    stream       = all items concatenated in doc_idx order (every epoch's copies, shuffled jointly)
    sample j     = stream[S*j : S*j + S + 1]           (neighbours share one token)
    position k   = sample shuffle_idx[k]               (k < Ns - 1, GPT-NeoX's len quirk)
    step n       = positions [B*n, B*(n+1))

Unlike GPT-NeoX, a small JSON sidecar ({stem}_order.json) records what data the cache was built
from, so a cache built from another .bin is detected instead of silently reused.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io import atomic_path, write_json_atomic
from .indexed import DataFormatError, IndexedDataset, strip_prefix

ORDER_FORMAT = "pythia-order/1"  # tick if the algorithm or sidecar layout changes
CHUNK_SLOTS = 1 << 22  # doc_idx slots per sample_idx chunk: bounds temporaries to ~150 MB


class StaleCacheError(DataFormatError):
    """Cached index files do not belong to this dataset / these parameters."""


class PositionError(IndexError, ValueError):
    """A training position, step or document outside the order (a ValueError for the CLI too)."""


def num_samples_for(train_iters: int, global_batch: int) -> int:
    """Samples GPT-NeoX requests for train_0 (Pythia route): ceil(iters x batch x 1.005), in
    Python float math exactly as GPT-NeoX does (143000 x 1024 -> 147164160)."""
    return math.ceil(train_iters * global_batch * 1.005)


def num_epochs(tokens_per_epoch: int, seq_len: int, num_samples: int) -> int:
    """Smallest E >= 1 with (E*T - 1) // S >= num_samples (GPT-NeoX's _num_epochs loop)."""
    if tokens_per_epoch < 2:
        raise ValueError(f"dataset has {tokens_per_epoch} tokens; a sample needs at least 2")
    return max(1, -(-(num_samples * seq_len + 1) // tokens_per_epoch))


def index_stem(prefix, name: str, num_samples: int, seq_len: int, seed: int, out_dir=None) -> str:
    """GPT-NeoX's cache stem: {prefix}_{name}_indexmap_{N}ns_{S}sl_{seed}s."""
    prefix = strip_prefix(prefix)
    if out_dir is not None:
        prefix = str(Path(out_dir) / Path(prefix).name)
    return f"{prefix}_{name}_indexmap_{num_samples}ns_{seq_len}sl_{seed}s"


def build_doc_idx(documents: np.ndarray, epochs: int, rng: np.random.RandomState) -> np.ndarray:
    """RNG call #1: all epochs' document ids shuffled together (int32)."""
    doc_idx = np.tile(np.asarray(documents, dtype=np.int32), epochs)  # (E*n,)
    rng.shuffle(doc_idx)
    return doc_idx


def build_sample_idx(sizes: np.ndarray, doc_idx: np.ndarray, seq_len: int, epochs: int,
                     tokens_per_epoch: int, progress: bool = False) -> np.ndarray:
    """(Ns+1, 2) rows (doc_idx position, offset) of stream position j*S; Ns = (E*T-1)//S.

    Closed form of helpers.cpp's build_sample_idx, chunk by chunk of doc_idx: slot i covers
    stream positions [start_i, end_i) and holds the sample starts j*S in that range, i.e.
    ceil(end_i/S) - ceil(start_i/S) of them (zero for an empty item, which is thus never
    chosen), so np.repeat lays the rows out in order: no binary search, no Python loop.
    Row 0 is (0, 0) as in the C++ code, even if doc_idx[0] is empty.
    """
    num_samples = (epochs * tokens_per_epoch - 1) // seq_len
    dtype = np.int32 if len(doc_idx) < 2**31 - 1 else np.int64
    out = np.empty((num_samples + 1, 2), dtype=dtype)
    shift = seq_len.bit_length() - 1 if seq_len & (seq_len - 1) == 0 else None  # S = 2^k: >> k
    j_next = 0  # rows filled so far = ceil(stream position of this chunk's start / S)
    base = 0
    chunks = range(0, len(doc_idx), CHUNK_SLOTS)
    for a in tqdm(chunks, desc="sample_idx", unit="chunk", disable=not progress or None):
        lens = sizes[doc_idx[a:a + CHUNK_SLOTS]].astype(np.int64)  # (C,)
        ends = np.cumsum(lens)  # (C,) exclusive end of each slot in the stream
        ends += base
        q = ends + (seq_len - 1)  # (C,) -> ceil(end / S): sample starts before each slot's end
        q = q >> shift if shift is not None else q // seq_len
        counts = np.diff(q, prepend=j_next)  # (C,) sample starts inside each slot (0 if empty)
        rows = min(int(q[-1]) - j_next, num_samples + 1 - j_next)  # min(): defensive, equal
        if rows > 0:
            local = np.repeat(np.arange(lens.size, dtype=np.int64), counts)[:rows]  # (R,)
            pos = np.arange(j_next, j_next + rows, dtype=np.int64) * seq_len  # (R,) stream positions
            out[j_next:j_next + rows, 0] = local + a
            ends -= lens  # now the start of each slot
            out[j_next:j_next + rows, 1] = pos - ends[local]
            j_next += rows
        base += int(lens.sum())
    if j_next != num_samples + 1:
        raise AssertionError(f"sample_idx filled {j_next} of {num_samples + 1} rows")
    out[0] = 0
    return out


def build_shuffle_idx(size: int, rng: np.random.RandomState) -> np.ndarray:
    """RNG call #2: a shuffled arange(Ns), uint32 (int64 when Ns >= 2**32 - 2)."""
    dtype = np.uint32 if size < np.iinfo(np.uint32).max - 1 else np.int64
    shuffle_idx = np.arange(size, dtype=dtype)
    rng.shuffle(shuffle_idx)
    return shuffle_idx


def build_indices(sizes: np.ndarray, seq_len: int, seed: int, num_samples: int,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """doc_idx, sample_idx, shuffle_idx for train_0-style datasets (all items are documents)."""
    if seq_len < 1 or num_samples < 1:
        raise ValueError(f"seq_len ({seq_len}) and num_samples ({num_samples}) must be >= 1")
    sizes = np.asarray(sizes)
    if sizes.dtype != np.int32:
        raise ValueError(f"sizes must be int32 (as GPT-NeoX asserts), got {sizes.dtype}")
    tokens = int(sizes.sum(dtype=np.int64))
    epochs = num_epochs(tokens, seq_len, num_samples)
    rng = np.random.RandomState(seed)
    doc_idx = build_doc_idx(np.arange(len(sizes), dtype=np.int32), epochs, rng)
    sample_idx = build_sample_idx(sizes, doc_idx, seq_len, epochs, tokens, progress=progress)
    shuffle_idx = build_shuffle_idx(sample_idx.shape[0] - 1, rng)
    return doc_idx, sample_idx, shuffle_idx


def dataset_fingerprint(ds: IndexedDataset) -> dict:
    """What identifies the data an order was built from: the item sizes (all the order
    depends on) plus file sizes."""
    h = hashlib.sha256()
    sizes = np.ascontiguousarray(ds.sizes, dtype="<i4")
    for a in range(0, len(sizes), 1 << 24):
        h.update(sizes[a:a + (1 << 24)].tobytes())
    return {"items": len(ds), "tokens": ds.num_tokens, "sizes_sha256": h.hexdigest(),
            "bin_bytes": ds.bin_path.stat().st_size, "idx_bytes": ds.idx_path.stat().st_size}


def _save_npy(path: str, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


class TrainingOrder:
    """A built (or loaded) GPT-NeoX order over one dataset: tokens per position and step,
    and provenance in both directions."""

    def __init__(self, dataset: IndexedDataset, doc_idx, sample_idx, shuffle_idx, *, seq_len: int,
                 seed: int, num_samples: int, name: str = "train_0", stem: str | None = None):
        self.dataset, self.doc_idx, self.sample_idx, self.shuffle_idx = dataset, doc_idx, sample_idx, shuffle_idx
        self.seq_len, self.seed, self.num_samples, self.name, self.stem = seq_len, seed, num_samples, name, stem
        self.tokens_per_epoch = int(dataset.sizes.sum(dtype=np.int64))
        self.num_epochs = num_epochs(self.tokens_per_epoch, seq_len, num_samples)
        self._check_shapes()

    @classmethod
    def build(cls, prefix, seq_len: int, seed: int, num_samples: int, name: str = "train_0",
              out_dir=None, progress: bool = True, rebuild: bool = False) -> "TrainingOrder":
        """Load GPT-NeoX-named cached .npy files if present and built from this data, else
        build and save them. A cache made from other data raises StaleCacheError (or is
        rebuilt with rebuild=True); a cache without our sidecar (GPT-NeoX's) is used with a
        warning after shape checks."""
        ds = IndexedDataset(prefix)
        stem = index_stem(ds.prefix, name, num_samples, seq_len, seed, out_dir)
        paths = {k: f"{stem}_{k}_idx.npy" for k in ("doc", "sample", "shuffle")}
        sidecar = Path(f"{stem}_order.json")
        expected = {"format": ORDER_FORMAT, "name": name, "seq_len": seq_len, "seed": seed,
                    "num_samples": num_samples, "dataset": dataset_fingerprint(ds)}
        if all(os.path.exists(p) for p in paths.values()) and not rebuild:
            if sidecar.exists():
                found = json.loads(sidecar.read_text())
                stale = [k for k in expected if found.get(k) != expected[k]]
                if stale:
                    raise StaleCacheError(
                        f"{sidecar}: cached order was built from other data or parameters "
                        f"({', '.join(stale)} differ: cache has {[found.get(k) for k in stale]}, "
                        f"now {[expected[k] for k in stale]}); delete {stem}_*_idx.npy or "
                        f"rebuild (--rebuild / rebuild=True)")
            else:
                warnings.warn(f"{stem}_*_idx.npy have no {sidecar.name} sidecar (made by GPT-NeoX?): "
                              "cannot check they were built from this data; using them", stacklevel=2)
            arrays = [np.load(paths[k], mmap_mode="r", allow_pickle=False) for k in ("doc", "sample", "shuffle")]
            return cls(ds, *arrays, seq_len=seq_len, seed=seed, num_samples=num_samples, name=name, stem=stem)
        doc_idx, sample_idx, shuffle_idx = build_indices(ds.sizes, seq_len, seed, num_samples, progress)
        for key, arr in zip(("doc", "sample", "shuffle"), (doc_idx, sample_idx, shuffle_idx)):
            _save_npy(paths[key], arr)
        write_json_atomic(sidecar, expected | {"num_epochs": num_epochs(int(ds.sizes.sum(dtype=np.int64)),
                                                                       seq_len, num_samples),
                                               "built_samples": int(shuffle_idx.shape[0]),
                                               "files": {k: Path(p).name for k, p in paths.items()}})
        return cls(ds, doc_idx, sample_idx, shuffle_idx, seq_len=seq_len, seed=seed,
                   num_samples=num_samples, name=name, stem=stem)

    def _check_shapes(self) -> None:
        n_built = (self.num_epochs * self.tokens_per_epoch - 1) // self.seq_len
        want = {"doc_idx": (self.num_epochs * len(self.dataset),), "sample_idx": (n_built + 1, 2),
                "shuffle_idx": (n_built,)}
        for key, shape in want.items():
            got = getattr(self, key).shape
            if got != shape:
                raise StaleCacheError(f"{self.stem or 'order'}: {key} has shape {got}, but this dataset "
                                      f"and parameters need {shape}: the cache was built from other data")
        if self.sample_idx.dtype not in (np.int32, np.int64):
            raise DataFormatError(f"{self.stem}: sample_idx dtype {self.sample_idx.dtype} (want int32/int64)")

    @property
    def num_positions(self) -> int:
        """Usable training positions: GPT-NeoX's len() = Ns - 1 (one built sample is unused)."""
        return min(self.shuffle_idx.shape[0], self.sample_idx.shape[0] - 1) - 1

    def _check_positions(self, lo: int, hi: int) -> None:
        if lo < 0 or hi > self.num_positions:
            raise PositionError(f"positions [{lo}, {hi}) outside the order's {self.num_positions} positions")

    def samples(self, positions) -> np.ndarray:
        """Tokens of training positions (R,) -> (R, S+1) int64.

        The segments (doc pieces) of all rows are computed vectorized; each is then one
        contiguous memcpy from the memmap (~2-3 per row for Pile-like documents), which is
        faster than a fancy-index gather of R*(S+1) token positions."""
        ks = np.asarray(positions, dtype=np.int64).reshape(-1)  # (R,)
        if ks.size:  # batch() passes a range: checking its ends is enough there too
            self._check_positions(int(ks.min()), int(ks.max()) + 1)
        j = self.shuffle_idx[ks].astype(np.int64)  # (R,) pre-shuffle sample ids
        _, items, seg_lo, seg_hi = self._segments(j)
        src = self.dataset.token_offset(items) + seg_lo  # (G,) first token in .bin
        seg_len = seg_hi - seg_lo  # (G,)
        width = self.seq_len + 1
        if int(seg_len.sum()) != ks.size * width:
            raise DataFormatError(f"{self.stem}: index arrays do not match {self.dataset.prefix}")
        dst = np.cumsum(seg_len) - seg_len  # (G,) where each segment lands in the flat output
        out = np.empty(ks.size * width, dtype=np.int64)  # (R*(S+1),)
        tokens = self.dataset.tokens
        for s, d, n in zip(src.tolist(), dst.tolist(), seg_len.tolist()):
            out[d:d + n] = tokens[s:s + n]
        return out.reshape(ks.size, width)

    def _segments(self, j: np.ndarray):
        """Per sample j, the doc_idx slots it spans: (slots, their items, token ranges [lo, hi))."""
        first = self.sample_idx[j].astype(np.int64)  # (R, 2)
        last = self.sample_idx[j + 1].astype(np.int64)  # (R, 2)
        nseg = last[:, 0] - first[:, 0] + 1  # (R,)
        seg_row = np.repeat(np.arange(j.size), nseg)  # (G,)
        seg_slot = first[seg_row, 0] + np.arange(seg_row.size) - np.repeat(np.cumsum(nseg) - nseg, nseg)
        items = self.doc_idx[seg_slot]
        seg_lo = np.where(seg_slot == first[seg_row, 0], first[seg_row, 1], 0)
        seg_hi = np.where(seg_slot == last[seg_row, 0], last[seg_row, 1] + 1,
                          self.dataset.sizes[items].astype(np.int64))
        return seg_slot, items, seg_lo, seg_hi

    def sample(self, k: int) -> np.ndarray:
        """Tokens of training position k: (S+1,) int64."""
        return self.samples([k])[0]

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        """Tokens of optimizer step `step` (0-based): positions [B*step, B*(step+1)) -> (B, S+1)."""
        lo = step * batch_size
        return self.samples(np.arange(lo, lo + batch_size))

    def locate(self, k: int) -> list[dict]:
        """Which documents (and token ranges) make up training position k."""
        from .provenance import locate

        return locate(self, k)

    def find_document(self, doc_id: int, batch_size: int = 1024) -> list[dict]:
        """Every (position, step, row, token range) at which document doc_id is trained on."""
        from .provenance import find_document

        return find_document(self, doc_id, batch_size)


class PreshuffledOrder:
    """EleutherAI's "preshuffled" layout: item k (S+1 tokens) is training position k."""

    def __init__(self, prefix):
        self.dataset = ds = IndexedDataset(prefix)
        if len(ds) == 0:
            raise DataFormatError(f"{ds.idx_path}: preshuffled dataset has no items")
        width = int(ds.sizes[0])
        bad = np.flatnonzero(ds.sizes != width)
        if bad.size:
            raise DataFormatError(f"{ds.idx_path}: not preshuffled: item {bad[0]} has "
                                  f"{ds.sizes[bad[0]]} tokens, item 0 has {width}")
        self.width, self.seq_len = width, width - 1
        self.num_positions = len(ds)
        self.rows = ds.tokens.reshape(len(ds), width)  # (K, S+1) view of the memmap

    def sample(self, k: int) -> np.ndarray:
        if not 0 <= k < self.num_positions:
            raise PositionError(f"position {k} outside 0..{self.num_positions - 1}")
        return np.asarray(self.rows[k], dtype=np.int64)

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        lo = step * batch_size
        if lo < 0 or lo + batch_size > self.num_positions:
            raise PositionError(f"step {step} needs rows [{lo}, {lo + batch_size}), file has {self.num_positions}")
        return np.asarray(self.rows[lo:lo + batch_size], dtype=np.int64)
