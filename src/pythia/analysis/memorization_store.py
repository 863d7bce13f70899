"""Per-sequence memorization scores on disk: one byte per sequence, chunked, resumable.

Layout of one checkpoint's artifact folder (`RUN/results/artifacts/memorization/{member}/stepN/`):

    scores/meta.json       what was scored: positions (a range [lo, hi) or positions.npy),
                           prompt/continuation lengths, EOD suppression, method, score kind,
                           the weights digest, the analysis version
    scores/scores.npy      uint8 (N,): matched continuation tokens per sequence, 0..C
    scores/positions.npy   int64 (N,), only for sampled (non-contiguous) positions
    partial-{tag}/chunk-K.npy   work in progress: chunk K of the positions, each written
                           atomically, so a `kill -9` loses at most the chunk being scored
    duplicates/meta.json   (option `duplicates`) what was counted: the same positions, the
                           window [offset, offset + length), until_step, the data
    duplicates/counts.npy  int32 (N,): how many times each scored window occurs in the
                           training data of updates [0, until_step); -1 where it spans two
                           documents (uncountable by a document index)
    dup-partial-{tag}/chunk-K.npy   the counts' work in progress, chunk by chunk likewise

`scores/` and `duplicates/` are each replaced as a whole (atomic rename) when every chunk is
done. Also here: reading scores (and their duplicate counts) back (`load_scores`), Pythia's
`index,accuracy` CSV export, reading Pythia's published memorized sets
(`EleutherAI/pythia-memorized-evals` parquet), precision/recall between two score sets, and
memorization binned by the step a sequence was trained at or by its duplicate count. numpy only
(pyarrow and tqdm are imported where used).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..io import atomic_dir, atomic_path, write_text_atomic

__all__ = ["DUPLICATES_FORMAT", "FORMAT", "MemorizationScores", "Positions", "artifact_folders",
           "bin_by_duplicates", "bin_by_trained_step", "compute_chunked", "compute_duplicates", "duplicate_bin",
           "export_pythia_csv", "load_scores", "parse_range", "precision_recall", "read_memorized_parquet",
           "read_rows"]

FORMAT = "pythia-memorization/1"
DUPLICATES_FORMAT = "pythia-memorization-duplicates/1"
ANALYSIS = "memorization"


def parse_range(text: str, name: str = "positions") -> tuple[int, int | None]:
    """'A:B' -> (A, B) with B exclusive; 'A:' -> (A, None); ':B' -> (0, B)."""
    a, sep, b = str(text).partition(":")
    try:
        lo, hi = int(a) if a.strip() else 0, int(b) if b.strip() else None
    except ValueError:
        lo = hi = -1
    if not sep or lo < 0 or (hi is not None and hi < lo):
        raise ValueError(f"{name} must be A:B with 0 <= A <= B (B exclusive), got {text!r}")
    return lo, hi


@dataclass(frozen=True)
class Positions:
    """Training positions scored, in order: a range [lo, hi) or an explicit sorted array."""

    lo: int = 0
    hi: int = 0
    values: np.ndarray | None = None

    @classmethod
    def of(cls, values) -> "Positions":
        values = np.asarray(values, dtype=np.int64)
        return cls(int(values.min(initial=0)), int(values.max(initial=-1)) + 1, values)

    def __len__(self) -> int:
        return self.hi - self.lo if self.values is None else len(self.values)

    def take(self, i: int, j: int) -> np.ndarray:
        """Positions number i..j-1 (int64)."""
        return np.arange(self.lo + i, self.lo + min(j, len(self)), dtype=np.int64) if self.values is None \
            else self.values[i:j]

    def array(self) -> np.ndarray:
        return self.take(0, len(self))

    def describe(self) -> dict:
        return {"range": [self.lo, self.hi]} if self.values is None else {"file": "positions.npy", "count": len(self)}


def read_rows(order, positions: np.ndarray, width: int) -> np.ndarray:
    """First `width` tokens of training positions (n,) -> (n, width) int64, from a TrainingOrder
    or a preshuffled file (whose row k is position k: only the needed columns are read)."""
    rows = getattr(order, "rows", None)
    if rows is None:
        return order.samples(positions)[:, :width]
    if len(positions) and positions[-1] - positions[0] + 1 == len(positions):  # contiguous: a slice
        return np.asarray(rows[positions[0]:positions[-1] + 1, :width], dtype=np.int64)
    return np.asarray(rows[positions, :width], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# writing, chunk by chunk


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def _load_chunk(path: Path, n: int, dtype=np.uint8) -> np.ndarray | None:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.dtype == dtype and arr.shape == (n,) else None


def _run_chunks(folder: Path, prefix: str, positions: Positions, meta: dict, fn: Callable[[np.ndarray], np.ndarray],
                chunk: int, dtype, progress: bool, desc: str) -> np.ndarray:
    """`fn(positions)` over `positions` chunk by chunk, each chunk kept under
    `folder/{prefix}-{tag}` (tag = hash of `meta` and the chunk size, so changed settings never
    reuse old chunks) until all are done; returns them concatenated (the caller publishes)."""
    from tqdm.auto import tqdm

    tag = hashlib.sha256(json.dumps([meta, chunk], sort_keys=True).encode()).hexdigest()[:16]
    part = folder / f"{prefix}-{tag}"
    for stale in folder.glob(f"{prefix}-*"):
        if stale != part:
            shutil.rmtree(stale, ignore_errors=True)
    part.mkdir(parents=True, exist_ok=True)
    n = len(positions)
    bounds = [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    files = [part / f"chunk-{k:06d}.npy" for k in range(len(bounds))]
    done = [_load_chunk(f, hi - lo, dtype) if f.is_file() else None for f, (lo, hi) in zip(files, bounds)]
    with tqdm(total=n, initial=sum(hi - lo for d, (lo, hi) in zip(done, bounds) if d is not None), unit="seq",
              unit_scale=True, desc=desc, disable=not progress or None, leave=False, dynamic_ncols=True) as bar:
        for k, (lo, hi) in enumerate(bounds):
            if done[k] is None:
                done[k] = np.asarray(fn(positions.take(lo, hi)), dtype=dtype)
                _save_npy(files[k], done[k])
                bar.update(hi - lo)
    return np.concatenate(done) if done else np.zeros(0, dtype)


def _finish(folder: Path, prefix: str) -> None:
    for part in folder.glob(f"{prefix}-*"):
        shutil.rmtree(part, ignore_errors=True)


def compute_chunked(folder: Path, positions: Positions, meta: dict, score: Callable[[np.ndarray], np.ndarray],
                    chunk: int, progress: bool = False, desc: str = "memorization") -> "MemorizationScores":
    """Score `positions` chunk by chunk with `score(positions) -> uint8 counts`, keeping finished
    chunks under `folder/partial-{tag}`, then publish `folder/scores` atomically."""
    folder = Path(folder)
    meta = scores_meta(positions, meta)
    scores = _run_chunks(folder, "partial", positions, meta, score, chunk, np.uint8, progress, desc)
    with atomic_dir(folder / "scores") as tmp:
        _save_npy(tmp / "scores.npy", scores)
        if positions.values is not None:
            _save_npy(tmp / "positions.npy", positions.values)
        write_text_atomic(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    _finish(folder, "partial")
    return load_scores(folder)


def scores_meta(positions: Positions, meta: dict) -> dict:
    """The meta.json that `compute_chunked` writes for `meta` over `positions`."""
    return {"format": FORMAT, **meta, "positions": positions.describe(), "sequences": len(positions)}


def finished_scores(folder: Path, positions: Positions, meta: dict) -> "MemorizationScores | None":
    """The published scores of `folder` when they were computed with exactly this meta over
    these positions (else None): what lets a re-run that only adds duplicate counts skip scoring."""
    try:
        done = load_scores(folder)
    except (OSError, ValueError, KeyError):
        return None
    if done.meta != json.loads(json.dumps(scores_meta(positions, meta))):
        return None
    if positions.values is not None and not np.array_equal(done.positions, positions.values):
        return None
    return done


def _positions_id(positions: Positions) -> dict:
    out = positions.describe()
    if positions.values is not None:
        out["sha256"] = hashlib.sha256(np.ascontiguousarray(positions.values, np.int64).tobytes()).hexdigest()[:16]
    return out


def compute_duplicates(folder: Path, positions: Positions, meta: dict, count: Callable[[np.ndarray], np.ndarray],
                       chunk: int, progress: bool = False, desc: str = "duplicates") -> np.ndarray:
    """Duplicate counts of `positions` (`count(positions) -> int counts, -1 uncountable`) chunk
    by chunk under `folder/dup-partial-{tag}`, then published as `folder/duplicates` (int32)."""
    folder = Path(folder)
    meta = {"format": DUPLICATES_FORMAT, **meta, "positions": _positions_id(positions), "sequences": len(positions)}

    def checked(pos: np.ndarray) -> np.ndarray:
        c = np.asarray(count(pos), dtype=np.int64)
        if c.size and (c.max() > np.iinfo(np.int32).max or c.min() < -1):
            raise ValueError(f"duplicate counts outside -1..2^31-1 (got {int(c.min())}..{int(c.max())})")
        return c

    counts = _run_chunks(folder, "dup-partial", positions, meta, checked, chunk, np.int32, progress, desc)
    with atomic_dir(folder / "duplicates") as tmp:
        _save_npy(tmp / "counts.npy", counts)
        write_text_atomic(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    _finish(folder, "dup-partial")
    return counts


# ---------------------------------------------------------------------------------------------
# reading back


@dataclass
class MemorizationScores:
    """One checkpoint's scores: `scores[i]` = matched tokens of training position `positions[i]`."""

    meta: dict
    scores: np.ndarray
    """uint8 (N,): matched continuation tokens (score "full") or matched prefix ("prefix")."""
    _positions: Positions
    duplicates: np.ndarray | None = None
    """int32 (N,) or None: how many times each scored window occurs in the training data up to
    the step (`duplicates_meta`: which window, until_step); -1 where it spans two documents."""
    duplicates_meta: dict | None = None

    @property
    def positions(self) -> np.ndarray:
        return self._positions.array()

    @property
    def cont_len(self) -> int:
        return int(self.meta["cont_len"])

    @property
    def memorized(self) -> np.ndarray:
        """bool (N,): all C continuation tokens reproduced (Pythia's accuracy == 1)."""
        return self.scores == self.cont_len

    @property
    def accuracy(self) -> np.ndarray:
        """float (N,): Pythia's accuracy, matched / C (score "full" only)."""
        if self.meta.get("score") != "full":
            raise ValueError("accuracy needs position-wise scores (score 'full'); these are matched prefixes")
        return self.scores / self.cont_len

    def memorized_positions(self) -> np.ndarray:
        return self._positions.array()[self.memorized]

    def select(self, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the positions in [lo, hi)."""
        pos = self.positions
        keep = (pos >= lo) & (pos < (hi if hi is not None else np.iinfo(np.int64).max))
        return pos[keep], self.scores[keep]


def artifact_folders(results_dir, member: str) -> dict[int, Path]:
    """{step: folder} of the finished memorization scores of a member under a results folder."""
    base = Path(results_dir) / "artifacts" / ANALYSIS / member
    out = {}
    for meta in base.glob("step*/scores/meta.json"):
        name = meta.parent.parent.name
        if name[4:].isdigit():
            out[int(name[4:])] = meta.parent.parent
    return dict(sorted(out.items()))


def load_scores(source: Any, member: str | None = None, step: int | None = None,
                mmap: bool = False) -> MemorizationScores:
    """Scores of (member, step): `source` is a RunView, a results folder, or an artifact folder
    (`.../memorization/{member}/stepN`) with member/step left out."""
    folder = Path(source.results_dir if hasattr(source, "results_dir") else source)
    if member is not None:
        folder = folder / "artifacts" / ANALYSIS / member / f"step{int(step)}"
    meta_path = folder / "scores" / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no memorization scores (run `pythia analyze RUN memorization`)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: not a {FORMAT} file")
    scores = np.load(folder / "scores" / "scores.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    desc = meta["positions"]
    if "range" in desc:
        positions = Positions(*desc["range"])
    else:
        positions = Positions.of(np.load(folder / "scores" / "positions.npy", allow_pickle=False))
    if len(positions) != len(scores):
        raise ValueError(f"{folder}: {len(scores)} scores for {len(positions)} positions")
    dup, dup_meta = _load_duplicates(folder, positions, mmap)
    return MemorizationScores(meta, scores, positions, dup, dup_meta)


def _load_duplicates(folder: Path, positions: Positions, mmap: bool) -> tuple[np.ndarray | None, dict | None]:
    """The duplicate counts beside the scores, when they were counted for the same positions
    (counts left from scores of other positions are ignored)."""
    meta_path = folder / "duplicates" / "meta.json"
    if not meta_path.is_file():
        return None, None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != DUPLICATES_FORMAT:
        raise ValueError(f"{meta_path}: not a {DUPLICATES_FORMAT} file")
    if meta.get("positions") != _positions_id(positions) or meta.get("sequences") != len(positions):
        return None, None
    counts = np.load(folder / "duplicates" / "counts.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    if counts.shape != (len(positions),):
        raise ValueError(f"{folder / 'duplicates'}: {counts.shape[0]} counts for {len(positions)} positions")
    return counts, meta


# ---------------------------------------------------------------------------------------------
# Pythia's formats


def export_pythia_csv(scores: MemorizationScores, path) -> Path:
    """Write `index,accuracy` lines without a header, as each rank of Pythia's
    eval_memorization.py did (read back with pd.read_csv(path, names=["index", "accuracy"]))."""
    acc = scores.accuracy
    lines = [f"{i},{a!r}" for i, a in zip(scores.positions.tolist(), acc.tolist())]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return Path(path)


def read_memorized_parquet(path, order=None) -> np.ndarray:
    """Pythia's published memorized set (a `pythia-memorized-evals` parquet: columns `index`,
    `tokens` = the first 64 tokens) -> sorted unique int64 positions. With `order` (the
    member's training order) every row's tokens are checked against the training data."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    missing = [c for c in ("index", "tokens") if c not in names]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} (columns: {names}); expected Pythia's index, tokens")
    table = pq.read_table(path, columns=["index", "tokens"])
    index = np.asarray(table.column("index").to_numpy(zero_copy_only=False), dtype=np.int64)
    if order is not None and len(index):
        tokens = table.column("tokens").to_pylist()
        width = max(len(t) for t in tokens)
        if index.max() >= order.num_positions or index.min() < 0:
            raise ValueError(f"{path}: index {int(index.max())} outside the order's {order.num_positions} positions")
        rows = read_rows(order, index, width)
        for r, (pos, toks) in enumerate(zip(index.tolist(), tokens)):
            if not np.array_equal(rows[r, :len(toks)], np.asarray(toks, dtype=np.int64)):
                raise ValueError(f"{path}: row {r} (index {pos}): tokens differ from training position {pos}")
    return np.unique(index)


# ---------------------------------------------------------------------------------------------
# comparisons


def _common(a: MemorizationScores, b: MemorizationScores, lo: int, hi: int | None):
    """Scores of a and b over the positions both scored (and within [lo, hi))."""
    pa, pb = a._positions, b._positions
    if pa.values is None and pb.values is None:  # two ranges: slices, no position arrays
        start, stop = max(pa.lo, pb.lo, lo), min(pa.hi, pb.hi, hi if hi is not None else pa.hi)
        if stop <= start:
            return a.scores[:0], b.scores[:0]
        return a.scores[start - pa.lo:stop - pa.lo], b.scores[start - pb.lo:stop - pb.lo]
    xa, sa = a.select(lo, hi)
    xb, sb = b.select(lo, hi)
    _, ia, ib = np.intersect1d(xa, xb, assume_unique=True, return_indices=True)
    return sa[ia], sb[ib]


def precision_recall(predictor: MemorizationScores, target: MemorizationScores, at: int | None = None,
                     lo: int = 0, hi: int | None = None) -> dict:
    """How well the predictor's memorized set predicts the target's, over the positions both
    scored: y_true = target memorized, y_pred = predictor memorized (Pythia's mem_graph.py passes
    them the other way round to confusion_matrix, which swaps its precision and recall).
    `at`: a sequence counts as memorized from `at` matched tokens (default: all C).
    Returns positions, predicted, target, tp, precision and recall (None when undefined)."""
    if predictor.cont_len != target.cont_len:
        raise ValueError(f"continuation lengths differ ({predictor.cont_len} vs {target.cont_len})")
    if at is not None and at < target.cont_len and predictor.meta.get("score") != target.meta.get("score"):
        raise ValueError("a threshold below C needs both score kinds equal (full vs prefix)")
    k = target.cont_len if at is None else at
    sp, st = _common(predictor, target, lo, hi)
    y_pred, y_true = sp >= k, st >= k
    tp, n_pred, n_true = int((y_pred & y_true).sum()), int(y_pred.sum()), int(y_true.sum())
    return {"positions": len(sp), "predicted": n_pred, "target": n_true, "tp": tp,
            "precision": tp / n_pred if n_pred else None, "recall": tp / n_true if n_true else None}


def bin_by_trained_step(scores: MemorizationScores, global_batch: int, bins: int) -> list[dict]:
    """Memorization by when each sequence was trained (step = position // global_batch), in up to
    `bins` equal-width bins of steps: [{first, last (exclusive), sequences, memorized, mean}]."""
    pos = scores.positions
    if not len(pos):
        return []
    step = pos // global_batch
    first, stop = int(step.min()), int(step.max()) + 1
    edges = np.unique(np.linspace(first, stop, min(bins, stop - first) + 1).round().astype(np.int64))
    which = np.searchsorted(edges, step, side="right") - 1  # bin of each sequence
    mem = scores.memorized
    out = []
    for b in range(len(edges) - 1):
        sel = which == b
        n = int(sel.sum())
        if n:
            out.append({"first": int(edges[b]), "last": int(edges[b + 1]), "sequences": n,
                        "memorized": int(mem[sel].sum()), "mean": float(scores.scores[sel].mean())})
    return out


def duplicate_bin(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log2 bins of duplicate counts: 0, 1, 2, 3-4, 5-8, 9-16, ... as half-open [lo, hi):
    (lo, hi) per count (int64); -1 (uncountable) gets (-1, -1)."""
    c = np.asarray(counts, dtype=np.int64)
    top = max(int(c.max(initial=0)), 1)
    edges = np.array([0, 1] + [2 ** k + 1 for k in range(top.bit_length() + 1)], np.int64)  # 0, 1, 2, 3, 5, 9, ...
    i = np.searchsorted(edges, np.maximum(c, 0), side="right") - 1
    lo, hi = edges[i], edges[np.minimum(i + 1, edges.size - 1)]
    return np.where(c < 0, -1, lo), np.where(c < 0, -1, hi)


def bin_by_duplicates(scores: MemorizationScores) -> list[dict]:
    """Memorization by how many times each scored window occurs in the training data up to the
    step, in log2 bins (`duplicate_bin`): [{first, last (exclusive), sequences, memorized, mean}],
    ascending, then the uncountable windows (first = last = -1) if any."""
    if scores.duplicates is None:
        raise ValueError("no duplicate counts beside these scores (run memorization with duplicates=True)")
    lo, hi = duplicate_bin(scores.duplicates)
    mem, s = scores.memorized, scores.scores
    out = []
    for first in sorted(set(np.unique(lo).tolist()), key=lambda v: (v < 0, v)):
        sel = lo == first
        out.append({"first": first, "last": int(hi[sel][0]), "sequences": int(sel.sum()),
                    "memorized": int(mem[sel].sum()), "mean": float(s[sel].mean())})
    return out
