"""N-gram counts by training step against a brute-force scan of the order's samples."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from pythia.data.counts import EmptyQueryError, OutOfVocabularyError, TermCounter
from pythia.data.ngram import NgramIndex, StaleIndexError, build_index
from pythia.data.order import PositionError, PreshuffledOrder, TrainingOrder, num_samples_for
from tests.data.conftest import write_dataset
from tests.data.ngram_brute import brute, training_stream

S, B, ITERS = 16, 4, 20
PATTERNS = ([2], [3, 4], [2, 2, 3], [5, 4, 3, 2], "doc0[3:10]")  # a 7-gram: spans sample ends


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny dataset (vocab 2..5, one empty document) whose order needs 3 epochs."""
    tmp = tmp_path_factory.mktemp("counts")
    rng = np.random.default_rng(7)
    sizes = rng.integers(5, 45, 20)
    sizes[6] = 0
    prefix = write_dataset(tmp / "ds", sizes, seed=3, vocab=6)
    order = TrainingOrder.build(prefix, S, 5, num_samples_for(ITERS, B), out_dir=tmp, progress=False)
    assert order.num_epochs >= 2
    index = build_index(prefix, tmp / "sa", progress=False)
    sharded = build_index(prefix, tmp / "sa-sharded", shard_tokens=60, progress=False)
    assert len(sharded.shards) > 3
    return {"tmp": tmp, "prefix": prefix, "order": order, "index": index, "sharded": sharded}


@pytest.mark.parametrize("pattern", PATTERNS)
def test_counts_by_step_match_brute_force(world, pattern):
    order = world["order"]
    if isinstance(pattern, str):
        pattern = np.asarray(order.dataset[0][3:10], np.int64).tolist()
    counter = TermCounter(world["index"], order, B, ITERS)
    sharded = TermCounter(world["sharded"], order, B, ITERS)
    per_pos = brute(order, pattern, range(order.num_positions))
    per_step = np.bincount(np.arange(order.num_positions) // B, weights=per_pos).astype(int)
    assert per_pos.sum() > 0
    for until in (0, 1, 7, ITERS, counter.num_steps):
        got = counter.count(pattern, until_step=until)
        assert got.count == per_step[:until].sum() == sharded.count(pattern, until_step=until).count
        hit = np.flatnonzero(per_step[:until])
        assert got.first_step == (int(hit[0]) if hit.size else None)
    full = counter.count(pattern)
    assert full.until_step == ITERS
    assert [r["count"] for r in full.by_step([0, 1, 2, 4, 8, 20])] == [per_step[:s].sum() for s in (0, 1, 2, 4, 8, 20)]


def test_documents_match_brute_force(world):
    order, pattern = world["order"], [3, 4]
    toks, slot = training_stream(order)
    doc_of_slot = np.asarray(order.doc_idx)
    trained, first = {}, {}
    for k in range(ITERS * B):
        j = int(order.shuffle_idx[k])
        w, s = toks[j * S:j * S + S + 1], slot[j * S:j * S + S + 1]
        for i in range(S):
            if i + 2 <= S + 1 and list(w[i:i + 2]) == pattern and s[i] == s[i + 1]:
                d = int(doc_of_slot[s[i]])
                trained[d] = trained.get(d, 0) + 1
                first.setdefault(d, k // B)
    got = TermCounter(world["index"], order, B, ITERS).count(pattern, documents=True, max_documents=1000)
    rows = {r["document"]: r for r in got.documents}
    assert {d: r["trained"] for d, r in rows.items() if r["trained"]} == trained
    assert {d: r["first_step"] for d, r in rows.items() if r["first_step"] is not None} == first
    ds = order.dataset
    corpus = {d: int(np.sum(np.all(sliding_window_view(np.asarray(ds[d]), 2) == pattern, 1)))
              for d in range(len(ds)) if ds.sizes[d] >= 2}
    assert {d: r["occurrences"] for d, r in rows.items()} == {d: c for d, c in corpus.items() if c}
    assert got.corpus_count == sum(corpus.values()) > 0
    assert got.documents_total == sum(1 for c in corpus.values() if c)


def test_whole_corpus_count_and_shards(world):
    ds = world["order"].dataset
    for pattern in PATTERNS[:-1]:
        n = len(pattern)
        expected = sum(int(np.sum(np.all(sliding_window_view(np.asarray(ds[d]), n) == pattern, 1)))
                       for d in range(len(ds)) if ds.sizes[d] >= n)
        assert world["index"].count(pattern) == world["sharded"].count(pattern) == expected
    pairs = np.array([[a, b] for a in range(8) for b in range(8)] + [[70000, 2]])  # 6, 7, 70000: absent
    for index in (world["index"], world["sharded"]):
        together = index.ranges(pairs)  # the vectorised search
        for i, pair in enumerate(pairs):
            alone = index.ranges(pair)  # the scalar bisection
            for (lo, hi), (lo1, hi1) in zip(together, alone):
                assert (lo[i], hi[i]) == (lo1[0], hi1[0])
        total = sum(int((hi - lo).sum()) for lo, hi in together)  # every suffix of 2+ tokens, once
        assert total == sum(s["token_hi"] - s["token_lo"] - 1 for s in index.shards)


def test_sequence_counts_match_brute_force(world):
    order = world["order"]
    counter = TermCounter(world["sharded"], order, B, ITERS)
    toks, slot = training_stream(order)
    positions = np.arange(0, ITERS * B, 3)
    for until, offset, length in ((ITERS, 0, 4), (9, 5, 3)):
        got = counter.sequence_counts(positions, until_step=until, offset=offset, length=length)
        for k, c in zip(positions, got):
            g = int(order.shuffle_idx[k]) * S + offset
            if len(set(slot[g:g + length])) > 1:
                assert c == -1
                continue
            assert c == brute(order, toks[g:g + length], range(until * B)).sum()
            assert c >= (1 if k // B < until else 0)
    assert (got >= 0).any() and (got == -1).any()
    with pytest.raises(PositionError):
        counter.sequence_counts([0], offset=S, length=4)


def test_preshuffled_counts(world):
    from pythia.data.preshuffle import export_preshuffled

    out = world["tmp"] / "pre"
    export_preshuffled(world["order"], out, num_positions=ITERS * B, progress=False)
    pre = PreshuffledOrder(out)
    counter = TermCounter(build_index(out, progress=False), pre, B, ITERS)
    for pattern in PATTERNS[:3]:
        n = len(pattern)
        rows = pre.rows.astype(np.int64)
        per_row = np.all(sliding_window_view(rows, n, axis=1)[:, :S] == pattern, -1).sum(1)
        assert counter.count(pattern, until_step=5).count == per_row[:5 * B].sum()
        assert counter.count(pattern).count == per_row.sum()


def test_not_followed_by_drops_occurrences(world):
    counter = TermCounter(world["index"], world["order"], B, ITERS)
    mask = np.zeros(6, bool)
    mask[3] = True  # drop [2] followed by 3: what remains is [2] minus [2, 3] (inside documents)
    ds = world["order"].dataset
    kept = sum(int(np.sum((np.asarray(ds[d]) == 2) & np.append(np.asarray(ds[d])[1:] != 3, True)))
               for d in range(len(ds)))
    got = counter.count([2], not_followed_by=mask)
    assert got.corpus_count == kept
    order = world["order"]
    assert got.count == brute(order, [2], range(ITERS * B), not_followed_by=mask).sum() < counter.count([2]).count


def test_bad_queries_are_named(world, tiny_tokenizer):
    counter = TermCounter(world["index"], world["order"], B, ITERS, tokenizer_path=tiny_tokenizer)
    with pytest.raises(EmptyQueryError):
        counter.encode("")
    with pytest.raises(OutOfVocabularyError, match="99999"):
        counter.count([2, 99999])
    with pytest.raises(OutOfVocabularyError):
        counter.count([-1])
    with pytest.raises(EmptyQueryError):
        counter.count([])
    with pytest.raises(PositionError):
        counter.count([2], until_step=counter.num_steps + 1)


def test_stale_index_refused(tmp_path):
    rng = np.random.default_rng(0)
    sizes = rng.integers(3, 30, 12)
    prefix = write_dataset(tmp_path / "ds", sizes, seed=1, vocab=50)
    build_index(prefix, progress=False)
    write_dataset(tmp_path / "ds", sizes, seed=2, vocab=50)  # same sizes, other tokens
    with pytest.raises(StaleIndexError, match="changed since"):
        NgramIndex(prefix)
    build_index(prefix, progress=False)  # the rebuild is accepted
    write_dataset(tmp_path / "ds", sizes[:-1], seed=2, vocab=50)
    with pytest.raises(StaleIndexError):
        NgramIndex(prefix)


def test_index_build_is_deterministic(world, tmp_path):
    again = build_index(world["prefix"], tmp_path / "sa", shard_tokens=60, progress=False)
    for a, b in zip(world["sharded"].shards, again.shards):
        assert (world["sharded"].dir / a["file"]).read_bytes() == (again.dir / b["file"]).read_bytes()
    toks = np.asarray(world["index"].tokens, np.int64)
    sa = np.asarray(world["index"].shards[0]["sa"], np.int64)
    suffixes = [tuple(toks[i:]) for i in sa]
    assert suffixes == sorted(suffixes) and sorted(sa.tolist()) == list(range(toks.size))
