"""`pythia data index` at Pile scale: the whole job, from the .idx on disk to the three .npy files.

A synthetic dataset with the Pile's shape is written once to --dir (default /tmp/pythia-bench-index,
reused on later runs): a real PREFIX.idx (210M documents of 1 + exponential(mean 1581) tokens,
~332B tokens; 4.2 GB) and a sparse PREFIX.bin of the matching length (no disk blocks: the index
build never reads tokens). Then each run starts a fresh interpreter that does what
`pythia data index PREFIX --seq-len 2048 --seed 1234 --train-iters 143000 --batch-size 1024
--out-dir DIR --rebuild` does, `TrainingOrder.build(prefix, 2048, 1234, 147164160, rebuild=True)`
(Pythia's train_0), writing GPT-NeoX's doc/sample/shuffle_idx .npy files. Reported: each build
phase (wall seconds, CPU seconds of the thread that ran it, process peak RSS when it ended), the
child's wall time from process start to exit, its CPU time and its peak RSS (ru_maxrss from
wait4), and the machine's load average: on a shared machine wall time follows the load, CPU time
much less. GPT-NeoX v1.0 is not installed here: its figure is printed as quoted, and nothing is
divided by it.

    python benchmarks/bench_index.py --scale 0.01          # ~2M documents, seconds
    python benchmarks/bench_index.py --repeat 3 --clean    # full scale, needs ~7.5 GB in /tmp
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

PILE_DOCS = 210_000_000
PILE_TOKENS = 332_113_380_000
PYTHIA_SAMPLES = 147_164_160  # num_samples_for(143000, 1024)
SEQ_LEN, SEED = 2048, 1234
QUOTED = "GPT-NeoX v1.0, measured elsewhere on this machine type: 39.4 s wall, 6.60 GB"

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from pythia.data.order import TrainingOrder
prefix, out_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
order = TrainingOrder.build(prefix, %d, %d, n, out_dir=out_dir, progress=False, rebuild=True)
print(json.dumps({"import_s": order.build_log.t0 - t0, "phases": order.build_log.phases,
                  "epochs": order.num_epochs, "built_samples": int(order.shuffle_idx.shape[0]),
                  "sample_idx_dtype": order.sample_idx.dtype.name}))
""" % (SEQ_LEN, SEED)


def make_dataset(prefix: Path, n: int, mean: float) -> dict:
    """PREFIX.idx in GPT-NeoX's layout, built in blocks (bounded memory); sparse PREFIX.bin."""
    import numpy as np

    from pythia.data.indexed import HEADER_SIZE, MAGIC, VERSION

    marker = prefix.with_suffix(".json")
    if marker.exists():
        info = json.loads(marker.read_text())
        if info["documents"] == n and Path(f"{prefix}.idx").exists():
            return info
    prefix.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    block = 1 << 24
    tokens = 0
    with open(f"{prefix}.idx", "wb") as f:
        f.write(MAGIC + struct.pack("<Q", VERSION) + struct.pack("<B", 8) + struct.pack("<QQ", n, n + 1))
        for a in range(0, n, block):  # sizes at 34 + 4a, pointers (byte offsets of uint16 tokens) at 34 + 4n + 8a
            sizes = 1 + rng.exponential(mean - 1, min(block, n - a)).astype(np.int32)
            f.seek(HEADER_SIZE + 4 * a)
            f.write(sizes.astype("<i4").tobytes())
            f.seek(HEADER_SIZE + 4 * n + 8 * a)
            f.write((2 * (np.cumsum(sizes, dtype=np.int64) - sizes + tokens)).astype("<i8").tobytes())
            tokens += int(sizes.sum(dtype=np.int64))
        f.seek(HEADER_SIZE + 12 * n)
        for a in range(0, n + 1, block):
            f.write(np.arange(a, min(n + 1, a + block), dtype="<i8").tobytes())
    with open(f"{prefix}.bin", "wb") as f:
        f.truncate(2 * tokens)  # sparse
    info = {"documents": n, "tokens": tokens}
    marker.write_text(json.dumps(info))
    return info


def run_child(prefix: Path, out_dir: Path, num_samples: int) -> dict:
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(prefix), str(out_dir), str(num_samples)],
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status:
        sys.exit(f"child failed with status {status}")
    r = json.loads(out)
    r.update(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, peak_rss_gb=usage.ru_maxrss * 1024 / 1e9,
             load_before=load[0], load_after=os.getloadavg()[0])
    return r


def report(r: dict) -> None:
    for p in sorted(r["phases"], key=lambda p: p["start_s"]):
        print(f"    {p['phase']:<32} from {p['start_s']:6.1f} s  {p['seconds']:6.1f} s wall "
              f"{p['cpu_s']:6.1f} s CPU   peak RSS so far {p['peak_rss_bytes'] / 1e9:5.2f} GB")
    print(f"    whole command: {r['wall_s']:.1f} s wall (imports + opening the dataset {r['import_s']:.1f} s), "
          f"{r['cpu_s']:.1f} s CPU, peak RSS {r['peak_rss_gb']:.2f} GB; "
          f"load average {r['load_before']:.1f} before, {r['load_after']:.1f} after")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the Pile's documents and samples (default 1)")
    p.add_argument("--dir", default="/tmp/pythia-bench-index", help="where the dataset and the .npy files go")
    p.add_argument("--repeat", type=int, default=1, help="runs of the command (default 1)")
    p.add_argument("--clean", action="store_true", help="delete --dir at the end")
    args = p.parse_args()
    root = Path(args.dir)
    n = int(PILE_DOCS * args.scale)
    num_samples = int(PYTHIA_SAMPLES * args.scale)
    t = time.perf_counter()
    info = make_dataset(root / f"pile_like_{n}", n, PILE_TOKENS / PILE_DOCS)
    print(f"bench_index  scale {args.scale}  cpus {os.cpu_count()}  python {sys.version.split()[0]}")
    print(f"  dataset {root}/pile_like_{n}: {info['documents']:,} documents, {info['tokens']:,} tokens "
          f"(ready in {time.perf_counter() - t:.1f} s, not timed below); seq {SEQ_LEN}, seed {SEED}, "
          f"{num_samples:,} samples requested")
    runs = []
    try:
        for i in range(args.repeat):
            r = run_child(root / f"pile_like_{n}", root / "order", num_samples)
            runs.append(r)
            print(f"  run {i + 1}: epochs {r['epochs']}, built samples {r['built_samples']:,}, "
                  f"sample_idx {r['sample_idx_dtype']}")
            report(r)
    finally:
        if args.clean:
            shutil.rmtree(root, ignore_errors=True)
    if len(runs) > 1:
        print(f"  median wall {statistics.median(r['wall_s'] for r in runs):.1f} s over {len(runs)} runs; "
              f"max peak RSS {max(r['peak_rss_gb'] for r in runs):.2f} GB")
    print(f"  reference (quoted, not run here): {QUOTED}")


if __name__ == "__main__":
    main()
