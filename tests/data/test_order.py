"""GPT-NeoX v1.0's training order: closed forms, an independent loop version of helpers.cpp's
build_sample_idx, the spec's reproducible demo figures, caching and stale-cache detection."""
from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from pythia.data.indexed import HEADER_SIZE, DataFormatError, IndexedDataset
import pythia.data.order as order_mod
from pythia.data.provenance import find_document, locate
from pythia.data.order import (
    PositionError, StaleCacheError, TrainingOrder, build_indices, index_stem, num_epochs,
    num_samples_for,
)


def loop_sample_idx(sizes, doc_idx, seq_len, epochs, tokens_per_epoch):
    """Straight transcription of the spec's description of helpers.cpp build_sample_idx."""
    num_samples = (epochs * tokens_per_epoch - 1) // seq_len
    out = np.zeros((num_samples + 1, 2), dtype=np.int32)
    pos, offset = 0, 0
    for row in range(1, num_samples + 1):
        remaining = seq_len + 1
        while remaining != 0:
            length = int(sizes[doc_idx[pos]]) - offset
            remaining -= length
            if remaining <= 0:  # this document completes the sample: record its last token
                offset += remaining + length - 1
                remaining = 0
            else:
                pos += 1
                offset = 0
        out[row] = (pos, offset)
    return out


def neox_doc_idx(num_documents, epochs, rng):
    """GPT-NeoX v1.0 megatron/data/gpt2_dataset.py _build_doc_idx (train_0: documents = arange(n))."""
    doc_idx = np.mgrid[0:epochs, 0:num_documents][1]
    doc_idx[:] = np.arange(num_documents)
    doc_idx = doc_idx.reshape(-1).astype(np.int32)
    rng.shuffle(doc_idx)
    return doc_idx


def neox_shuffle_idx(size, rng):
    """GPT-NeoX v1.0 _build_shuffle_idx."""
    dtype_ = np.int64 if size >= (np.iinfo(np.uint32).max - 1) else np.uint32
    shuffle_idx = np.arange(start=0, stop=size, step=1, dtype=dtype_)
    rng.shuffle(shuffle_idx)
    return shuffle_idx


def npy_bytes(arr):
    """The bytes of GPT-NeoX's np.save(filename, arr, allow_pickle=True)."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def stream_of(ds, doc_idx):
    return np.concatenate([np.asarray(ds[int(i)], dtype=np.int64) for i in doc_idx])


def test_num_samples_and_stem():
    assert num_samples_for(143000, 1024) == 147164160
    assert 143000 * 1024 * 1.005 == 147164159.99999997
    assert num_samples_for(40, 8) == 322
    assert index_stem("/d/pile_20B_tokenizer_text_document", "train_0", 147164160, 2048, 1234) == (
        "/d/pile_20B_tokenizer_text_document_train_0_indexmap_147164160ns_2048sl_1234s")
    assert index_stem("/d/x.bin", "valid_0", 41165, 2048, 2, out_dir="/c") == "/c/x_valid_0_indexmap_41165ns_2048sl_2s"


def test_num_epochs_matches_neox_loop():
    def neox(t, s, n):
        e, total = 0, 0
        while True:
            e += 1
            total += t
            if (total - 1) // s >= n:
                return e
    rng = np.random.default_rng(1)
    for _ in range(500):
        t, s, n = (int(rng.integers(2, 5000)), int(rng.integers(1, 100)), int(rng.integers(1, 3000)))
        assert num_epochs(t, s, n) == neox(t, s, n)
    assert num_epochs(180757, 2048, 322) == 4  # spec section 12 demo: T=180757 -> E=4, Ns=353
    assert (4 * 180757 - 1) // 2048 == 353
    # Pythia standard: Ns = 162,164,736 implies E=1 with T ~ 332.1B tokens (spec section 8).
    assert num_epochs(332_113_380_000, 2048, 147164160) == 1
    assert num_epochs(207_000_000_000, 2048, 147164160) == 2


def test_spec_demo_doc_and_shuffle_idx():
    """These demo figures depend only on (300 documents, E=4, Ns=353, seed 1234)."""
    sizes = np.full(300, 603, dtype=np.int32)  # T = 180900 -> E=4, Ns=353 like the demo
    doc_idx, sample_idx, shuffle_idx = build_indices(sizes, 2048, 1234, 322)
    assert doc_idx.dtype == np.int32 and doc_idx.shape == (1200,)
    assert sample_idx.dtype == np.int32 and sample_idx.shape == (354, 2)
    assert shuffle_idx.dtype == np.uint32 and shuffle_idx.shape == (353,)
    assert doc_idx[:10].tolist() == [156, 237, 203, 201, 232, 29, 166, 47, 294, 120]
    assert np.flatnonzero(doc_idx == 156).tolist() == [0, 79, 206, 213]
    assert shuffle_idx[:10].tolist() == [18, 34, 279, 14, 62, 42, 314, 230, 295, 270]


@pytest.mark.parametrize("case", range(8))
def test_vectorized_matches_loop_and_closed_forms(case, make_dataset):
    rng = np.random.default_rng(case)
    n = int(rng.integers(1, 60))
    sizes = rng.integers(0 if case % 2 else 1, 90, n)  # odd cases include empty items
    sizes[0] = max(sizes[0], 2)
    seq_len, seed, requested = int(rng.integers(1, 40)), int(rng.integers(0, 2**31)), int(rng.integers(1, 400))
    ds = IndexedDataset(make_dataset(sizes, seed=case))
    doc_idx, sample_idx, shuffle_idx = build_indices(ds.sizes, seq_len, seed, requested)
    T = int(sizes.sum())
    E = num_epochs(T, seq_len, requested)
    # doc_idx == tile(documents, E)[RandomState(seed).permutation(E*n)]
    replay = np.random.RandomState(seed)
    assert doc_idx.tolist() == np.tile(np.arange(n), E)[replay.permutation(E * n)].tolist()
    # shuffle_idx: an independent replay continues on the same RandomState
    replay = np.random.RandomState(seed)
    replay.shuffle(np.zeros(E * n))
    assert shuffle_idx.tolist() == replay.permutation((E * T - 1) // seq_len).tolist()
    assert sample_idx.tolist() == loop_sample_idx(ds.sizes, doc_idx, seq_len, E, T).tolist()
    # sample j == stream[S*j : S*j+S+1] for every j, via TrainingOrder's gather
    order = TrainingOrder(ds, doc_idx, sample_idx, shuffle_idx, seq_len=seq_len, seed=seed, num_samples=requested)
    stream = stream_of(ds, doc_idx)
    got = order.samples(np.arange(order.num_positions))
    for k in range(order.num_positions):
        j = int(shuffle_idx[k])
        assert got[k].tolist() == stream[seq_len * j: seq_len * j + seq_len + 1].tolist()
    assert order.num_positions == len(shuffle_idx) - 1


def test_samples_ending_exactly_on_document_end(make_dataset):
    ds = IndexedDataset(make_dataset([65] * 40))
    doc_idx, sample_idx, shuffle_idx = build_indices(ds.sizes, 64, 3, 30)
    assert sample_idx.tolist() == loop_sample_idx(ds.sizes, doc_idx, 64, 1, 2600).tolist()
    assert sample_idx[1].tolist() == [0, 64]  # sample 0 ends on document 0's last token
    order = TrainingOrder(ds, doc_idx, sample_idx, shuffle_idx, seq_len=64, seed=3, num_samples=30)
    stream = stream_of(ds, doc_idx)
    for k in range(order.num_positions):
        j = int(shuffle_idx[k])
        assert order.sample(k).tolist() == stream[64 * j: 64 * j + 65].tolist()


def test_empty_first_item_keeps_row_zero(make_dataset):
    sizes = [0 if i % 7 == 0 else 9 for i in range(50)]
    ds = IndexedDataset(make_dataset(sizes))
    for seed in range(12):
        doc_idx, sample_idx, _ = build_indices(ds.sizes, 8, seed, 40)
        assert sample_idx[0].tolist() == [0, 0]
        E = len(doc_idx) // 50
        assert sample_idx.tolist() == loop_sample_idx(ds.sizes, doc_idx, 8, E, int(ds.sizes.sum())).tolist()


def test_build_caches_with_neox_names_and_is_deterministic(make_dataset, tmp_path):
    prefix = make_dataset(np.random.default_rng(0).integers(1, 300, 100))
    a = TrainingOrder.build(prefix, 32, 1234, 500, out_dir=tmp_path / "a", progress=False)
    b = TrainingOrder.build(prefix, 32, 1234, 500, out_dir=tmp_path / "b", progress=False)
    stem = "ds_train_0_indexmap_500ns_32sl_1234s"
    for kind in ("doc", "sample", "shuffle"):
        pa, pb = tmp_path / "a" / f"{stem}_{kind}_idx.npy", tmp_path / "b" / f"{stem}_{kind}_idx.npy"
        assert pa.read_bytes() == pb.read_bytes()
    loaded = TrainingOrder.build(prefix, 32, 1234, 500, out_dir=tmp_path / "a", progress=False)
    assert loaded.batch(3, 16).tolist() == a.batch(3, 16).tolist()
    assert a.batch(2, 8).shape == (8, 33) and a.batch(2, 8).dtype == np.int64
    assert a.batch(2, 8).tolist() == a.samples(range(16, 24)).tolist()
    with pytest.raises(PositionError, match="outside"):
        a.batch(10**6, 8)


def test_stale_cache_detected_and_neox_cache_accepted(make_dataset, tmp_path):
    prefix = make_dataset([50] * 40)
    order = TrainingOrder.build(prefix, 16, 7, 100, progress=False)
    expected = order.batch(1, 4).copy()
    stem = order.stem
    make_dataset([50] * 39 + [51])  # same prefix, other data (same shapes)
    with pytest.raises(StaleCacheError, match="other data"):
        TrainingOrder.build(prefix, 16, 7, 100, progress=False)
    rebuilt = TrainingOrder.build(prefix, 16, 7, 100, progress=False, rebuild=True)
    assert rebuilt.num_positions == order.num_positions + 1  # one more token -> one more sample
    # A GPT-NeoX-made cache (no sidecar, int64 sample_idx as later NeoX writes) is used with a warning.
    make_dataset([50] * 40)
    TrainingOrder.build(prefix, 16, 7, 100, progress=False, rebuild=True)
    np.save(f"{stem}_sample_idx.npy", np.load(f"{stem}_sample_idx.npy").astype(np.int64))
    import os
    os.remove(f"{stem}_order.json")
    with pytest.warns(UserWarning, match="sidecar"):
        neox = TrainingOrder.build(prefix, 16, 7, 100, progress=False)
    assert neox.batch(1, 4).tolist() == expected.tolist()
    # A sidecar-less cache whose shapes cannot match this data is rejected.
    make_dataset([50] * 41)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(StaleCacheError, match="shape"):
            TrainingOrder.build(prefix, 16, 7, 100, progress=False)


def test_provenance_both_directions(make_dataset):
    rng = np.random.default_rng(5)
    prefix = make_dataset(rng.integers(1, 40, 30))
    order = TrainingOrder.build(prefix, 16, 11, 120, progress=False)
    ds, B = order.dataset, 4
    # position -> documents: the segments rebuild the sample's tokens
    for k in range(0, order.num_positions, 7):
        segs = locate(order, k)
        tokens = np.concatenate([ds.get(s["document"], s["doc_start"], s["doc_end"] - s["doc_start"]) for s in segs])
        assert tokens.tolist() == order.sample(k).tolist()
    # document -> positions: every hit's token range is really at that place in that row
    seen = 0
    for doc in range(len(ds)):
        for h in find_document(order, doc, batch_size=B):
            assert h["position"] == h["step"] * B + h["row"]
            row = order.sample(h["position"])
            n = h["doc_end"] - h["doc_start"]
            assert row[h["sample_offset"]: h["sample_offset"] + n].tolist() == \
                ds.get(doc, h["doc_start"], n).tolist()
            seen += n
    # every token of every usable position is attributed to exactly one document range
    assert seen == order.num_positions * 17


def test_chunked_build_matches_loop_across_chunk_boundaries(monkeypatch):
    """The sample_idx builder works in chunks of doc_idx; tiny chunks exercise every boundary."""
    import pythia.data.order as order_mod

    monkeypatch.setattr(order_mod, "CHUNK_SLOTS", 7)
    rng = np.random.default_rng(42)
    for case in range(40):
        sizes = rng.integers(0, 25, int(rng.integers(1, 40))).astype(np.int32)
        sizes[-1] = max(sizes[-1], 2)
        seq_len, requested = int(rng.integers(1, 30)), int(rng.integers(1, 200))
        doc_idx, sample_idx, _ = build_indices(sizes, seq_len, case, requested)
        E = len(doc_idx) // len(sizes)
        assert sample_idx.tolist() == loop_sample_idx(sizes, doc_idx, seq_len, E, int(sizes.sum())).tolist()


@pytest.mark.parametrize("chunk", [3, 1 << 16])
@pytest.mark.parametrize("case", range(4))
def test_built_files_are_gpt_neox_bytes(case, chunk, make_dataset, tmp_path, monkeypatch):
    """The three files the cache build streams to disk (blocks of `chunk` slots, shuffle_idx in a
    second thread) are byte for byte GPT-NeoX's np.save of its own computation: _build_doc_idx
    and _build_shuffle_idx on one RandomState, and helpers.cpp's sample_idx (loop transcription)."""
    monkeypatch.setattr(order_mod, "CHUNK_SLOTS", chunk)
    rng = np.random.default_rng(100 + case)
    n = int(rng.integers(1, 80))
    sizes = rng.integers(0 if case % 2 else 1, 70, n)  # odd cases include empty items
    sizes[0] = max(sizes[0], 2)
    seq_len, seed, requested = [16, 7, 64, 1][case], int(rng.integers(0, 2**31)), int(rng.integers(1, 300))
    ds = IndexedDataset(make_dataset(sizes, seed=case))
    order = TrainingOrder.build(ds.prefix, seq_len, seed, requested, out_dir=tmp_path / "c", progress=False)
    T = int(sizes.sum())
    E = num_epochs(T, seq_len, requested)
    replay = np.random.RandomState(seed)
    doc_idx = neox_doc_idx(n, E, replay)
    expected = {"doc": doc_idx, "sample": loop_sample_idx(ds.sizes, doc_idx, seq_len, E, T),
                "shuffle": neox_shuffle_idx((E * T - 1) // seq_len, replay)}
    for kind, arr in expected.items():
        assert Path(f"{order.stem}_{kind}_idx.npy").read_bytes() == npy_bytes(arr), kind
    assert {p["phase"] for p in order.build_log.phases} == {
        "read sizes", "doc_idx shuffle", "doc_idx + sample_idx + write", "sizes sha256 (alongside)",
        "shuffle_idx + write (alongside)"}


def test_int64_sample_idx_beyond_int32_slots(monkeypatch, make_dataset, tmp_path):
    """Past 2**31 - 1 doc_idx slots sample_idx is int64 (tested by lowering the limit)."""
    monkeypatch.setattr(order_mod, "INT32_SLOTS", 10)
    monkeypatch.setattr(order_mod, "CHUNK_SLOTS", 4)
    sizes = np.random.default_rng(3).integers(0, 30, 25)
    ds = IndexedDataset(make_dataset(sizes))
    doc_idx, sample_idx, _ = build_indices(ds.sizes, 8, 5, 150)
    E = len(doc_idx) // 25
    assert E > 1 and sample_idx.dtype == np.int64
    assert sample_idx.tolist() == loop_sample_idx(ds.sizes, doc_idx, 8, E, int(sizes.sum())).tolist()
    order = TrainingOrder.build(ds.prefix, 8, 5, 150, out_dir=tmp_path, progress=False)
    assert Path(f"{order.stem}_sample_idx.npy").read_bytes() == npy_bytes(sample_idx)


def test_sizes_that_do_not_add_up_to_the_bin(make_dataset, tmp_path):
    """Items that overlap (pointers all 0) would make the token count from the .bin disagree with
    GPT-NeoX's sum of sizes, and silently change the order: such an .idx is refused on open."""
    prefix = make_dataset([6, 6, 6, 6])
    with open(f"{prefix}.idx", "r+b") as f:
        f.seek(HEADER_SIZE + 4 * 4)
        f.write(struct.pack("<4q", 0, 0, 0, 0))
    with open(f"{prefix}.bin", "r+b") as f:
        f.truncate(12)  # pointer 0 + 6 uint16 tokens
    with pytest.raises(DataFormatError, match=r"item 1 starts at byte 0.*sizes and pointers disagree"):
        TrainingOrder.build(prefix, 4, 9, 10, out_dir=tmp_path, progress=False)
