"""N-gram counts by training step (`pythia data count`): index build and query latency on a
synthetic corpus, against a numpy scan over the order's batches run in the same process.

Corpus: --tokens tokens (default 100M) of Zipf-distributed ids (exponent 1.0 over a 50,000-token
vocabulary, ranks shuffled onto ids), in documents of log-normal length (median ~700 tokens, mean
~1,400, like web text), each ending with <|endoftext|> = 0. Order: GPT-NeoX's, seq_len 2048, batch
32, one epoch's worth of steps; checkpoints on Pythia's schedule (0, 1, 2, 4, ..., 512, then every
--every steps).

Figures: build tokens/s, index bytes per token on disk, peak memory of the build (a child process,
getrusage); query p50/p99 for terms (1-, 2- and 4-grams drawn from the corpus, no <|endoftext|>)
with fewer than 1e5 occurrences, count alone and with the cumulative counts at every checkpoint
(`--by-step`), through the order's step sidecar (pythia.data.stepindex) and, for comparison, from
the suffix array alone (step_index=False); the one-off costs (opening the index, the order's
inverse map, building the step sidecar: seconds, bytes per token on disk, peak RSS). The baseline
scans every trained batch with numpy (order.batch + vectorised compares) for a few terms only
(--scan-terms, it takes seconds per term) and must give the same counts; each occurrence class's
ratio divides the fastest of those scans by the class's p50 and p99 (count + --by-step; wall
clock, and CPU time of the thread). Each term is timed once, with the garbage collector off (as
timeit does). Goals (issue 12): < 10 ms, < 50 ms with --by-step, >= 1000x the scan.

    .venv/bin/python benchmarks/bench_ngram.py --tokens 5000000     # quick
    .venv/bin/python benchmarks/bench_ngram.py                      # 100M tokens: ~4 GB RAM, ~2 GB disk
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOCAB, SEQ, BATCH = 50_000, 2048, 32


def make_corpus(prefix: Path, n_tokens: int, seed: int = 0) -> dict:
    from pythia.data.indexed import IndexedDatasetBuilder

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB)  # Zipf over ranks 1..VOCAB-1 (id 0 is the end of document)
    cdf = np.cumsum(p / p.sum())
    ids = rng.permutation(np.arange(1, VOCAB, dtype=np.uint16))  # rank -> token id
    done, docs = 0, 0
    with IndexedDatasetBuilder(prefix, np.uint16) as b:
        while done < n_tokens:
            lens = np.maximum(1, rng.lognormal(6.5, 1.2, 4096).astype(np.int64))  # (D,) tokens before EOD
            lens = lens[np.cumsum(lens + 1) <= n_tokens - done] if done + (lens + 1).sum() > n_tokens else lens
            if lens.size == 0:
                lens = np.array([max(0, n_tokens - done - 1)])
            body = ids[np.minimum(np.searchsorted(cdf, rng.random(int(lens.sum()))), VOCAB - 2)]
            ends = np.cumsum(lens)
            for a, e in zip(ends - lens, ends):
                b.add_document(np.append(body[a:e], np.uint16(0)))
            done += int((lens + 1).sum())
            docs += lens.size
    return {"tokens": done, "documents": docs}


def child_build(prefix: str, index_dir: str) -> None:
    from pythia.data.ngram import build_index

    t0, c0 = time.perf_counter(), time.process_time()
    index = build_index(prefix, index_dir, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    disk = sum(f.stat().st_size for f in Path(index_dir).iterdir())
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "disk_bytes": disk, "shards": len(index.shards)}))


def checkpoint_steps(iters: int, every: int) -> list[int]:
    steps = {0} | {2 ** i for i in range(10) if 2 ** i <= iters} | set(range(every, iters + 1, every)) | {iters}
    return sorted(steps)


def draw_terms(tokens: np.ndarray, rng, per_length: int) -> list[list[int]]:
    terms = []
    for n in (1, 2, 4):
        while sum(len(t) == n for t in terms) < per_length:
            o = int(rng.integers(0, tokens.size - n))
            t = tokens[o:o + n].astype(np.int64)
            if not (t == 0).any():
                terms.append(t.tolist())
    return terms


def scan(order, term: list[int], iters: int) -> np.ndarray:
    """Per step, occurrences of `term` starting at an input position of a sample and inside it,
    by comparing every trained batch (the answer without an index)."""
    n, width = len(term), min(SEQ, SEQ + 2 - len(term))
    out = np.zeros(iters, np.int64)
    for step in range(iters):
        batch = order.batch(step, BATCH)  # (B, S+1) int64
        hit = batch[:, :width] == term[0]
        for i in range(1, n):
            hit &= batch[:, i:i + width] == term[i]
        out[step] = int(hit.sum())
    return out


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=100_000_000, help="corpus size in tokens (default 100M)")
    p.add_argument("--terms", type=int, default=100, help="terms drawn per n-gram length (1, 2, 4)")
    p.add_argument("--scan-terms", type=int, default=4, help="terms also counted by the numpy scan (slow)")
    p.add_argument("--every", type=int, default=100, help="checkpoint every N steps after 512")
    p.add_argument("--workdir", help="folder for the corpus and index (default: a temporary one, removed)")
    p.add_argument("--child-build", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_build:
        child_build(*args.child_build)
        return
    from pythia.data.counts import TermCounter
    from pythia.data.ngram import NgramIndex
    from pythia.data.order import TrainingOrder, num_samples_for

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ngram."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        info = make_corpus(work / "corpus", args.tokens)
        print(f"bench_ngram  tokens {info['tokens']:,}  documents {info['documents']:,}  vocab {VOCAB}  cpus "
              f"{os.cpu_count()}  python {sys.version.split()[0]}  numpy {np.__version__}  (corpus written in "
              f"{time.perf_counter() - t0:.1f} s)")
        proc = subprocess.run([sys.executable, __file__, "--child-build", str(work / "corpus"), str(work / "sa")],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr)
        build = json.loads(proc.stdout)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
        n = info["tokens"]
        print(f"build      {build['wall_s']:.1f} s wall ({build['cpu_s']:.1f} s cpu), {n / build['wall_s'] / 1e6:.2f}M "
              f"tokens/s, {build['shards']} shard(s), {build['disk_bytes'] / n:.2f} bytes/token on disk "
              f"(+2 for the .bin itself), peak memory {peak / 1e9:.2f} GB = {peak / n:.1f} bytes/token")

        iters = int(n // (SEQ * BATCH * 1.005)) - 1
        order = TrainingOrder.build(work / "corpus", SEQ, 1234, num_samples_for(iters, BATCH), out_dir=work,
                                    progress=False)
        t0 = time.perf_counter()
        index = NgramIndex(work / "corpus", work / "sa")
        t_open = time.perf_counter() - t0
        counter = TermCounter(index, order, BATCH, iters)
        t0 = time.perf_counter()
        counter.map  # the order's inverse map, built once per order
        t_map = time.perf_counter() - t0
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        steps = counter.steps  # the step sidecar, built once per (index, order, batch size)
        t_side = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        side_disk = sum(f.stat().st_size for f in steps.dir.iterdir())
        t0 = time.perf_counter()
        TermCounter(index, order, BATCH, iters).steps  # opening it again (checks its manifest)
        t_side_open = time.perf_counter() - t0
        legacy = TermCounter(index, order, BATCH, iters, step_index=False)
        ckpts = checkpoint_steps(iters, args.every)
        print(f"order      seq {SEQ}, batch {BATCH}, {iters} steps, {len(ckpts)} checkpoints; one-off: open index "
              f"{t_open * 1e3:.0f} ms, order map {t_map * 1e3:.0f} ms")
        print(f"sidecar    one-off build {t_side:.1f} s ({steps.dir.name}), {side_disk / n:.2f} bytes/token on disk, "
              f"peak RSS {rss0 / 1e9:.2f} -> {rss1 / 1e9:.2f} GB; open {t_side_open * 1e3:.0f} ms")

        rng = np.random.default_rng(1)
        terms = draw_terms(np.asarray(index.tokens), rng, args.terms)
        times, times_by_step, cpu, cpu_by_step, occ, old = [], [], [], [], [], []
        gc.disable()  # as timeit does: no collector pause of the benchmark's own objects inside a query
        for t in terms:
            a, a_cpu = time.perf_counter(), time.thread_time()
            tc = counter.count(t)
            b, b_cpu = time.perf_counter(), time.thread_time()
            tc.to_json(ckpts)
            c, c_cpu = time.perf_counter(), time.thread_time()
            if tc.corpus_count < 100_000:
                times.append(b - a)
                cpu.append(b_cpu - a_cpu)
                times_by_step.append(c - a)
                cpu_by_step.append(c_cpu - a_cpu)
                occ.append(tc.corpus_count)
                a = time.perf_counter()
                ref = legacy.count(t)
                ref.to_json(ckpts)
                old.append(time.perf_counter() - a)
                if not (np.array_equal(ref.step_counts, tc.step_counts) and ref.corpus_count == tc.corpus_count):
                    sys.exit(f"sidecar and suffix-array counts differ for {t}")
        gc.enable()
        occ = np.array(occ)
        print(f"queries    {len(times)} of {len(terms)} terms have < 1e5 occurrences (median {int(np.median(occ))}, "
              f"max {int(occ.max())}); wall clock, and CPU time of the thread (a shared machine inflates wall):")
        print(f"           count      p50 {pct(times, 50):7.3f} ms  p99 {pct(times, 99):7.3f} ms   (goal < 10 ms)   "
              f"cpu p50 {pct(cpu, 50):.3f} ms  p99 {pct(cpu, 99):.3f} ms")
        print(f"           --by-step  p50 {pct(times_by_step, 50):7.3f} ms  p99 {pct(times_by_step, 99):7.3f} ms   "
              f"(goal < 50 ms)   cpu p50 {pct(cpu_by_step, 50):.3f} ms  p99 {pct(cpu_by_step, 99):.3f} ms")
        classes = [(lo, hi, (occ >= lo) & (occ < hi)) for lo, hi in ((0, 1e3), (1e3, 1e4), (1e4, 1e5))]
        for lo, hi, sel in classes:
            if sel.any():
                print(f"           {int(lo):>6}-{int(hi):<6} occurrences: {sel.sum():3d} terms, count p50 "
                      f"{pct(np.asarray(times)[sel], 50):.3f} ms, p99 {pct(np.asarray(times)[sel], 99):.3f} ms; "
                      f"count + --by-step p50 {pct(np.asarray(times_by_step)[sel], 50):.3f} ms, p99 "
                      f"{pct(np.asarray(times_by_step)[sel], 99):.3f} ms; without the sidecar p50 "
                      f"{pct(np.asarray(old)[sel], 50):.3f} ms, p99 {pct(np.asarray(old)[sel], 99):.3f} ms")
        print("           (all answers equal with and without the sidecar)")

        counted = [t for t in terms if counter.count(t).corpus_count < 100_000]
        by_occ = sorted(counted, key=lambda t: counter.count(t).corpus_count)
        picks = [by_occ[int(q * (len(by_occ) - 1))] for q in np.linspace(0, 1, args.scan_terms)]  # rarest..commonest
        print(f"baseline   numpy scan over all {iters} trained batches, {len(picks)} terms only (slow), spread from the "
              "rarest to the commonest under 1e5; index = count + --by-step, median of 5:")
        scans, scans_cpu = [], []
        for t in picks:
            a, a_cpu = time.perf_counter(), time.thread_time()
            per_step = scan(order, t, iters)
            t_scan = time.perf_counter() - a
            scans.append(t_scan)
            scans_cpu.append(time.thread_time() - a_cpu)
            t_idx = []
            for _ in range(5):  # warm: the median of 5
                a = time.perf_counter()
                tc = counter.count(t)
                by = tc.by_step(ckpts)
                t_idx.append(time.perf_counter() - a)
            t_idx = float(np.median(t_idx))
            same = per_step.sum() == tc.count and all(r["count"] == per_step[:r["step"]].sum() for r in by)
            print(f"           {str(t):<32} count {tc.count:>7} (corpus {tc.corpus_count:>6})  scan {t_scan:7.2f} s  index {t_idx * 1e3:7.3f} ms  "
                  f"ratio {t_scan / t_idx:9.0f}x  same answers: {same}")
        base, base_cpu = min(scans), min(scans_cpu)
        print(f"ratio      by class: the fastest scan above ({base:.2f} s wall, {base_cpu:.2f} s cpu) / the class's "
              "count + --by-step latency, wall clock (and CPU time of the thread, which a busy machine inflates less)")
        for lo, hi, sel in classes:
            if sel.any():
                w, c = np.asarray(times_by_step)[sel], np.asarray(cpu_by_step)[sel]
                print(f"           {int(lo):>6}-{int(hi):<6} occurrences: p50 {base / np.percentile(w, 50):6.0f}x "
                      f"({base_cpu / np.percentile(c, 50):.0f}x)  p99 {base / np.percentile(w, 99):6.0f}x "
                      f"({base_cpu / np.percentile(c, 99):.0f}x)   (goal >= 1000x)")
        print(f"peak RSS of this process (queries, order, scan): "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9:.2f} GB")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
