"""Batch viewer cost: tokens of step 0 vs step 142,999 (B=1024, S=2048 by default) on a
synthetic order with enough samples to reach that step, plus the same batch fetched the way
GPT-NeoX's GPT2Dataset.__getitem__ does it (one Python call per row), side by side.

The order needs >= 146.4M samples, so building it takes ~2 GB of RAM and ~20 s; the dataset
itself is small (100M tokens, many epochs). Smaller: --batch-size 64 --last-step 9999.

    .venv/bin/python benchmarks/bench_batch.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from pythia.data.indexed import IndexedDataset, IndexedDatasetBuilder
from pythia.data.order import TrainingOrder, build_indices


def neox_getitem(order: TrainingOrder, k: int) -> np.ndarray:
    """Per-row reference: GPT2Dataset.__getitem__ (spec section 5)."""
    ds, j = order.dataset, int(order.shuffle_idx[k])
    (df, of), (dl, ol) = order.sample_idx[j], order.sample_idx[j + 1]
    if df == dl:
        return ds.get(int(order.doc_idx[df]), int(of), int(ol - of + 1)).astype(np.int64)
    parts = [ds.get(int(order.doc_idx[df]), int(of))]
    parts += [ds.get(int(order.doc_idx[i])) for i in range(df + 1, dl)]
    parts.append(ds.get(int(order.doc_idx[dl]), 0, int(ol) + 1))
    return np.concatenate(parts).astype(np.int64)


def timed(fn, repeat: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return first, statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--last-step", type=int, default=142_999)
    p.add_argument("--tokens", type=float, default=100e6, help="dataset tokens (default 100M)")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    B, S = args.batch_size, args.seq_len
    needed = (args.last_step + 1) * B + 1
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "synthetic")
        sizes = 1 + rng.exponential(1580, int(args.tokens / 1581)).astype(np.int64)
        with IndexedDatasetBuilder(prefix, np.uint16) as b:
            for a in range(0, len(sizes), 4096):
                chunk = sizes[a:a + 4096]
                tokens = rng.integers(2, 50000, int(chunk.sum()), dtype=np.uint16)
                for part in np.split(tokens, np.cumsum(chunk)[:-1]):
                    b.add_document(part)
        ds = IndexedDataset(prefix)
        t0 = time.perf_counter()
        arrays = build_indices(ds.sizes, S, 1234, needed)
        build_s = time.perf_counter() - t0
        order = TrainingOrder(ds, *arrays, seq_len=S, seed=1234, num_samples=needed)
        print(f"bench_batch  B={B} S={S}  dataset {len(ds):,} docs / {ds.num_tokens:,} tokens, "
              f"order {order.num_positions:,} positions, E={order.num_epochs} (built in {build_s:.1f} s)")
        for step in (0, args.last_step):
            first, med = timed(lambda: order.batch(step, B), args.repeat)
            ref_first, ref_med = timed(lambda: np.stack([neox_getitem(order, k) for k in range(step * B, (step + 1) * B)]),
                                       max(1, args.repeat // 2))
            assert np.array_equal(order.batch(step, B), np.stack(
                [neox_getitem(order, k) for k in range(step * B, (step + 1) * B)]))
            print(f"  step {step:>7}: batch() first {first * 1e3:7.1f} ms, median {med * 1e3:7.1f} ms | "
                  f"per-row __getitem__ loop median {ref_med * 1e3:7.1f} ms | ratio {ref_med / med:.1f}x")


if __name__ == "__main__":
    main()
