"""Tracing text to the training data (pythia.data.trace) against a brute-force search of the
batches the member trained on: spans, counts, first/last steps, intervals and documents."""
from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from pythia.data.counts import EmptyQueryError, OutOfVocabularyError, TermCounter
from pythia.data.ngram import build_index
from pythia.data.order import PositionError, TrainingOrder, num_samples_for
from pythia.data.provenance import locate
from pythia.data.tokenize import tokenize_corpus
from pythia.data.tokenizer import load_tokenizer
from pythia.data.trace import TraceError, TraceOptions, Tracer, bm25_scores
from tests.data.conftest import WORDS, write_jsonl

S, B, ITERS = 32, 4, 30
ALL = TraceOptions(max_frequency=None, span_density=None, max_documents=1000)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_tokenizer):
    """80 documents of random words with some repeated phrases; the run trains on part of one epoch."""
    tmp = tmp_path_factory.mktemp("trace")
    write_jsonl(tmp / "corpus.jsonl", 80, seed=11)
    prefix = str(tmp / "train")
    tokenize_corpus([tmp / "corpus.jsonl"], tiny_tokenizer, prefix, progress=False)
    order = TrainingOrder.build(prefix, S, 3, num_samples_for(ITERS, B), out_dir=tmp, progress=False)
    index = build_index(prefix, tmp / "sa", progress=False)
    sharded = build_index(prefix, tmp / "sa2", shard_tokens=300, progress=False)
    assert len(sharded.shards) > 2
    trained_tokens = ITERS * B * S
    assert trained_tokens < order.dataset.num_tokens  # part of the data is never trained: spans must not use it
    return {"prefix": prefix, "order": order, "index": index, "sharded": sharded, "tok": load_tokenizer(tiny_tokenizer),
            "tok_path": tiny_tokenizer}


def tracer(world, index="index", step_index=True) -> Tracer:
    return Tracer(TermCounter(world[index], world["order"], B, ITERS, world["tok_path"], step_index=step_index))


# -- the brute force: every trained batch scanned, nothing from the suffix array --------------------------

class Brute:
    """Occurrences in the samples of updates 0..ITERS-1: inside one document, first token at an input position."""

    def __init__(self, world):
        order = world["order"]
        ds = order.dataset
        doc_idx = np.asarray(order.doc_idx)
        stream = np.concatenate([np.asarray(ds[int(d)], np.int64) for d in doc_idx])
        slot = np.repeat(np.arange(doc_idx.size), ds.sizes[doc_idx])
        starts = np.cumsum(ds.sizes[doc_idx]) - ds.sizes[doc_idx]
        pos = np.arange(ITERS * B)
        j = np.asarray(order.shuffle_idx)[pos].astype(np.int64)
        cols = j[:, None] * S + np.arange(S + 1)  # (P, S+1) stream positions of each trained sample
        self.W, self.slot, self.g = stream[cols], slot[cols], cols
        for k in (0, 5, len(pos) - 1):
            assert np.array_equal(self.W[k], order.sample(int(pos[k])))  # the scan reads what was trained
        self.step = pos // B
        self.doc_of_slot, self.slot_start = doc_idx, starts

    def occurrences(self, pattern) -> list[tuple[int, int, int]]:
        """(step, document, offset in the document) of every counted occurrence."""
        n = len(pattern)
        if n > S + 1:
            return []
        win = sliding_window_view(self.W, n, axis=1)[:, :S]  # (P, <=S, n): windows starting at inputs
        sl = sliding_window_view(self.slot, n, axis=1)[:, :S]
        hit = np.all(win == np.asarray(pattern), axis=2) & (sl[:, :, 0] == sl[:, :, -1])
        out = []
        for k, i in zip(*np.nonzero(hit)):
            s = int(self.slot[k, i])
            out.append((int(self.step[k]), int(self.doc_of_slot[s]), int(self.g[k, i] - self.slot_start[s])))
        return out

    def count(self, pattern) -> int:
        return len(self.occurrences(pattern))


def word_bounds(tok, ids):
    """Independent word boundaries: decode each token, a boundary unless letters/digits/_ meet."""
    texts = [tok.decode([i], skip_special_tokens=False) for i in ids]
    inner = lambda c: c.isalnum() or c in "_\ufffd"  # noqa: E731
    return [True] + [not (a and b and inner(a[-1]) and inner(b[0])) for a, b in zip(texts, texts[1:])] + [True], texts


def brute_spans(world, brute, ids, opts: TraceOptions):
    tok = world["tok"]
    bounds, texts = word_bounds(tok, ids)
    delim = [any(d in t for d in opts.delimiters) for t in texts]
    spans, last = [], 0
    for a in range(len(ids)):
        if opts.whole_words and not bounds[a]:
            continue
        length = 0
        while a + length < len(ids) and brute.count(ids[a:a + length + 1]):
            length += 1
        for p in range(a, a + length - 1):
            if delim[p]:
                length = p - a + 1
                break
        while opts.whole_words and length and not bounds[a + length]:
            length -= 1
        if length < opts.min_length:
            continue
        if opts.max_frequency is not None and brute.count(ids[a:a + length]) > opts.max_frequency:
            continue
        if a + length > last:
            spans.append((a, a + length))
            last = a + length
    return spans


def texts_to_trace(world):
    """A document's own words, a mix of trained phrases and new words, and random words."""
    ds, order, tok = world["order"].dataset, world["order"], world["tok"]
    k = 7  # a document trained early
    first_doc = locate(order, k)[0]["document"]
    copied = tok.decode(np.asarray(ds[first_doc][:40]).tolist())
    rng = np.random.default_rng(5)
    mixed = " ".join(rng.choice(WORDS, 12)) + " " + tok.decode(order.sample(40)[5:30].tolist()) + " zebra"
    return [copied, mixed, " ".join(rng.choice(WORDS, 25))]


@pytest.mark.parametrize("opts", [ALL, TraceOptions(max_documents=1000), TraceOptions(whole_words=False, delimiters=(),
                                                                                      max_frequency=3, span_density=0.2,
                                                                                      max_documents=1000),
                                  TraceOptions(rank="rarity", span_density=0.1, max_frequency=5, max_documents=1000)])
def test_spans_counts_and_steps_equal_brute_force(world, opts):
    brute = Brute(world)
    t = tracer(world)
    logp = t.unigram_logprob
    for text in texts_to_trace(world):
        ids = t.counter.encode(text)
        want = brute_spans(world, brute, ids, opts)
        if opts.span_density is not None:
            score = (lambda s: (-(s[1] - s[0]), s[0])) if opts.rank == "length" else \
                (lambda s: (float(logp[ids[s[0]:s[1]]].sum()), s[0]))
            want = sorted(sorted(want, key=score)[:math.ceil(opts.span_density * len(ids))])
        for until in (0, 9, ITERS):
            got = t.trace(ids, until_step=until, options=opts, checkpoint_steps=[4, 16], text=text)
            assert [(s.start, s.end) for s in got.spans] == want, text
            for s in got.spans:
                occ = brute.occurrences(ids[s.start:s.end])
                steps = sorted(o[0] for o in occ)
                assert s.count == len(occ) > 0
                assert s.count_until_step == sum(1 for x in steps if x < until)
                assert (s.first_step, s.last_step) == (steps[0], steps[-1])
                assert [i["count"] for i in s.intervals] == [sum(1 for x in steps if a <= x < b)
                                                             for a, b in ((0, 4), (4, 16), (16, ITERS))]
                docs = {}
                for step, d, off in occ:
                    docs.setdefault(d, []).append(step)
                assert {d["document"]: (d["trained"], d["first_step"]) for d in s.documents} == \
                    {d: (len(v), min(v)) for d, v in docs.items()}
                assert s.documents_total == len(docs)
                for d in s.documents:
                    body = np.asarray(world["order"].dataset[d["document"]]).tolist()
                    assert body[d["offset"]:d["offset"] + s.length] == ids[s.start:s.end]
                    assert d["seen_by_step"] == (d["first_step"] < until)


def test_sharded_index_and_no_sidecar_give_the_same_trace(world):
    text = texts_to_trace(world)[1]
    base = tracer(world).trace(tracer(world).counter.encode(text), options=ALL).to_json()
    for other in (tracer(world, "sharded"), tracer(world, step_index=False)):
        assert other.trace(other.counter.encode(text), options=ALL).to_json() == base


def test_a_copied_document_is_among_its_spans_documents(world):
    order, tok = world["order"], world["tok"]
    t = tracer(world)
    for k in (3, 50, 90):
        doc = locate(order, k)[0]["document"]
        body = np.asarray(order.dataset[doc]).tolist()[:-1]  # without the end-of-document token
        text = tok.decode(body[:30])
        got = t.trace(t.counter.encode(text), options=TraceOptions(max_frequency=None, span_density=None))
        assert got.spans
        assert any(d["document"] == doc for s in got.spans for d in s.documents), (k, doc)
        meta = [d["source"] for s in got.spans for d in s.documents if d["document"] == doc][0]
        assert meta["file"].endswith("corpus.jsonl") and meta["location"] is not None


def test_a_span_seen_only_after_step_s(world):
    """A phrase whose every trained occurrence comes late: count_until_step 0, first_step > S."""
    brute, t, tok = Brute(world), tracer(world), world["tok"]
    late = None
    for k in range(ITERS * B - 1, 0, -1):
        seg = max(locate(world["order"], k), key=lambda r: r["doc_end"] - r["doc_start"])
        doc = np.asarray(world["order"].dataset[seg["document"]]).tolist()
        piece = doc[seg["doc_start"]:seg["doc_end"]][:12]
        occ = brute.occurrences(piece)
        if len(piece) == 12 and occ and min(o[0] for o in occ) > 20:
            late = piece
            break
    assert late is not None
    until = 15
    got = t.trace(late, until_step=until, options=TraceOptions(max_frequency=None, span_density=None,
                                                               whole_words=False, delimiters=()))
    longest = max(got.spans, key=lambda s: s.length)
    assert (longest.start, longest.end) == (0, 12)
    assert longest.count_until_step == 0 and longest.first_step > until and longest.count > 0
    assert not any(d["seen_by_step"] for d in longest.documents)


def test_bm25_orders_documents_by_relevance(world):
    scores = bm25_scores(["cat sat on the mat", "dogs ran far away", "cat cat cat mat"], "the cat on a mat")
    assert scores[1] == 0 and scores[0] > 0 and scores[2] > 0
    t = tracer(world)
    text = texts_to_trace(world)[0]
    got = t.trace(t.counter.encode(text), options=TraceOptions(max_frequency=None, span_density=None, bm25=True))
    for s in got.spans:
        assert [d["bm25"] for d in s.documents] == sorted((d["bm25"] for d in s.documents), reverse=True)


def test_deterministic_and_document_sample_is_seeded(world):
    t = tracer(world)
    ids = t.counter.encode(" the")
    opts = TraceOptions(max_frequency=None, span_density=None, max_documents=2, whole_words=False, delimiters=())
    a, b = t.trace(ids, options=opts).to_json(), tracer(world).trace(ids, options=opts).to_json()
    assert a == b
    assert any(s["documents_total"] > 2 and len(s["documents"]) == 2 for s in a["spans"])


def test_bad_input(world):
    t = tracer(world)
    with pytest.raises(EmptyQueryError):
        t.counter.encode("")
    with pytest.raises(EmptyQueryError):
        t.trace([])
    with pytest.raises(OutOfVocabularyError, match="outside the vocabulary"):
        t.trace([5, 10**6])
    with pytest.raises(PositionError, match="beyond the run"):
        t.trace([5, 6], until_step=ITERS + 1)
    with pytest.raises(TraceError, match="--span-density"):
        t.trace([5, 6], options=TraceOptions(span_density=2.0))
    with pytest.raises(TraceError, match="--rank"):
        TraceOptions(rank="size").check()
    no_tok = Tracer(TermCounter(world["index"], world["order"], B, ITERS))
    with pytest.raises(TraceError, match="need a tokenizer"):
        no_tok.trace([5, 6, 7])
    plain = no_tok.trace([5, 6, 7], options=TraceOptions(whole_words=False, delimiters=()))
    assert plain.text is None and all(s.text is None for s in plain.spans)
