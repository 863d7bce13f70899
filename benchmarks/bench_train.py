"""Training benchmarks on CPU: checkpoint time/bytes, resume time, suite throughput.

Baselines, measured side by side in this run:
  * checkpoint: a bare safetensors.save_file of the weights (what any checkpoint must pay) vs our
    full checkpoint (HF dir + optimizer moments + RNG + manifest hashing + fsync + atomic rename);
  * throughput: a bare loop (same model, batches, AdamW; no fingerprints, logs, evals or
    checkpoints) vs train_suite on the same suite, checkpoints included.
Prints figures only. Usage: .venv/bin/python benchmarks/bench_train.py [--threads N]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from pythia.data.indexed import IndexedDatasetBuilder
from pythia.suite import resolve, train_suite
from pythia.train.metrics import read_jsonl
from pythia.train.spec import SuiteSpec
from pythia.train.trainer import MemberRun, Trainer

SHAPES = [{"name": "d64-l2", "num_layers": 2, "hidden_size": 64, "num_heads": 4},
          {"name": "d128-l3", "num_layers": 3, "hidden_size": 128, "num_heads": 4}]
SEQ, BATCH, ITERS, INTERVAL = 128, 16, 30, 10


def make_data(root: Path) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for split, docs in (("train", 2000), ("valid", 50)):
        b = IndexedDatasetBuilder(str(root / split), dtype=np.uint16)
        for _ in range(docs):
            b.add_document(rng.integers(2, 1000, size=int(rng.integers(20, 400))))
        b.finalize()
        out[split] = str(root / split)
    return out


def spec_for(data: dict, out: Path) -> SuiteSpec:
    return SuiteSpec.from_dict({
        "name": "bench", "output": str(out),
        "data": {"train": data["train"], "valid": data["valid"], "seq_len": SEQ},
        "train": {"iters": ITERS, "global_batch": BATCH, "micro_batch": BATCH, "lr": 1e-3},
        "checkpoints": {"interval": INTERVAL}, "members": SHAPES, "seeds": [1, 2], "eval": {"samples": 16},
    })


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_checkpoints(spec: SuiteSpec, run_dir: Path) -> None:
    print("\n== checkpoint write / resume (per member shape, mean of 5 writes) ==")
    print(f"{'shape':<10}{'params':>10}{'weights-only ms':>17}{'checkpoint ms':>15}{'ratio':>7}"
          f"{'ckpt MB':>9}{'(HF MB':>8}{' state MB)':>10}{'resume ms':>11}")
    for member in resolve(spec)[::len(spec.seeds)]:
        order = type("Order", (), {"batch": staticmethod(lambda n, b: np.zeros((b, SEQ + 1), np.int64))})()
        run = MemberRun(member=member, spec=spec, member_dir=run_dir / "ckpt-bench" / member.name, order=order)
        t = Trainer(run)
        t.setup()
        t.train_step(0)  # optimizer state exists
        state = {k: v.detach().contiguous() for k, v in t.model.state_dict().items()}
        raw, full = [], []
        for i in range(5):
            t0 = time.perf_counter()
            save_file(state, str(run_dir / f"raw{i}.safetensors"))
            raw.append(time.perf_counter() - t0)
            t.step = 100 + i
            t0 = time.perf_counter()
            t.save()
            full.append(time.perf_counter() - t0)
        t.log.close()
        step_dir = run.member_dir / "step104"
        total, state_b = dir_bytes(step_dir), dir_bytes(step_dir / "training_state")
        t0 = time.perf_counter()
        Trainer(run).setup()  # finds step104, re-hashes it, loads weights + optimizer + RNG
        resume = time.perf_counter() - t0
        n = sum(p.numel() for p in t.model.parameters())
        print(f"{member.config.name:<10}{n:>10,}{1e3 * np.mean(raw):>17.1f}{1e3 * np.mean(full):>15.1f}"
              f"{np.mean(full) / np.mean(raw):>7.1f}{total / 1e6:>9.2f}{(total - state_b) / 1e6:>8.2f}"
              f"{state_b / 1e6:>10.2f}{1e3 * resume:>11.1f}")


def bare_loop(spec: SuiteSpec) -> tuple[float, float]:
    """Same members, batches and optimizer with nothing else: (end-to-end, median step) tokens/s."""
    from pythia.data.order import TrainingOrder, num_samples_for
    from pythia.model import GPTNeoX

    order = TrainingOrder.build(spec.data.train, SEQ, 1234, num_samples_for(ITERS, BATCH),
                                out_dir=str(Path(spec.output) / "order"), progress=False)
    tokens, step_rates, t0 = 0, [], time.perf_counter()
    for m in resolve(spec):
        torch.manual_seed(m.seed)
        model = GPTNeoX(m.config)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), foreach=False)
        for n in range(ITERS):
            ts = time.perf_counter()
            x = torch.from_numpy(order.batch(n, BATCH))
            logits = model(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += BATCH * SEQ
            step_rates.append(BATCH * SEQ / (time.perf_counter() - ts))
    return tokens / (time.perf_counter() - t0), float(np.median(step_rates))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"bench_train: torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s), "
          f"python {sys.version.split()[0]}")
    print(f"suite: {len(SHAPES)} shapes x 2 seeds, seq {SEQ}, batch {BATCH}, {ITERS} iters, "
          f"checkpoints every {INTERVAL} (+ log-spaced), fp32, CPU")
    root = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        data = make_data(root / "data")
        spec = spec_for(data, root / "run")
        t0 = time.perf_counter()
        run = train_suite(spec, progress=False)  # builds and caches the order first
        wall = time.perf_counter() - t0
        bare, bare_step = bare_loop(spec)
        members = resolve(spec)
        tokens = len(members) * ITERS * BATCH * SEQ
        n_ckpt = len(spec.checkpoint_steps()) * len(members)
        step_rates = [np.median([r["tokens_per_s"] for r in read_jsonl(run / m.name / "metrics.jsonl")]) for m in members]
        print("\n== suite throughput ==")
        print(f"bare loop end to end (baseline)     {bare:>10,.0f} tokens/s")
        print(f"train_suite end to end              {tokens / wall:>10,.0f} tokens/s   ({wall:.1f} s for {tokens:,} "
              f"tokens incl. order build, {n_ckpt} checkpoints + evals: {tokens / wall / bare:.2f}x baseline)")
        print(f"bare loop median step (baseline)    {bare_step:>10,.0f} tokens/s")
        print(f"train_suite median step             {np.median(step_rates):>10,.0f} tokens/s   "
              f"({np.median(step_rates) / bare_step:.2f}x baseline: fingerprint, lr, scaler, logging)")
        bench_checkpoints(spec, root)
        print("\nper-member final losses:", json.dumps({m.name: round(read_jsonl(run / m.name / "metrics.jsonl")[-1]["loss"], 4)
                                                         for m in members}))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
