"""The per-order step sidecar (pythia.data.stepindex) against a brute-force scan of the order's
samples and against the suffix-array-only path, across epoch and sample boundaries; staleness."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pythia.data import stepindex
from pythia.data.counts import TermCounter
from pythia.data.indexed import IndexedDatasetBuilder
from pythia.data.ngram import build_index
from pythia.data.order import PreshuffledOrder, TrainingOrder, num_samples_for
from pythia.data.stepindex import (StaleStepIndexError, StepIndex, open_step_index, order_record, step_index_dir,
                                   tally)
from tests.data.ngram_brute import brute, training_stream

S, B, ITERS = 16, 3, 25


def write_skewed(prefix, n_docs: int, seed: int) -> str:
    """Documents of 0..60 tokens, ids 2..9 with Zipf-like weights: common 1-grams (counted by
    bisection) and rare ones (by bincount), n-grams that cross sample ends."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, 9)
    with IndexedDatasetBuilder(prefix, np.uint16) as b:
        for _ in range(n_docs):
            b.add_document(rng.choice(np.arange(2, 10), int(rng.integers(0, 60)), p=p / p.sum()))
    return str(prefix)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steps")
    prefix = write_skewed(tmp / "ds", 16, seed=4)
    order = TrainingOrder.build(prefix, S, 9, num_samples_for(ITERS, B), out_dir=tmp, progress=False)
    assert order.num_epochs >= 3
    return {"tmp": tmp, "prefix": prefix, "order": order, "stream": training_stream(order),
            "indexes": [build_index(prefix, tmp / "sa", progress=False),
                        build_index(prefix, tmp / "sa-sharded", shard_tokens=90, progress=False)]}


def per_step(order, pattern, stream) -> np.ndarray:
    per_pos = brute(order, pattern, range(order.num_positions), stream=stream)
    steps = -(-order.num_positions // B)
    return np.bincount(np.arange(order.num_positions) // B, weights=per_pos, minlength=steps).astype(np.int64)


def patterns(order, rng) -> list[list[int]]:
    """1- to 8-grams and a 17-gram (> S+1: never counted) from the documents either side of each
    epoch boundary of doc_idx (their copies fall in samples that hold two epochs), plus random ones."""
    ds, n = order.dataset, len(order.dataset)
    docs = [int(order.doc_idx[e * n + d]) for e in range(1, order.num_epochs) for d in (-1, 0)]
    out = [[2], [3], [9], [9, 9], [2, 2, 2]]
    for d in docs + rng.integers(0, n, 6).tolist():
        toks = np.asarray(ds[d], np.int64)
        for length in (1, 2, 3, 5, 8, 17):
            if toks.size >= length:
                a = int(rng.integers(0, toks.size - length + 1))
                out.append(toks[a:a + length].tolist())
    return out


def test_sidecar_matches_brute_force_and_the_suffix_array_path(world):
    order, stream = world["order"], world["stream"]
    rng = np.random.default_rng(0)
    for index in world["indexes"]:
        fast = TermCounter(index, order, B, ITERS)
        slow = TermCounter(index, order, B, ITERS, step_index=False)
        assert fast.steps is not None and slow.steps is None
        counted = 0
        for pattern in patterns(order, rng):
            want = per_step(order, pattern, stream)
            got, ref = fast.count(pattern), slow.count(pattern)
            assert np.array_equal(got.step_counts, want), pattern
            assert np.array_equal(ref.step_counts, want), pattern
            assert got.corpus_count == ref.corpus_count and got.first_step == ref.first_step
            assert got.count == want[:ITERS].sum()
            counted += want.sum() > 0
        assert counted > 10


def test_sidecar_counts_every_epoch_copy(world):
    """A document's occurrences are counted once per epoch copy: with every step counted, the
    sidecar's total is the brute force's, and more than the occurrences in the dataset."""
    order, index = world["order"], world["indexes"][0]
    counter = TermCounter(index, order, B, ITERS)
    got = counter.count([2], until_step=counter.num_steps)
    assert got.count == per_step(order, [2], world["stream"]).sum() > got.corpus_count


def test_preshuffled_sidecar(world):
    from pythia.data.preshuffle import export_preshuffled

    out = world["tmp"] / "pre"
    export_preshuffled(world["order"], out, num_positions=ITERS * B, progress=False)
    pre, index = PreshuffledOrder(out), build_index(out, progress=False)
    fast, slow = TermCounter(index, pre, B, ITERS), TermCounter(index, pre, B, ITERS, step_index=False)
    assert fast.steps is not None
    for pattern in ([2], [3, 2], [2, 2, 2], list(range(2, 10))):
        a, b = fast.count(pattern), slow.count(pattern)
        assert np.array_equal(a.step_counts, b.step_counts) and a.corpus_count == b.corpus_count


def test_stale_sidecar_refused_and_rebuilt(world, tmp_path):
    import shutil

    for f in world["tmp"].glob("ds.*"):  # a private copy: the order files are rewritten below
        shutil.copy(f, tmp_path / f.name)
    prefix = str(tmp_path / "ds")
    order = TrainingOrder.build(prefix, S, 9, num_samples_for(ITERS, B), out_dir=tmp_path, progress=False)
    index = build_index(prefix, tmp_path / "sa", progress=False)
    counter = TermCounter(index, order, B, ITERS)
    before = counter.count([3, 2]).step_counts
    record = order_record(index, order, B)
    path = step_index_dir(index, record)
    assert (path / "manifest.json").is_file()

    with pytest.raises(StaleStepIndexError, match="batch_size"):
        StepIndex(index, path, order_record(index, order, B + 1))

    # the order's files rewritten in place (same name and shape, another shuffle): refused, then rebuilt
    shuffle = np.load(f"{order.stem}_shuffle_idx.npy")
    np.save(f"{order.stem}_shuffle_idx.npy", shuffle[::-1].copy())
    order2 = TrainingOrder.build(prefix, S, 9, num_samples_for(ITERS, B), out_dir=tmp_path, progress=False)
    with pytest.raises(StaleStepIndexError, match="order"):
        StepIndex(index, path, order_record(index, order2, B))
    with pytest.raises(StaleStepIndexError):
        open_step_index(index, order2, B, build=False)
    counter2 = TermCounter(index, order2, B, ITERS)
    after = counter2.count([3, 2]).step_counts
    assert json.loads((path / "manifest.json").read_text()) == order_record(index, order2, B)
    assert np.array_equal(after, per_step(order2, [3, 2], training_stream(order2)))
    assert not np.array_equal(after, before)

    # a damaged sidecar (wrong shape) is refused and rebuilt too
    np.save(path / "shard-00000.steps.npy", np.zeros((3, 1), np.uint16))
    with pytest.raises(StaleStepIndexError, match="shape"):
        StepIndex(index, path, order_record(index, order2, B))
    again = TermCounter(index, order2, B, ITERS).count([3, 2]).step_counts
    assert np.array_equal(again, after)


def test_unwritable_sidecar_falls_back(world, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(stepindex, "build_step_index", refuse)
    index = build_index(world["prefix"], tmp_path / "sa", progress=False)
    counter = TermCounter(index, world["order"], B, ITERS)
    with pytest.warns(UserWarning, match="counting without it"):
        got = counter.count([2, 3])
    assert counter.steps is None
    assert np.array_equal(got.step_counts, per_step(world["order"], [2, 3], world["stream"]))


def test_stored_tables_and_small_blocks(world, monkeypatch, tmp_path):
    """With every 1- and 2-gram range stored (HIST_MIN 0) and the build done in blocks of 5, the
    stored counts are the brute force's, and the other arrays are those of the default build."""
    order, prefix = world["order"], world["prefix"]
    whole = TermCounter(world["indexes"][0], order, B, ITERS).steps
    monkeypatch.setattr(stepindex, "CHUNK", 5)
    monkeypatch.setattr(stepindex, "HIST_MIN", 0)
    for index in (build_index(prefix, tmp_path / "sa", progress=False),
                  build_index(prefix, tmp_path / "sa-sharded", shard_tokens=90, progress=False)):
        counter = TermCounter(index, order, B, ITERS)
        slow = TermCounter(index, order, B, ITERS, step_index=False)
        sides = counter.steps.shards
        assert sum(side["keys2"].shape[0] for side in sides) > 20

        def not_stored(*args):
            raise AssertionError("a 1- or 2-gram counted from the columns, not from its stored counts")

        monkeypatch.setattr(stepindex, "tally", not_stored)  # built: from here every count is a stored row
        for pattern in [[a] for a in range(2, 10)] + [[a, b] for a in range(2, 10) for b in range(2, 10)]:
            got, ref = counter.count(pattern), slow.count(pattern)
            assert np.array_equal(got.step_counts, per_step(order, pattern, world["stream"])), pattern
            assert got.corpus_count == ref.corpus_count, pattern
        monkeypatch.setattr(stepindex, "tally", tally)
        if len(sides) == 1:
            for k in ("steps", "room"):
                assert np.array_equal(sides[0][k], whole.shards[0][k])


def test_size_guard_falls_back_with_one_warning(world, monkeypatch, tmp_path):
    """Over the limit (DEFAULT_MAX made tiny): nothing is built, one warning naming the estimate,
    the limit and how to build it anyway, and the suffix-array path's answers (the brute force's)."""
    monkeypatch.delenv(stepindex.MAX_ENV, raising=False)
    monkeypatch.setattr(stepindex, "DEFAULT_MAX", 100)
    order, index = world["order"], build_index(world["prefix"], tmp_path / "sa", progress=False)
    ref = TermCounter(world["indexes"][0], order, B, ITERS)
    assert ref.steps is not None
    with pytest.warns(UserWarning) as caught:
        counters = [TermCounter(index, order, B, ITERS) for _ in range(2)]  # e.g. two analyses, one index
        for counter in counters:
            assert counter.steps is None
            for pattern in ([2], [3, 2], [2, 2, 2], [9, 9]):
                got, want = counter.count(pattern), ref.count(pattern)
                assert np.array_equal(got.step_counts, per_step(order, pattern, world["stream"])), pattern
                assert np.array_equal(got.step_counts, want.step_counts) and got.corpus_count == want.corpus_count
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    need = stepindex.estimate_bytes(index, order_record(index, order, B))
    assert f"up to {stepindex.human(need)}, over 100 B (the default limit" in messages[0]
    assert "count-index --run" in messages[0] and stepindex.MAX_ENV in messages[0]
    assert not list((tmp_path / "sa").glob("*steps-*"))

    monkeypatch.setenv(stepindex.MAX_ENV, "inf")  # the environment raises the limit: built
    assert TermCounter(index, order, B, ITERS).steps is not None
    monkeypatch.setenv(stepindex.MAX_ENV, "many")
    with pytest.raises(ValueError, match=stepindex.MAX_ENV):
        stepindex.size_limit(tmp_path)


def test_size_guard_limits(world, monkeypatch, tmp_path):
    """The estimate bounds the built size; the environment and step_index_max set the limit; the
    free disk space (less a margin) caps it whatever was asked."""
    order = world["order"]
    for index in world["indexes"]:
        built = TermCounter(index, order, B, ITERS).steps.dir
        need = stepindex.estimate_bytes(index, order_record(index, order, B))
        assert stepindex.sidecar_bytes(built) <= need <= 2 * stepindex.sidecar_bytes(built) + 8192

    index = build_index(world["prefix"], tmp_path / "sa", progress=False)
    monkeypatch.setenv(stepindex.MAX_ENV, "1KiB")
    assert TermCounter(index, order, B, ITERS, step_index_max=1e9).steps is not None  # the argument wins
    assert stepindex.size_limit(tmp_path)[:2] == (1024, f"{stepindex.MAX_ENV}=1KiB")

    class Usage:
        free = 5000
    monkeypatch.setattr(stepindex.shutil, "disk_usage", lambda path: Usage)
    limit, why, disk = stepindex.size_limit(tmp_path / "not" / "yet", math.inf)
    assert (limit, disk) == (4500, True) and "free space" in why
    other = build_index(world["prefix"], tmp_path / "sa2", progress=False)
    with pytest.warns(UserWarning, match=r"over 4.39 KiB \(the free space .*larger disk \(--index DIR\)"):
        assert TermCounter(other, order, B, ITERS, step_index_max=math.inf).steps is None
    with pytest.raises(stepindex.StepIndexSizeError, match="free space"):
        stepindex.prebuild_step_index(other, order, B, lambda: None)


def test_parse_size():
    assert stepindex.parse_size("16GiB") == 16 * 2**30 == stepindex.parse_size("16 g")
    assert stepindex.parse_size("500MB") == 5e8 and stepindex.parse_size("0") == 0
    assert stepindex.parse_size("inf") == math.inf and stepindex.parse_size(1e9) == 1e9
    for bad in ("-1G", "lots", "5XB", "nan"):
        with pytest.raises(ValueError, match="a size such as"):
            stepindex.parse_size(bad)


def test_failed_build_leaves_nothing(world, monkeypatch, tmp_path):
    """A build that fails half-way (a full disk) leaves no sidecar and no temporary folder."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stepindex, "_write_tables", full)  # after the columns are written
    index = build_index(world["prefix"], tmp_path / "sa", progress=False)
    before = sorted(p.name for p in (tmp_path / "sa").iterdir())
    counter = TermCounter(index, world["order"], B, ITERS)
    with pytest.warns(UserWarning, match="No space left"):
        assert counter.steps is None
    assert sorted(p.name for p in (tmp_path / "sa").iterdir()) == before
    with pytest.raises(OSError):
        open_step_index(index, world["order"], B, smap=lambda: counter.map, strict=True)
