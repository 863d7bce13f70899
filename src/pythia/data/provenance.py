"""Provenance both ways: training position -> documents and offsets (with source metadata),
and document -> every step/row/offset at which its tokens were trained on, for a TrainingOrder
(`locate(order, k)`, `find_document(order, doc_id)`)."""
from __future__ import annotations

import numpy as np

from .order import PositionError
from .tokenize import DocumentMetadata

_CHUNK = 1 << 24


def locate(order, k: int) -> list[dict]:
    """Segments of training position k, in token order: item (document) id, its token range
    [doc_start, doc_end), where the range lands in the sample (sample_offset), source metadata."""
    order.check_positions(k, k + 1)
    j = np.array([int(order.shuffle_idx[k])], dtype=np.int64)
    slots, items, lo, hi = order.segments(j)
    meta = DocumentMetadata(order.dataset.prefix)
    out, at = [], 0
    for slot, doc, a, b in zip(slots.tolist(), items.tolist(), lo.tolist(), hi.tolist()):
        if b <= a:
            continue  # empty item inside the sample
        out.append({"position": k, "sample": int(j[0]), "document": doc, "slot": slot,
                    "doc_start": a, "doc_end": b, "sample_offset": at, "source": meta[doc]})
        at += b - a
    return out


def _slot_starts(order, slots: np.ndarray) -> np.ndarray:
    """Stream position where each (sorted) doc_idx slot begins, by a chunked running cumsum."""
    starts = np.empty(slots.size, np.int64)
    base, done = 0, 0
    for a in range(0, len(order.doc_idx), _CHUNK):
        lens = order.dataset.sizes[order.doc_idx[a:a + _CHUNK]].astype(np.int64)  # (C,)
        hi = np.searchsorted(slots, a + lens.size)
        if hi > done:
            excl = np.cumsum(lens) - lens  # (C,) exclusive prefix sums
            starts[done:hi] = base + excl[slots[done:hi] - a]
            done = hi
        base += int(lens.sum())
        if done == slots.size:
            break
    return starts


def find_document(order, doc_id: int, batch_size: int = 1024) -> list[dict]:
    """Every training position that contains tokens of item doc_id, sorted by position.
    A document appears once per epoch copy; copies are shuffled jointly, so the same document
    may be seen twice in one "epoch"'s worth of steps or not at all."""
    n = len(order.dataset)
    if not 0 <= doc_id < n:
        raise PositionError(f"document {doc_id} outside 0..{n - 1} of {order.dataset.prefix}")
    size = int(order.dataset.sizes[doc_id])
    slots = np.flatnonzero(np.asarray(order.doc_idx) == doc_id)  # one per epoch copy
    S, built = order.seq_len, order.sample_idx.shape[0] - 1
    shuffle = order.shuffle_idx[:order.num_positions]
    hits = []
    for copy, (slot, a) in enumerate(zip(slots.tolist(), _slot_starts(order, slots).tolist())):
        b = a + size
        if size == 0:
            continue
        j_lo = max(0, -(-(a - S) // S))  # first sample whose S+1 tokens reach position a
        j_hi = min(built - 1, (b - 1) // S)
        if j_hi < j_lo:
            continue
        for k in np.flatnonzero((shuffle >= j_lo) & (shuffle <= j_hi)).tolist():
            j = int(shuffle[k])
            lo, hi = max(a, j * S), min(b, j * S + S + 1)
            hits.append({"position": k, "step": k // batch_size, "row": k % batch_size,
                         "sample": j, "copy": copy, "slot": slot, "doc_start": lo - a,
                         "doc_end": hi - a, "sample_offset": lo - j * S})
    hits.sort(key=lambda h: (h["position"], h["doc_start"]))
    return hits
