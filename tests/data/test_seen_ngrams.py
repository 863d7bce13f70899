"""Running unigram/bigram counts of what a member trained on (pythia.data.seen_ngrams) against a
brute-force scan of the batches, and against `pythia data count` (TermCounter) on the same order."""
from __future__ import annotations

import numpy as np
import pytest

from pythia.data.counts import TermCounter
from pythia.data.ngram import build_index
from pythia.data.order import PositionError, PreshuffledOrder, TrainingOrder, num_samples_for
from pythia.data.seen_ngrams import SeenNgramCounter, probe_pairs, seen_counts
from tests.data.conftest import write_dataset
from tests.data.ngram_brute import training_stream

S, B, ITERS, VOCAB = 16, 4, 20, 8
STEPS = [0, 1, 3, 7, 12, 20]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seen")
    rng = np.random.default_rng(11)
    sizes = rng.integers(3, 40, 24)
    sizes[5] = 0  # an empty document
    prefix = write_dataset(tmp / "ds", sizes, seed=4, vocab=VOCAB)
    order = TrainingOrder.build(prefix, S, 3, num_samples_for(ITERS, B), out_dir=tmp, progress=False)
    assert order.num_epochs >= 2
    probe = np.random.default_rng(5).integers(0, VOCAB, (6, 9))  # ids 0, 1: never in the data
    return {"tmp": tmp, "prefix": prefix, "order": order, "probe": probe}


def brute_counts(batches, slots, pairs: set, until: int):
    """Per-step loop: unigrams of each sample's S input tokens; bigrams (w_i, w_i+1), i < S, of
    the probe's pairs whose two tokens sit in one document slot (slots None: always)."""
    uni, bi = np.zeros(VOCAB, np.int64), {}
    for step in range(until):
        tokens = batches(step)
        for r in range(B):
            w, sl = tokens[r], slots(step, r) if slots is not None else None
            for i in range(S):
                uni[w[i]] += 1
                same = sl is None or sl[i] == sl[i + 1]
                if same and (int(w[i]), int(w[i + 1])) in pairs:
                    bi[int(w[i]), int(w[i + 1])] = bi.get((int(w[i]), int(w[i + 1])), 0) + 1
    return uni, bi


def decode_pairs(codes):
    return [(int(c >> 32), int(c & 0xFFFFFFFF)) for c in codes]


def check(states, pairs, batches, slots):
    wanted = set(decode_pairs(pairs))
    for st in states:
        uni, bi = brute_counts(batches, slots, wanted, st.step)
        assert np.array_equal(st.unigram, uni), st.step
        assert st.total == st.step * B * S == uni.sum()
        assert [int(c) for c in st.bigram] == [bi.get(p, 0) for p in decode_pairs(pairs)], st.step


def test_counts_match_a_brute_force_scan_of_the_batches(world):
    order = world["order"]
    toks, slot = training_stream(order)
    pairs = probe_pairs(world["probe"])

    def stream_slots(step, r):
        j = int(order.shuffle_idx[step * B + r])
        assert np.array_equal(toks[j * S:j * S + S + 1], order.sample(step * B + r))
        return slot[j * S:j * S + S + 1]

    states = seen_counts(order, B, STEPS, pairs, VOCAB)
    assert [s.step for s in states] == STEPS
    assert states[-1].bigram.sum() > 0 and (states[-1].bigram == 0).any()
    check(states, pairs, lambda s: order.batch(s, B), stream_slots)


def test_counts_equal_pythia_data_count(world):
    """The same numbers as the suffix-array counter (`pythia data count --until-step`)."""
    order = world["order"]
    counter = TermCounter(build_index(world["prefix"], world["tmp"] / "sa", progress=False), order, B, ITERS)
    pairs = probe_pairs(world["probe"])
    states = seen_counts(order, B, STEPS, pairs, VOCAB)
    for code, (v, w) in zip(pairs, decode_pairs(pairs)):
        by_step = counter.count([v, w])
        assert [by_step.at(st.step) for st in states] == [int(st.bigram[np.searchsorted(pairs, code)]) for st in states]
    for v in range(2, VOCAB):
        by_step = counter.count([v])
        assert [by_step.at(st.step) for st in states] == [int(st.unigram[v]) for st in states]


def test_resuming_from_a_snapshot_gives_the_same_counts(world):
    order, pairs = world["order"], probe_pairs(world["probe"])
    whole = seen_counts(order, B, STEPS, pairs, VOCAB)
    resumed = seen_counts(order, B, STEPS[3:], pairs, VOCAB, start=whole[2])
    for a, b in zip(whole[3:], resumed):
        assert a.step == b.step and a.total == b.total
        assert np.array_equal(a.unigram, b.unigram) and np.array_equal(a.bigram, b.bigram)
    counter = SeenNgramCounter(order, B, pairs, VOCAB, whole[3])
    with pytest.raises(ValueError, match="cannot go back"):
        counter.advance(2)
    with pytest.raises(PositionError, match="holds"):
        counter.advance(counter.num_steps + 1)


def test_preshuffled_rows_count_every_pair(world):
    from pythia.data.preshuffle import export_preshuffled

    out = world["tmp"] / "pre"
    export_preshuffled(world["order"], out, num_positions=ITERS * B, progress=False)
    pre = PreshuffledOrder(out)
    pairs = probe_pairs(world["probe"])
    states = seen_counts(pre, B, STEPS, pairs, VOCAB)
    check(states, pairs, lambda s: pre.batch(s, B), None)


def test_a_fork_counts_what_it_was_fed(world):
    """After from_step the fork read 3 where its base read 2: its counts say so."""
    from pythia.train.intervention import InterventionOrder, Transform

    order = world["order"]
    toks, slot = training_stream(order)
    fork = InterventionOrder(order, Transform(kind="token_map", pairs=((2, 3),)), from_step=5)
    pairs = probe_pairs(world["probe"])

    def stream_slots(step, r):
        j = int(order.shuffle_idx[step * B + r])
        return slot[j * S:j * S + S + 1]

    states = seen_counts(fork, B, STEPS, pairs, VOCAB)
    check(states, pairs, lambda s: fork.batch(s, B), stream_slots)
    at_fork = seen_counts(order, B, [5], pairs, VOCAB)[0]
    base = seen_counts(order, B, STEPS, pairs, VOCAB)
    assert np.array_equal(states[2].unigram, base[2].unigram)  # step 3: before the fork
    assert [st.unigram[2] for st in states[3:]] == [at_fork.unigram[2]] * 3  # no 2 fed from step 5 on
    assert states[-1].unigram[3] - base[-1].unigram[3] == base[-1].unigram[2] - at_fork.unigram[2] > 0


def test_ids_outside_the_vocabulary_are_named(world):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        seen_counts(world["order"], B, [3], probe_pairs(world["probe"]), VOCAB - 3)
