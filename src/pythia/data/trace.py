"""Trace a text back to what a member trained on, and say when each part of it was seen.

OLMoTrace (Liu et al. 2025, "OLMoTrace: Tracing Language Model Outputs Back to Trillions of
Training Tokens", arXiv 2504.07096) shows, for a model's output, the longest spans that occur
verbatim in the training data and documents holding them. Its span search is infini-gram's
`attribute` (github.com/liujch1998/infini-gram, pkg/infini_gram/cpp_engine.h): for every start
position the longest prefix of the rest of the text found by one binary search in the suffix
array (the longest common prefix with the two suffixes around the insertion point), cut after
the first delimiter, backed off to a word end; spans occurring more than `max_frequency` times
are dropped, and a span is kept only if it ends after every span kept before it (maximal).
The infini-gram API then keeps the ceil(span_density x tokens) longest (the paper ranks by the
span's unigram probability instead: `rank="rarity"`).

What this module adds is *when*. "Occurs in the training data" means here: occurs in what the
member trained on, under the definition of counts.py (inside a document, counted at the step
of the sample whose input positions hold its first token, once per epoch copy, updates
0..trained_steps-1), not merely somewhere in the dataset file (a run may train on a fraction of
it). For every span: its count over training, what checkpoint `until_step` had seen, its first
and last step, occurrences per checkpoint interval, and up to `max_documents` documents holding
a trained occurrence (metadata, offset, context, the step each was trained), optionally
re-ranked by BM25 against the text (bm25s, Lu 2024, arXiv 2407.03618: numpy only).

Search cost: per start position one bisection for the dataset-wide longest prefix (an upper
bound; each probe compares at most twice the previous start's bound, at least 16 tokens, and
widens while a match fills it); a start whose bound ends inside a kept span is skipped; else
counts through the order's step sidecar (stepindex.py) find the longest prefix with a trained
occurrence (usually the first count). Prefixes of a trained occurrence are trained occurrences
(same sample, same first token), so that search is a bisection too.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .counts import QueryError, TermCounter
from .order import PositionError
from .stepindex import ROOM_MAX

RANKS = ("length", "rarity")
DELIMITERS = ("\n", ".")


class TraceError(QueryError):
    """A trace that cannot be made as asked (the message names the option)."""


@dataclass(frozen=True)
class TraceOptions:
    """OLMoTrace's filters (defaults: the paper's) and what to report per span."""

    whole_words: bool = True
    """Spans start and end at word boundaries (a token pair where either side is not a letter,
    digit or underscore), or at the text's ends."""
    delimiters: tuple[str, ...] = DELIMITERS
    """A span holds no token containing one of these, except as its last token."""
    max_frequency: int | None = 10
    """Spans trained on more than this many times are dropped (None: no limit)."""
    span_density: float | None = 0.05
    """Keep ceil(span_density x tokens) spans, the best ranked (None: all)."""
    rank: str = "length"
    """"length" (longest first) or "rarity" (lowest sum of unigram log-probabilities first)."""
    min_length: int = 1
    max_documents: int = 10
    """Documents listed per span (a seeded sample when more hold it; 0: none looked up)."""
    context: int = 32
    """Tokens of context shown on each side of a span in its documents."""
    bm25: bool = False
    """Order each span's documents by BM25 relevance to the text (else by step seen)."""
    seed: int = 0

    def check(self) -> "TraceOptions":
        if self.rank not in RANKS:
            raise TraceError(f"--rank must be one of {', '.join(RANKS)}, not {self.rank!r}")
        if self.max_frequency is not None and self.max_frequency < 1:
            raise TraceError(f"--max-frequency must be >= 1, got {self.max_frequency}")
        if self.span_density is not None and not 0 < self.span_density <= 1:
            raise TraceError(f"--span-density must be in (0, 1], got {self.span_density}")
        for name in ("min_length", "max_documents", "context"):
            if getattr(self, name) < (1 if name == "min_length" else 0):
                raise TraceError(f"--{name.replace('_', '-')} must be >= {1 if name == 'min_length' else 0}, "
                                 f"got {getattr(self, name)}")
        if any(not d for d in self.delimiters):
            raise TraceError("--delimiters: an empty delimiter would cut every span")
        return self


@dataclass
class Span:
    """One maximal span of the text found in the training data (token offsets, end exclusive)."""

    start: int
    end: int
    text: str | None
    count: int
    """Occurrences in everything the member trained on (updates 0..trained_steps-1)."""
    count_until_step: int
    """Occurrences in updates 0..until_step-1: what checkpoint `until_step` had seen."""
    corpus_count: int
    """Occurrences in the dataset's documents, each once (trained or not)."""
    first_step: int | None
    last_step: int | None
    intervals: list[dict]
    """{"from": a, "to": b, "count": n}: occurrences in updates a..b-1, between checkpoints."""
    unigram_logprob: float
    documents: list[dict] = field(default_factory=list)
    documents_total: int = 0
    tokens: list[int] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict:
        out = asdict(self)
        out["length"] = self.length
        return out


@dataclass
class Trace:
    """The spans of one text, with what the checkpoint at `until_step` had seen of each."""

    tokens: list[int]
    text: str | None
    token_texts: list[str] | None
    """Each token decoded alone (for drawing the spans over the text)."""
    until_step: int
    trained_steps: int
    spans: list[Span]
    candidates: int
    """Maximal spans found before the span-density cut."""
    options: TraceOptions
    dataset: str
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "token_texts": self.token_texts,
                "until_step": self.until_step, "trained_steps": self.trained_steps,
                "spans": [s.to_json() for s in self.spans], "candidates": self.candidates,
                "options": asdict(self.options), "dataset": self.dataset} | self.extra


def _longest_match(shard: dict, pattern: list[int]) -> int:
    """Tokens of the longest prefix of `pattern` that begins some suffix of the shard (an upper
    bound of its longest occurrence inside a document): the longest common prefix with the two
    suffixes around the pattern's insertion point in the suffix array, as infini-gram does."""
    tokens, sa, ranks = shard["tokens"], shard["sa"], shard["ranks"]
    t = pattern[0]
    if t + 1 >= ranks.shape[0] or ranks[t] == ranks[t + 1]:
        return 0
    lo, hi, n = int(ranks[t]), int(ranks[t + 1]), len(pattern)
    if n == 1:
        return 1
    rest = pattern[1:]  # lists compare as the suffix array sorts (see ngram.search_one)
    at = lo + bisect.bisect_left(range(lo, hi), rest, key=lambda r: tokens[int(sa[r]) + 1:int(sa[r]) + n].tolist())
    best = 1
    for r in (at - 1, at):
        if lo <= r < hi:
            s = int(sa[r])
            window = tokens[s + 1:s + n].tolist()
            i = 0
            while i < len(window) and window[i] == rest[i]:
                i += 1
            best = max(best, i + 1)
    return best


class Tracer:
    """Maximal spans of token sequences in what one order trained on (a TermCounter's)."""

    def __init__(self, counter: TermCounter, trained_steps: int | None = None):
        if counter.order is None:
            raise TraceError("tracing needs a training order (a run member), not a bare dataset")
        self.counter, self.index = counter, counter.index
        self.trained_steps = int(trained_steps if trained_steps is not None else
                                 counter.train_iters if counter.train_iters is not None else counter.num_steps)
        self._hists: dict[tuple, tuple[np.ndarray, int]] = {}
        self._unigram: np.ndarray | None = None

    # -- counts ----------------------------------------------------------------------------
    def hist(self, ids) -> tuple[np.ndarray, int]:
        """(steps of the order,) occurrences per step and the dataset count of one n-gram (cached)."""
        key = tuple(int(i) for i in ids)
        if key not in self._hists:
            side = self.counter.steps
            if side is not None and len(key) <= ROOM_MAX:  # what counter.count reads, without its checks
                self._hists[key] = side.count(key)
            else:
                tc = self.counter.count(list(key), until_step=self.trained_steps)
                self._hists[key] = (tc.step_counts, tc.corpus_count)
        return self._hists[key]

    def trained(self, ids) -> int:
        """Occurrences trained on in updates 0..trained_steps-1."""
        return int(self.hist(ids)[0][:self.trained_steps].sum())

    def upper_bound(self, ids: list[int], start: int, guess: int = 0) -> int:
        """Tokens of the longest prefix of ids[start:] found anywhere in the dataset's token file:
        no trained occurrence is longer. Each probe compares at most `cap` tokens, from twice the
        guess (the previous start's bound) up, doubled while a match fills it."""
        cap = max(16, 2 * guess)
        while True:
            pattern = ids[start:start + cap]
            upper = max((_longest_match(s, pattern) for s in self.index.shards), default=0)
            if upper < len(pattern) or start + cap >= len(ids):
                return upper
            cap *= 2

    def longest_prefix(self, ids: list[int], start: int, upper: int | None = None) -> int:
        """Tokens of the longest prefix of ids[start:] that the member trained on (0: none)."""
        upper = self.upper_bound(ids, start) if upper is None else upper
        if upper == 0 or self.trained(ids[start:start + upper]):
            return upper
        lo, hi = 0, upper  # trained(lo) (or lo = 0), not trained(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.trained(ids[start:start + mid]):
                lo = mid
            else:
                hi = mid
        return lo

    @property
    def unigram_logprob(self) -> np.ndarray:
        """log(count / tokens) of every token id in the dataset (-inf where absent)."""
        if self._unigram is None:
            counts = np.zeros(self.counter.vocab_size, np.int64)
            for s in self.index.shards:
                c = np.diff(np.asarray(s["ranks"], np.int64))[:counts.size]
                counts[:c.size] += c
            with np.errstate(divide="ignore"):
                self._unigram = np.log(counts / max(int(counts.sum()), 1))
        return self._unigram

    # -- the text --------------------------------------------------------------------------
    def token_texts(self, ids: list[int]) -> list[str] | None:
        if self.counter.tokenizer_path is None:
            return None
        return self.counter.tokenizer.decode_batch([[i] for i in ids], skip_special_tokens=False)

    def decode(self, ids) -> str | None:
        if self.counter.tokenizer_path is None:
            return None
        return self.counter.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def _filters(self, ids: list[int], options: TraceOptions) -> tuple[np.ndarray, np.ndarray]:
        """(n+1,) word boundary before each position and at the end; (n,) delimiter tokens."""
        n = len(ids)
        bounds, delim = np.ones(n + 1, bool), np.zeros(n, bool)
        if not options.whole_words and not options.delimiters:
            return bounds, delim
        if self.counter.tokenizer_path is None:
            raise TraceError(f"whole-word spans and delimiters need a tokenizer, and none is known for "
                             f"{self.index.dataset.prefix}: turn them off (--partial-words --delimiters '')")
        texts = self.token_texts(ids)
        if options.whole_words:
            def word(ch: str) -> bool:
                return ch.isalnum() or ch == "_" or ch == "\ufffd"  # a lone byte of a multi-byte character
            for i in range(1, n):
                a, b = texts[i - 1], texts[i]
                bounds[i] = not (a and b and word(a[-1]) and word(b[0]))
        delim[:] = [any(d in t for d in options.delimiters) for t in texts]
        return bounds, delim

    def maximal_spans(self, ids: list[int], options: TraceOptions) -> list[tuple[int, int]]:
        """OLMoTrace's spans before ranking: [start, end) pairs in order of start."""
        ids = [int(i) for i in ids]
        bounds, delim = self._filters(ids, options)
        kept, last_end, upper = [], 0, 0
        for start in range(len(ids)):
            if options.whole_words and not bounds[start]:
                continue
            upper = self.upper_bound(ids, start, upper)
            if start + upper <= last_end:
                continue  # inside a kept span whatever its counts: not maximal
            length = self.longest_prefix(ids, start, upper)
            cut = np.flatnonzero(delim[start:start + length - 1])
            if cut.size:
                length = int(cut[0]) + 1
            if options.whole_words:
                while length > 0 and not bounds[start + length]:
                    length -= 1
            if length < options.min_length:
                continue
            if options.max_frequency is not None and self.trained(ids[start:start + length]) > options.max_frequency:
                continue
            if start + length > last_end:
                kept.append((start, start + length))
                last_end = start + length
        return kept

    # -- the whole trace -------------------------------------------------------------------
    def trace(self, ids, *, until_step: int | None = None, options: TraceOptions | None = None,
              checkpoint_steps=(), text: str | None = None, query: str | None = None) -> Trace:
        """Trace token ids (checked against the vocabulary). until_step: the checkpoint whose
        knowledge `count_until_step` reports (default: the end of training); checkpoint_steps:
        the bounds of the per-interval counts; query: the text BM25 ranks documents against
        (default: the traced text)."""
        options = (options or TraceOptions()).check()
        ids = self.counter.check_ids(ids)
        until = self.trained_steps if until_step is None else int(until_step)
        if not 0 <= until <= self.trained_steps:
            raise PositionError(f"step {until} is beyond the run: it trained {self.trained_steps} steps "
                                f"(steps 0..{self.trained_steps})")
        found = self.maximal_spans(ids, options)
        logp = self.unigram_logprob
        scored = [(a, b, float(logp[ids[a:b]].sum())) for a, b in found]
        if options.span_density is not None:
            keep = math.ceil(options.span_density * len(ids))
            by = (lambda s: (-(s[1] - s[0]), s[0])) if options.rank == "length" else (lambda s: (s[2], s[0]))
            scored = sorted(sorted(scored, key=by)[:keep])
        bounds = sorted({0, self.trained_steps} | {int(s) for s in checkpoint_steps if 0 < int(s) < self.trained_steps})
        spans = [self._span(ids, a, b, lp, until, bounds) for a, b, lp in scored]
        self._documents(ids, spans, options, until, query if query is not None else text)
        return Trace(ids, text if text is not None else self.decode(ids), self.token_texts(ids), until,
                     self.trained_steps, spans, len(found), options, str(self.index.dataset.prefix))

    def _span(self, ids, a: int, b: int, logprob: float, until: int, bounds: list[int]) -> Span:
        hist, corpus = self.hist(ids[a:b])
        trained = np.zeros(self.trained_steps, np.int64)  # the order may hold fewer steps (a partial file)
        trained[:min(hist.size, self.trained_steps)] = hist[:self.trained_steps]
        hit = np.flatnonzero(trained)
        cum = np.concatenate([[0], np.cumsum(trained)])
        intervals = [{"from": x, "to": y, "count": int(cum[y] - cum[x])} for x, y in zip(bounds, bounds[1:])]
        return Span(a, b, self.decode(ids[a:b]), int(cum[-1]), int(cum[until]), int(corpus),
                    int(hit[0]) if hit.size else None, int(hit[-1]) if hit.size else None, intervals, logprob,
                    tokens=list(ids[a:b]))

    def occurrences(self, pattern) -> list[dict]:
        """Every trained copy of an n-gram: document, offset in it, training position and step."""
        pattern = np.asarray(pattern, dtype=np.int64)
        smap, batch = self.counter.map, self.counter.batch_size
        out = []
        for occ in self.index.find(pattern):
            rows, k = smap.positions(occ, pattern.size)
            step = k // batch
            keep = step < self.trained_steps
            for r, kk, st in zip(rows[keep].tolist(), k[keep].tolist(), step[keep].tolist()):
                out.append({"document": int(occ.item[r]), "offset": int(occ.rel[r]), "position": kk, "step": st})
        out.sort(key=lambda o: (o["step"], o["position"], o["document"], o["offset"]))
        return out

    def _documents(self, ids, spans: list[Span], options: TraceOptions, until: int, query: str | None) -> None:
        """Fill each span's documents (none looked up with max_documents 0)."""
        from .tokenize import DocumentMetadata

        if options.max_documents == 0:
            return

        meta = DocumentMetadata(self.index.dataset.prefix)
        rng = np.random.default_rng(options.seed)
        bodies: dict[int, str] = {}
        for span in spans:
            by_doc: dict[int, dict] = {}
            for o in self.occurrences(ids[span.start:span.end]):
                d = by_doc.setdefault(o["document"], {"document": o["document"], "offset": o["offset"],
                                                      "first_step": o["step"], "steps": [], "trained": 0})
                d["trained"] += 1
                if o["step"] not in d["steps"]:
                    d["steps"].append(o["step"])
            docs = sorted(by_doc.values(), key=lambda d: (d["first_step"], d["document"]))
            span.documents_total = len(docs)
            if len(docs) > options.max_documents:
                pick = np.sort(rng.choice(len(docs), options.max_documents, replace=False))
                docs = [docs[i] for i in pick]
            for d in docs:
                d["seen_by_step"] = d["first_step"] < until
                d["source"] = meta[d["document"]]
                d["context"] = self._context(d["document"], d["offset"], span.length, options.context)
                if options.bm25:
                    bodies.setdefault(d["document"], self._body(d["document"], d["offset"]))
            span.documents = docs
        if options.bm25 and bodies:
            scores = bm25_scores(list(bodies.values()), query or "")
            score = dict(zip(bodies, scores))
            for span in spans:
                for d in span.documents:
                    d["bm25"] = float(score[d["document"]])
                span.documents.sort(key=lambda d: (-d["bm25"], d["first_step"], d["document"]))

    def _context(self, doc: int, offset: int, n: int, width: int) -> dict:
        tokens = np.asarray(self.index.dataset[doc], dtype=np.int64)
        parts = {"before": tokens[max(0, offset - width):offset], "span": tokens[offset:offset + n],
                 "after": tokens[offset + n:offset + n + width]}
        if self.counter.tokenizer_path is None:
            return {k: v.tolist() for k, v in parts.items()}
        return {k: self.decode(v) for k, v in parts.items()}

    def _body(self, doc: int, offset: int, width: int = 512) -> str:
        """The text BM25 reads for a document: up to `width` tokens on each side of the span."""
        tokens = np.asarray(self.index.dataset[doc], dtype=np.int64)
        part = tokens[max(0, offset - width):offset + width]
        return self.decode(part) if self.counter.tokenizer_path is not None else " ".join(map(str, part.tolist()))


def bm25_scores(documents: list[str], query: str) -> np.ndarray:
    """Okapi BM25 score of each document against the query (bm25s; words of 2+ characters,
    lower-cased, no stemming or stop words: code and prose alike)."""
    import bm25s

    corpus = bm25s.tokenize(documents, stopwords=None, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    words = [w for w in bm25s.tokenize([query], stopwords=None, show_progress=False, return_ids=False)[0]]
    known = [w for w in words if w in corpus.vocab]
    if not known:
        return np.zeros(len(documents))
    return np.asarray(retriever.get_scores(known), dtype=np.float64)


__all__ = ["DELIMITERS", "RANKS", "Span", "Trace", "TraceError", "TraceOptions", "Tracer", "bm25_scores"]
