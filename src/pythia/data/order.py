"""GPT-NeoX v1.0's exact training order (megatron/data/gpt2_dataset.py + helpers.cpp),
rebuilt with vectorized numpy and cached under GPT-NeoX's own file names, so its caches and
ours are interchangeable.

    stream       = all items concatenated in doc_idx order (every epoch's copies, shuffled jointly)
    sample j     = stream[S*j : S*j + S + 1]           (neighbours share one token)
    position k   = sample shuffle_idx[k]               (k < Ns - 1, GPT-NeoX's len quirk)
    step n       = positions [B*n, B*(n+1))

Unlike GPT-NeoX, a small JSON sidecar ({stem}_order.json) records what data the cache was built
from, so a cache built from another .bin is detected instead of silently reused.

How the cache build gets the same bytes faster than GPT-NeoX (benchmarks/bench_index.py): the
sizes are read once, sequentially; doc_idx is shuffled as (document id, size) pairs, which
permutes exactly as the int32 shuffle does but leaves each slot's size in doc_idx order, so
sample_idx needs no random gather; sample_idx is computed in cache-sized blocks (a closed form,
no per-sample loop) and streamed to its file; and shuffle_idx, which only needs the generator
once doc_idx is shuffled, is built in a second thread meanwhile.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io import atomic_path, write_json_atomic
from .indexed import DataFormatError, IndexedDataset, strip_prefix

ORDER_FORMAT = "pythia-order/1"  # tick if the algorithm or sidecar layout changes
CHUNK_SLOTS = 1 << 16  # doc_idx slots per sample_idx block: buffers stay cache-sized and are reused
INT32_SLOTS = 2**31 - 1  # sample_idx is int32 below this many doc_idx slots (int64 from there)


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


def document_slots(size_blocks, num_documents: int, epochs: int) -> tuple[np.ndarray, int]:
    """doc_idx before the shuffle, with each slot's size riding along: (E*n,) uint64 whose
    `.view(np.int32).reshape(-1, 2)` columns are (document id, its size); and the token count T.

    `size_blocks` yields the sizes array in order (IndexedDataset.iter_sizes). Shuffling these
    8-byte slots with RandomState.shuffle applies the same swaps as GPT-NeoX's shuffle of its
    int32 doc_idx (numpy's Fisher-Yates draws depend only on the length and the generator, not
    the item size), so the permutation and the generator state after it are GPT-NeoX's, and
    sample_idx then reads each slot's size in order instead of gathering sizes[doc_idx] at
    random over the whole sizes array (3+ s at Pile scale)."""
    slots = np.empty(epochs * num_documents, np.uint64)
    cols = slot_columns(slots)
    a, tokens = 0, 0
    for block in size_blocks:
        c = block.shape[0]
        cols[a:a + c, 1] = block
        np.add(np.arange(c, dtype=np.int32), a, out=cols[a:a + c, 0])
        tokens += int(block.sum(dtype=np.int64))
        a += c
    if a != num_documents:
        raise ValueError(f"got {a} sizes for {num_documents} documents")
    if epochs > 1:
        slots.reshape(epochs, num_documents)[1:] = slots[:num_documents]
    return slots, tokens


def slot_columns(slots: np.ndarray) -> np.ndarray:
    """(E*n, 2) int32 view of document_slots' array: column 0 = doc_idx, column 1 = sizes[doc_idx]."""
    return slots.view(np.int32).reshape(-1, 2)


def sample_idx_blocks(cols: np.ndarray, seq_len: int, dtype, progress: bool = False):
    """Yield (a, b, rows): the sample_idx rows (R, 2) whose sample starts lie in doc_idx slots
    [a, b), block after block, in order; every slot range is yielded, possibly with no rows.

    Closed form of helpers.cpp's build_sample_idx: sample j starts at stream position j*S; slot
    i covers stream positions [start_i, end_i) and holds the q_i - q_{i-1} starts in it, with
    q_i = ceil(end_i / S) (none in an empty slot, which is thus never chosen); row j is
    (i, j*S - start_i). np.repeat lays out one value per slot, then one add of m*S per row.
    With int32 rows (little-endian) the pair (i, offset) is a single uint64 i | offset << 32,
    and the offset is exact modulo 2^32 (it is < 2^31), so the large stream positions never
    need 64-bit per-row work. Row 0 is (0, 0) as in the C++ code, even if doc_idx[0] is empty.
    """
    S, total = seq_len, cols.shape[0]
    step = min(CHUNK_SLOTS, max(total, 1))
    shift = S.bit_length() - 1 if S & (S - 1) == 0 else None  # S = 2^k: >> k
    packed_rows = np.dtype(dtype) == np.int32 and sys.byteorder == "little"
    ends, q, counts = (np.empty(step, np.int64) for _ in range(3))  # reused for every block
    ids, iota = np.empty(step, np.uint64), np.arange(step, dtype=np.uint32)
    ramp = np.zeros(0, np.uint64)  # (m * S) << 32 for row m of a block
    j_next = base = 0  # rows so far; stream position of slot a
    for a in tqdm(range(0, total, step), desc="sample_idx", unit="block", disable=not progress or None):
        c = min(step, total - a)
        lens, e, qq, cnt = cols[a:a + c, 1], ends[:c], q[:c], counts[:c]
        np.cumsum(lens, dtype=np.int64, out=e)  # end of each slot, relative to base
        np.add(e, base + S - 1, out=qq)
        if shift is not None:
            qq >>= shift
        else:
            qq //= S
        cnt[0] = qq[0] - j_next
        np.subtract(qq[1:], qq[:-1], out=cnt[1:])  # sample starts in each slot
        rows = int(qq[-1]) - j_next
        np.subtract(lens, e, out=qq)  # -(start of each slot - base)
        qq += j_next * S - base  # offset of the block's row m in slot i: qq[i] + m * S
        if packed_rows:
            p = ids[:c]
            p32 = p.view(np.uint32).reshape(c, 2)
            np.add(iota[:c], a, out=p32[:, 0])
            np.copyto(p32[:, 1], qq, casting="unsafe")  # modulo 2^32
            out = np.repeat(p, cnt)  # (R,) uint64
            if ramp.shape[0] < rows:
                ramp = (np.arange(2 * rows, dtype=np.uint64) * np.uint64(S)) << np.uint64(32)
            out += ramp[:rows]
            out = out.view(np.int32).reshape(rows, 2)
        else:
            out = np.empty((rows, 2), dtype)
            out[:, 0] = np.repeat(np.arange(a, a + c, dtype=np.int64), cnt)
            out[:, 1] = np.repeat(qq, cnt) + np.arange(rows, dtype=np.int64) * S
        if j_next == 0 and rows:
            out[0] = 0
        j_next += rows
        base += int(e[-1])
        yield a, a + c, out


def sample_idx_rows(epochs: int, tokens_per_epoch: int, seq_len: int) -> int:
    """Rows of sample_idx: Ns + 1, with Ns = (E*T - 1) // S samples built."""
    return (epochs * tokens_per_epoch - 1) // seq_len + 1


def sample_idx_dtype(num_slots: int) -> np.dtype:
    return np.dtype(np.int32 if num_slots < INT32_SLOTS else np.int64)


def build_shuffle_idx(size: int, rng: np.random.RandomState) -> np.ndarray:
    """RNG call #2: a shuffled arange(Ns), uint32 (int64 when Ns >= 2**32 - 2)."""
    dtype = np.uint32 if size < np.iinfo(np.uint32).max - 1 else np.int64
    shuffle_idx = np.arange(size, dtype=dtype)
    rng.shuffle(shuffle_idx)
    return shuffle_idx


def _slots_for(size_blocks, num_documents: int, tokens_hint: int, seq_len: int, num_samples: int):
    """document_slots for E epochs, E from `tokens_hint` (the .bin's length) and corrected if
    the sizes add up to another count (GPT-NeoX counts the sizes). -> (slots, T, E)."""
    epochs = num_epochs(tokens_hint, seq_len, num_samples)
    slots, tokens = document_slots(size_blocks, num_documents, epochs)
    if tokens != tokens_hint and num_epochs(tokens, seq_len, num_samples) != epochs:
        epochs = num_epochs(tokens, seq_len, num_samples)
        slots = np.resize(slots[:num_documents], epochs * num_documents)  # repeats: epoch copies
    return slots, tokens, epochs


def build_indices(sizes: np.ndarray, seq_len: int, seed: int, num_samples: int,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """doc_idx, sample_idx, shuffle_idx in memory for train_0-style datasets (all items are
    documents). TrainingOrder.build streams the same blocks to GPT-NeoX's files instead."""
    if seq_len < 1 or num_samples < 1:
        raise ValueError(f"seq_len ({seq_len}) and num_samples ({num_samples}) must be >= 1")
    sizes = np.asarray(sizes)
    if sizes.dtype != np.int32:
        raise ValueError(f"sizes must be int32 (as GPT-NeoX asserts), got {sizes.dtype}")
    blocks = (sizes[a:a + (1 << 20)] for a in range(0, len(sizes), 1 << 20))
    slots, tokens, epochs = _slots_for(blocks, len(sizes), int(sizes.sum(dtype=np.int64)), seq_len, num_samples)
    rng = np.random.RandomState(seed)
    rng.shuffle(slots)  # RNG call #1: GPT-NeoX's doc_idx shuffle
    cols = slot_columns(slots)
    rows = sample_idx_rows(epochs, tokens, seq_len)
    sample_idx = np.empty((rows, 2), sample_idx_dtype(len(cols)))
    j = 0
    for _, _, block in sample_idx_blocks(cols, seq_len, sample_idx.dtype, progress):
        sample_idx[j:j + len(block)] = block
        j += len(block)
    if j != rows:
        raise AssertionError(f"sample_idx filled {j} of {rows} rows")
    return cols[:, 0].copy(), sample_idx, build_shuffle_idx(rows - 1, rng)


def _scan_sizes(blocks) -> tuple[str, int]:
    """sha256 of the little-endian int32 sizes, and their sum."""
    h, total = hashlib.sha256(), 0
    for b in blocks:
        h.update(b)
        total += int(b.sum(dtype=np.int64))
    return h.hexdigest(), total


def dataset_fingerprint(ds: IndexedDataset, sizes_sha256: str | None = None) -> dict:
    """What identifies the data an order was built from: the item sizes (all the order
    depends on) plus file sizes."""
    if sizes_sha256 is None:
        sizes_sha256 = _scan_sizes(ds.iter_sizes())[0]
    return {"items": len(ds), "tokens": ds.num_tokens, "sizes_sha256": sizes_sha256,
            "bin_bytes": ds.bin_path.stat().st_size, "idx_bytes": ds.idx_path.stat().st_size}


def _save_npy(path: str, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


@contextlib.contextmanager
def _npy_writer(path: str, shape: tuple, dtype):
    """Write a .npy of known shape in row blocks, in order: the same bytes as np.save of the
    whole array (format 1.0 header), without holding it; atomic like every output."""
    dtype = np.dtype(dtype)
    written = [0]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})

        def write(block: np.ndarray) -> None:
            block = np.ascontiguousarray(block, dtype=dtype)
            f.write(block.data)
            written[0] += block.shape[0]

        yield write
        if written[0] != shape[0]:
            raise AssertionError(f"{path}: wrote {written[0]} of {shape[0]} rows")


class BuildLog:
    """Wall time, CPU time (of the thread that ran it) and process peak memory at the end of
    each build phase: what `pythia data index` prints and benchmarks/bench_index.py reports.
    Phases may run in two threads at once."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.phases: list[dict] = []

    @contextlib.contextmanager
    def phase(self, name: str):
        t, cpu = time.perf_counter(), time.thread_time()
        yield
        self.phases.append({"phase": name, "start_s": t - self.t0, "seconds": time.perf_counter() - t,
                            "cpu_s": time.thread_time() - cpu, "peak_rss_bytes": peak_rss_bytes()})

    def summary(self) -> str:
        parts = ", ".join(f"{p['phase']} {p['seconds']:.1f} s" for p in sorted(self.phases, key=lambda p: p["start_s"]))
        wall = max(p["start_s"] + p["seconds"] for p in self.phases)
        peak = max(p["peak_rss_bytes"] or 0 for p in self.phases) / 1e9
        return f"built in {wall:.1f} s ({parts}); peak memory {peak:.2f} GB"


def peak_rss_bytes() -> int | None:
    """This process's resident-memory high-water mark (ru_maxrss), None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _write_shuffle_idx(path: str, size: int, rng: np.random.RandomState, log: BuildLog) -> None:
    with log.phase("shuffle_idx + write (alongside)"):
        _save_npy(path, build_shuffle_idx(size, rng))


def _build_files(ds: IndexedDataset, paths: dict, seq_len: int, seed: int, num_samples: int,
                 progress: bool, log: BuildLog) -> tuple[str, int, int]:
    """Build the three arrays straight into GPT-NeoX's .npy files; -> (sizes sha256, T, E).

    One sequential read of the sizes, the doc_idx shuffle on (id, size) slots, then doc_idx
    and sample_idx stream to disk block by block (sample_idx is never held in memory). A second
    thread meanwhile hashes the sizes for the sidecar, then builds shuffle_idx (RNG call #2,
    which needs only the generator after the doc_idx shuffle, and Ns); numpy's shuffles and
    hashlib release the GIL, so on two cores the two lines of work overlap."""

    def sizes_sha256() -> str:
        with log.phase("sizes sha256 (alongside)"):
            return _scan_sizes(ds.iter_sizes())[0]

    with ThreadPoolExecutor(1) as helper:  # runs its jobs one after the other
        digest = helper.submit(sizes_sha256)
        with log.phase("read sizes"):
            slots, tokens, epochs = _slots_for(ds.iter_sizes(), len(ds), ds.num_tokens, seq_len, num_samples)
        with log.phase("doc_idx shuffle"):
            rng = np.random.RandomState(seed)
            rng.shuffle(slots)  # RNG call #1
        cols = slot_columns(slots)
        rows = sample_idx_rows(epochs, tokens, seq_len)
        dtype = sample_idx_dtype(len(cols))
        shuffled = helper.submit(_write_shuffle_idx, paths["shuffle"], rows - 1, rng, log)
        with log.phase("doc_idx + sample_idx + write"), \
                _npy_writer(paths["doc"], (len(cols),), np.int32) as put_doc, \
                _npy_writer(paths["sample"], (rows, 2), dtype) as put_rows:
            for a, b, block in sample_idx_blocks(cols, seq_len, dtype, progress):
                put_doc(cols[a:b, 0])
                put_rows(block)
        shuffled.result()
    return digest.result(), tokens, epochs


class TrainingOrder:
    """A built (or loaded) GPT-NeoX order over one dataset: tokens per position and step,
    and, through pythia.data.provenance, provenance in both directions."""

    def __init__(self, dataset: IndexedDataset, doc_idx, sample_idx, shuffle_idx, *, seq_len: int,
                 seed: int, num_samples: int, name: str = "train_0", stem: str | None = None,
                 tokens_per_epoch: int | None = None):
        self.dataset, self.doc_idx, self.sample_idx, self.shuffle_idx = dataset, doc_idx, sample_idx, shuffle_idx
        self.seq_len, self.seed, self.num_samples, self.name, self.stem = seq_len, seed, num_samples, name, stem
        if tokens_per_epoch is None:
            tokens_per_epoch = int(dataset.sizes.sum(dtype=np.int64))
        self.tokens_per_epoch = tokens_per_epoch
        self.num_epochs = num_epochs(self.tokens_per_epoch, seq_len, num_samples)
        self.build_log: BuildLog | None = None  # set when build() built the files (not loaded them)
        self._check_shapes()

    @classmethod
    def build(cls, prefix, seq_len: int, seed: int, num_samples: int, name: str = "train_0",
              out_dir=None, progress: bool = True, rebuild: bool = False) -> "TrainingOrder":
        """Load GPT-NeoX-named cached .npy files if present and built from this data, else
        build and save them. A cache made from other data raises StaleCacheError (or is
        rebuilt with rebuild=True); a cache without our sidecar (GPT-NeoX's) is used with a
        warning after shape checks."""
        if seq_len < 1 or num_samples < 1:
            raise ValueError(f"seq_len ({seq_len}) and num_samples ({num_samples}) must be >= 1")
        ds = IndexedDataset(prefix)
        stem = index_stem(ds.prefix, name, num_samples, seq_len, seed, out_dir)
        paths = {k: f"{stem}_{k}_idx.npy" for k in ("doc", "sample", "shuffle")}
        sidecar = Path(f"{stem}_order.json")
        params = {"format": ORDER_FORMAT, "name": name, "seq_len": seq_len, "seed": seed, "num_samples": num_samples}
        kw = dict(seq_len=seq_len, seed=seed, num_samples=num_samples, name=name, stem=stem)
        if all(os.path.exists(p) for p in paths.values()) and not rebuild:
            digest, tokens = _scan_sizes(ds.iter_sizes())
            expected = params | {"dataset": dataset_fingerprint(ds, digest)}
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
            return cls(ds, *cls._load(paths), tokens_per_epoch=tokens, **kw)
        log = BuildLog()
        digest, tokens, epochs = _build_files(ds, paths, seq_len, seed, num_samples, progress, log)
        write_json_atomic(sidecar, params | {"dataset": dataset_fingerprint(ds, digest), "num_epochs": epochs,
                                             "built_samples": sample_idx_rows(epochs, tokens, seq_len) - 1,
                                             "files": {k: Path(p).name for k, p in paths.items()}})
        order = cls(ds, *cls._load(paths), tokens_per_epoch=tokens, **kw)
        order.build_log = log
        return order

    @staticmethod
    def _load(paths: dict) -> list[np.ndarray]:
        return [np.load(paths[k], mmap_mode="r", allow_pickle=False) for k in ("doc", "sample", "shuffle")]

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

    def check_positions(self, lo: int, hi: int) -> None:
        """Refuse training positions outside [0, num_positions) (PositionError)."""
        if lo < 0 or hi > self.num_positions:
            raise PositionError(f"positions [{lo}, {hi}) outside the order's {self.num_positions} positions")

    def samples(self, positions) -> np.ndarray:
        """Tokens of training positions (R,) -> (R, S+1) int64.

        The segments (doc pieces) of all rows are computed vectorized; each is then one
        contiguous memcpy from the memmap (~2-3 per row for Pile-like documents), which is
        faster than a fancy-index gather of R*(S+1) token positions."""
        ks = np.asarray(positions, dtype=np.int64).reshape(-1)  # (R,)
        if ks.size:  # batch() passes a range: checking its ends is enough there too
            self.check_positions(int(ks.min()), int(ks.max()) + 1)
        j = self.shuffle_idx[ks].astype(np.int64)  # (R,) pre-shuffle sample ids
        _, items, seg_lo, seg_hi = self.segments(j)
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

    def segments(self, j: np.ndarray):
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
