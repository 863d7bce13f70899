"""Index build (doc_idx + sample_idx + shuffle_idx) at Pile scale, in a subprocess whose peak
RSS is read back with getrusage(RUSAGE_CHILDREN).

Default (--scale 1): a synthetic sizes array of 210M documents (~332B tokens, int32, the Pile's
scale), 147,164,160 samples requested (Pythia's train_0), seq 2048, seed 1234. Reference figure:
GPT-NeoX v1.0's own code (numpy shuffles + C++ build_sample_idx) took 53 s on 2 cores (quoted,
not measured here: GPT-NeoX is not installed). Goal: no slower, peak memory under 8 GB.
Uses ~4-5 GB of RAM at full scale; `--scale 0.01` for a quick run.

    .venv/bin/python benchmarks/bench_index.py --scale 0.01
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

PILE_DOCS = 210_000_000
PILE_TOKENS = 332_113_380_000
PYTHIA_SAMPLES = 147_164_160
NEOX_SECONDS = 53.0


def child(scale: float, seed: int) -> None:
    import numpy as np

    from pythia.data.order import build_doc_idx, build_sample_idx, build_shuffle_idx, num_epochs

    n = int(PILE_DOCS * scale)
    mean = PILE_TOKENS / PILE_DOCS
    t0 = time.perf_counter()
    sizes = np.empty(n, np.int32)  # Pile-like heavy tail: 1 + exponential, mean ~1581 tokens
    rng = np.random.default_rng(0)
    for a in range(0, n, 1 << 24):
        b = min(n, a + (1 << 24))
        sizes[a:b] = 1 + rng.exponential(mean - 1, b - a).astype(np.int32)
    t_gen = time.perf_counter() - t0
    tokens = int(sizes.sum(dtype=np.int64))
    requested = int(PYTHIA_SAMPLES * scale)
    times = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    epochs = num_epochs(tokens, 2048, requested)
    rng = np.random.RandomState(seed)
    doc_idx = build_doc_idx(np.arange(n, dtype=np.int32), epochs, rng)
    times["doc_idx"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    sample_idx = build_sample_idx(sizes, doc_idx, 2048, epochs, tokens)
    times["sample_idx"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    shuffle_idx = build_shuffle_idx(sample_idx.shape[0] - 1, rng)
    times["shuffle_idx"] = time.perf_counter() - t1
    times["total"] = time.perf_counter() - t0
    times["cpu"] = time.process_time() - cpu0  # user+sys: what a busy shared machine does not inflate
    print(json.dumps({"documents": n, "tokens": tokens, "requested": requested, "epochs": epochs,
                      "built_samples": int(shuffle_idx.shape[0]), "sample_idx_dtype": sample_idx.dtype.name,
                      "shuffle_idx_dtype": shuffle_idx.dtype.name, "generate_s": t_gen, "times_s": times}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the Pile scale (default 1)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.scale, args.seed)
        return
    proc = subprocess.run([sys.executable, __file__, "--child", "--scale", str(args.scale), "--seed", str(args.seed)],
                          capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "2"})
    if proc.returncode:
        sys.exit(proc.stderr)
    r = json.loads(proc.stdout)
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9  # Linux: KiB
    t = r["times_s"]
    print(f"bench_index  scale {args.scale}  cpus {os.cpu_count()}  python {sys.version.split()[0]}")
    print(f"  documents {r['documents']:,}  tokens {r['tokens']:,}  requested {r['requested']:,}  "
          f"epochs {r['epochs']}  built samples {r['built_samples']:,}")
    print(f"  dtypes: sample_idx {r['sample_idx_dtype']}, shuffle_idx {r['shuffle_idx_dtype']}")
    print(f"  synthetic sizes generated in {r['generate_s']:.1f} s (not part of the build)")
    print(f"  build: doc_idx {t['doc_idx']:.1f} s + sample_idx {t['sample_idx']:.1f} s + "
          f"shuffle_idx {t['shuffle_idx']:.1f} s = {t['total']:.1f} s wall, {t['cpu']:.1f} s CPU "
          f"(load average now {os.getloadavg()[0]:.1f})")
    print(f"  peak RSS of the build process {peak_gb:.2f} GB (goal < 8 GB, includes the sizes array)")
    if args.scale == 1.0:
        print(f"  vs GPT-NeoX v1.0 quoted {NEOX_SECONDS:.0f} s on 2 cores: ratio {NEOX_SECONDS / t['total']:.2f}x wall, "
              f"{NEOX_SECONDS / t['cpu']:.2f}x CPU "
              "(>1 = faster; quoted figure, not measured side by side)")


if __name__ == "__main__":
    main()
