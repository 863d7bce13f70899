"""What a data intervention adds to each training step: the fork's batch (its base's batch read
from the order, then the transform, then the count of changed tokens: InterventionOrder.
batch_and_changes, what the trainer calls) against the base's batch alone (order.batch), at
Pythia's shape (B=1024, S=2048) with Pythia's pronoun map on token ids drawn like the 20B
vocabulary (50,277), and a user function doing the same swap with numpy.

    .venv/bin/python benchmarks/bench_intervention.py [--batch-size 1024 --seq-len 2048]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from pythia.data.indexed import IndexedDatasetBuilder
from pythia.data.order import TrainingOrder
from pythia.train.intervention import InterventionOrder, Transform

# gpt-neox@df1bdca0 `intervention` branch, as ids of the GPT-NeoX-20B tokenizer (= pythia_pronouns)
PRONOUNS = ((754, 1500), (3032, 4058), (8389, 10759), (1328, 2993), (521, 617), (344, 703), (779, 617),
            (8701, 379), (13243, 379), (248, 6689))


def numpy_swap(tokens: np.ndarray) -> np.ndarray:
    out = tokens.copy()
    for a, b in PRONOUNS:
        out[tokens == a] = b
    return out


def median_s(fn, repeat: int) -> float:
    fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=4, help="steps in the order (default 4)")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    B, S = args.batch_size, args.seq_len
    rng = np.random.default_rng(0)
    # Zipf-like ids so the frequent pronoun ids (248, 344, ...) occur about as often as in text
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "synthetic")
        total = (args.steps * B + 2) * S * 11 // 10
        with IndexedDatasetBuilder(prefix, np.uint16) as builder:
            done = 0
            while done < total:
                n = int(rng.integers(200, 4000))
                builder.add_document(np.minimum(rng.zipf(1.2, n), 50276).astype(np.uint16))
                done += n
        order = TrainingOrder.build(prefix, S, 1234, args.steps * B + 1, out_dir=tmp, progress=False)
        maps = {"token_map (pythia_pronouns)": Transform(kind="token_map", pairs=tuple(sorted(PRONOUNS))),
                "function (numpy loop)": Transform(kind="function", function="bench:numpy_swap", fn=numpy_swap,
                                                   vocab=50304)}
        base = median_s(lambda: order.batch(1, B), args.repeat)
        print(f"batch ({B}, {S + 1}) int64, median of {args.repeat}")
        print(f"  base order.batch:                      {base * 1e3:8.1f} ms")
        for label, transform in maps.items():
            fork = InterventionOrder(order, transform, from_step=0)
            t = median_s(lambda: fork.batch_and_changes(1, B), args.repeat)  # noqa: B023
            changed = fork.batch_and_changes(1, B)[1]
            print(f"  fork, {label:<29} {t * 1e3:8.1f} ms  ({t / base:.2f}x the base; {changed:,} tokens changed)")


if __name__ == "__main__":
    main()
