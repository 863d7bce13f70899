"""Tracing a text to the training data (`pythia trace`): p50 time of a 500-token trace once the
suffix-array index and the order's step sidecar exist, against a numpy scan of the order that
finds the same spans, run in the same process.

Corpus: bench_ngram's (--tokens tokens, default 100M, of Zipf-distributed ids over a 50,000-token
vocabulary in documents of log-normal length, each ending with <|endoftext|>). Order: GPT-NeoX's,
seq_len 2048, batch 32, one epoch's worth of steps. Text: --text tokens (default 500) made of
passages of 4 to 40 tokens copied from trained samples and from untrained documents, between runs
of 1 to 8 Zipf-drawn tokens (so spans of every length, trained or not). The trace is the
command's: OLMoTrace's filters (max frequency 10, span density 0.05, by length) without the word
and delimiter rules (token ids have no text), counts by step at 50 checkpoints, up to 10
documents per span with context.

The baseline holds the order's token stream in memory (its build is not timed) and, per distinct
first token of the text, scans the whole stream for it, then extends every candidate token by
token, keeping those inside one document, and takes the longest prefix with an occurrence the
member trained on (its sample trained, first token at an input position, the n-gram inside the
sample); the same filters, maximality and ranking follow. Both must give the same spans, counts
and first/last steps.

The corpus, its index, the order and the step sidecar are kept in --cache (default
benchmarks/.cache/trace-{tokens}) and reused by later runs: the first run at 100M tokens builds
them (minutes on 2 cores, ~3 GB of memory, ~1.5 GB of disk).

    .venv/bin/python benchmarks/bench_trace.py --tokens 5000000   # quick
    .venv/bin/python benchmarks/bench_trace.py                    # 100M tokens
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench_ngram import make_corpus  # noqa: E402 - the same synthetic corpus

SEQ, BATCH = 2048, 32


def build(cache: Path, n_tokens: int):
    """(index, order, iters, counter) from the cache, made on the first run."""
    from pythia.data.counts import TermCounter
    from pythia.data.ngram import open_index
    from pythia.data.order import TrainingOrder, num_samples_for

    cache.mkdir(parents=True, exist_ok=True)
    prefix = cache / "corpus"
    t0 = time.perf_counter()
    if not (cache / "corpus.idx").is_file():
        info = make_corpus(prefix, n_tokens)
        print(f"corpus     {info['tokens']:,} tokens, {info['documents']:,} documents written in "
              f"{time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    fresh = not (cache / "sa" / "manifest.json").is_file()
    index = open_index(prefix, cache / "sa", build=True, progress=False)
    n = index.dataset.num_tokens
    iters = int(n // (SEQ * BATCH * 1.005)) - 1
    order = TrainingOrder.build(prefix, SEQ, 1234, num_samples_for(iters, BATCH), out_dir=cache, progress=False)
    counter = TermCounter(index, order, BATCH, iters)
    counter.steps  # the step sidecar (built once)
    print(f"index      {n:,} tokens, {len(index.shards)} shard(s), order {iters} steps x {BATCH} x {SEQ}; "
          f"{'built' if fresh else 'reused'} in {time.perf_counter() - t0:.1f} s ({cache})")
    return index, order, iters, counter


def make_text(index, order, iters: int, length: int, seed: int = 3) -> list[int]:
    rng = np.random.default_rng(seed)
    tokens = np.asarray(index.tokens)
    ds = index.dataset
    out: list[int] = []
    while len(out) < length:
        if rng.random() < 0.7:  # a passage of a trained sample
            row = order.sample(int(rng.integers(0, iters * BATCH)))
            n = int(rng.integers(4, 41))
            a = int(rng.integers(0, row.size - n))
            piece = row[a:a + n]
        else:  # a passage anywhere in the data (often never trained)
            d = int(rng.integers(0, len(ds)))
            doc = np.asarray(ds[d])
            n = min(int(rng.integers(4, 41)), max(doc.size - 1, 1))
            a = int(rng.integers(0, max(doc.size - n, 1)))
            piece = doc[a:a + n]
        filler = tokens[rng.integers(0, tokens.size, int(rng.integers(1, 9)))]
        out += [int(t) for t in piece if t != 0] + [int(t) for t in filler if t != 0]
    return out[:length]


class Scan:
    """The order's stream in memory and what a numpy scan needs to tell trained occurrences."""

    def __init__(self, order, iters: int):
        ds = order.dataset
        doc_idx = np.asarray(order.doc_idx)
        self.stream = _stream(ds, doc_idx)
        lens = ds.sizes[doc_idx].astype(np.int64)
        self.doc_end = np.cumsum(lens)  # (slots,) exclusive end of each slot in the stream
        shuffle = np.asarray(order.shuffle_idx).astype(np.int64)
        self.position_of = np.full(shuffle.size, np.iinfo(np.int64).max)
        self.position_of[shuffle] = np.arange(shuffle.size)
        self.trained_positions, self.iters = iters * BATCH, iters

    def steps(self, g: np.ndarray, n: int) -> np.ndarray:
        """Step of each occurrence start g (-1 where not counted: sample untrained or n-gram past it)."""
        j = g // SEQ
        ok = (j < self.position_of.size) & (g - j * SEQ + n <= SEQ + 1)
        k = np.where(ok, self.position_of[np.minimum(j, self.position_of.size - 1)], -1)
        return np.where((k >= 0) & (k < self.trained_positions), k // BATCH, -1)

    def spans(self, ids: list[int], max_frequency: int, density: float) -> list[tuple]:
        """(start, end, count, first step, last step) of the kept spans."""
        ids_a = np.asarray(ids)
        longest: dict[int, tuple[int, np.ndarray]] = {}
        for t in np.unique(ids_a):
            cand = np.flatnonzero(self.stream == t)  # the scan
            for start in np.flatnonzero(ids_a == t).tolist():
                alive, best, best_steps = cand, 0, None
                end = self.doc_end[np.searchsorted(self.doc_end, alive, side="right")]
                length = 1
                while alive.size:
                    st = self.steps(alive, length)
                    if (st >= 0).any():
                        best, best_steps = length, st[st >= 0]
                    if start + length >= len(ids):
                        break
                    nxt = alive + length
                    keep = (nxt < end) & (self.stream[np.minimum(nxt, self.stream.size - 1)] == ids[start + length])
                    alive, end, length = alive[keep], end[keep], length + 1
                longest[start] = (best, best_steps)
        kept, last = [], 0
        for start in range(len(ids)):
            n, st = longest[start]
            if n == 0 or st.size > max_frequency:
                continue
            if start + n > last:
                kept.append((start, start + n, int(st.size), int(st.min()), int(st.max())))
                last = start + n
        keep = math.ceil(density * len(ids))
        return sorted(sorted(kept, key=lambda s: (-(s[1] - s[0]), s[0]))[:keep])


def _stream(ds, doc_idx: np.ndarray) -> np.ndarray:
    """The documents in doc_idx order, concatenated (chunks of the .bin gathered by slices)."""
    starts = np.asarray(ds.pointers, np.int64) // ds.dtype.itemsize
    lens = ds.sizes.astype(np.int64)
    out = np.empty(int(lens[doc_idx].sum()), ds.dtype)
    tokens, at = ds.tokens, 0
    for d in doc_idx.tolist():
        out[at:at + lens[d]] = tokens[starts[d]:starts[d] + lens[d]]
        at += lens[d]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=100_000_000, help="corpus size in tokens (default 100M)")
    p.add_argument("--text", type=int, default=500, help="tokens of the traced text (default 500)")
    p.add_argument("--repeats", type=int, default=7, help="timed traces (the first, cold, is reported apart)")
    p.add_argument("--scans", type=int, default=1, help="timed numpy scans (slow: minutes each at 100M; 0: none)")
    p.add_argument("--cache", help="folder kept between runs (default benchmarks/.cache/trace-{tokens})")
    args = p.parse_args()
    from pythia.data.trace import TraceOptions, Tracer

    cache = Path(args.cache or Path(__file__).resolve().parent / ".cache" / f"trace-{args.tokens}")
    print(f"bench_trace  cpus {os.cpu_count()}  python {sys.version.split()[0]}  numpy {np.__version__}")
    index, order, iters, counter = build(cache, args.tokens)
    ids = make_text(index, order, iters, args.text)
    opts = TraceOptions(whole_words=False, delimiters=())
    ckpts = sorted({0, iters} | set(np.linspace(0, iters, 50).astype(int).tolist()))
    times = []
    gc.disable()
    for i in range(args.repeats + 1):
        tracer = Tracer(counter, iters)  # a fresh tracer: no counts cached from the last repeat
        t0 = time.perf_counter()
        result = tracer.trace(ids, options=opts, checkpoint_steps=ckpts, until_step=iters // 2)
        times.append(time.perf_counter() - t0)
    gc.enable()
    cold, warm = times[0], times[1:]
    p50 = float(np.median(warm))
    found = [(s.start, s.end, s.count, s.first_step, s.last_step) for s in result.spans]
    print(f"trace      {len(ids)} tokens: {len(result.spans)} span(s) kept of {result.candidates} maximal "
          f"(lengths {sorted((s.length for s in result.spans), reverse=True)}), "
          f"{sum(len(s.documents) for s in result.spans)} documents")
    print(f"           p50 {p50 * 1e3:.0f} ms  min {min(warm) * 1e3:.0f} ms  max {max(warm) * 1e3:.0f} ms  (first, cold "
          f"caches: {cold * 1e3:.0f} ms; goal p50 < 1 s)")
    if args.scans < 1:
        return
    t0 = time.perf_counter()
    scan = Scan(order, iters)
    print(f"scan       the order's stream in memory: {scan.stream.size:,} tokens ({time.perf_counter() - t0:.1f} s, "
          "not timed)")
    scan_times = []
    for _ in range(args.scans):
        t0 = time.perf_counter()
        want = scan.spans(ids, opts.max_frequency, opts.span_density)
        scan_times.append(time.perf_counter() - t0)
    if want != found:
        sys.exit(f"the scan and the trace disagree:\n  scan  {want}\n  trace {found}")
    best = min(scan_times)
    print(f"           numpy scan {best:.1f} s (fastest of {len(scan_times)}): the same spans, counts and steps")
    print(f"ratio      scan / trace p50 = {best / p50:.0f}x")


if __name__ == "__main__":
    main()
