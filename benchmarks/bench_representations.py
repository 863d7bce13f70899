"""`representations` per checkpoint on a pythia-160m-shaped checkpoint, against a plain loop that
computes the same numbers in this process; and the storage the study takes per member on
Pythia's checkpoint grid.

A one-member run is laid out on disk (random-init step0 with its manifest; random-token
validation data), so ours is exactly what `pythia analyze RUN representations` does per
checkpoint: `Representations.compute` on a fresh context (the model loaded as the runner loads it,
one forward + backward of the probe, batched SVDs of weights and gradients, the float16
activations written). The baseline is the loop a researcher would write: transformers'
GPTNeoXForCausalLM with output_hidden_states, full logits + cross-entropy, backward, then per
weight matrix numpy (np.linalg.svd(compute_uv=False), np.sort for Gini, float32 in, float64
sums) for PER, condition number, Hoyer, Gini, and gradient PER, Hoyer, norm. Both load the
checkpoint from disk inside the timing, run on the same threads (--threads), alternating, medians
of --reps. Prints figures, the ratio and how far the two agree; asserts nothing.

    .venv/bin/python benchmarks/bench_representations.py [--shape pythia-160m] [--windows 8] [--probe-len 64]
        [--reps 2] [--threads N]
    # custom shape: --shape layers=2,hidden=64,heads=4,vocab=512
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PYTHIA_CHECKPOINTS = 154
"""Pythia's grid: step 0, 1, 2, 4, ..., 512, then every 1000 to 143,000."""
PYTHIA_SIZES = ("pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b", "pythia-2.8b", "pythia-6.9b",
                "pythia-12b")


def member_spec(text: str) -> dict:
    if "=" not in text:
        return {"size": text, "name": "bench"}
    kw = dict(item.split("=", 1) for item in text.split(","))
    return {"name": "bench", "num_layers": int(kw["layers"]), "hidden_size": int(kw["hidden"]),
            "num_heads": int(kw["heads"]), "vocab_size": int(kw["vocab"])}


def lay_out_run(root: Path, shape: str, windows: int, probe_len: int) -> Path:
    """RUN/suite.yaml, random-token train/valid data, RUN/bench-seed1/step0 (random init + manifest)."""
    from pythia.config import custom_config, model_config
    from pythia.data.indexed import IndexedDatasetBuilder
    from pythia.hf import save_pretrained
    from pythia.model import GPTNeoX
    from pythia.layout import digest_of_checkpoint, write_manifest

    spec = {"name": "bench", "data": {"train": str(root / "train"), "valid": str(root / "valid"), "seq_len": probe_len},
            "train": {"iters": 1, "global_batch": 1}, "checkpoints": {"interval": 1},
            "members": [member_spec(shape)], "seeds": [1], "output": str(root / "run")}
    vocab = spec["members"][0].get("vocab_size") or model_config(shape).vocab_size
    rng = np.random.default_rng(0)
    for split, docs in (("train", 4), ("valid", windows + 2)):
        builder = IndexedDatasetBuilder(str(root / split), dtype=np.uint16)
        for _ in range(docs):
            builder.add_document(rng.integers(0, min(vocab, 50000), size=probe_len + 1))
        builder.finalize()
    (root / "run").mkdir()
    (root / "run" / "suite.yaml").write_text(yaml.safe_dump(spec))
    m = spec["members"][0]
    config = model_config(shape) if "size" in m else custom_config(
        num_layers=m["num_layers"], hidden_size=m["hidden_size"], num_heads=m["num_heads"], vocab_size=m["vocab_size"])
    torch.manual_seed(0)
    step = save_pretrained(GPTNeoX(config), root / "run" / "bench-seed1" / "step0")
    write_manifest(step, 0, digest_of_checkpoint(step))
    return root / "run"


def ours(run_dir: Path, windows: int, probe_len: int) -> tuple[list, float]:
    """(rows, seconds): the analysis' compute on a fresh checkpoint context, as the runner calls it."""
    from pythia.analysis.base import CheckpointContext
    from pythia.analysis.representations import Representations
    from pythia.run import open_run

    run = open_run(run_dir)
    member = run.member("bench-seed1")
    a = Representations(probe_windows=windows, probe_len=probe_len, probe_batch=windows)
    a.check(run, [member])
    ctx = CheckpointContext(run=run, member=member, checkpoint=member.checkpoint(0), device=torch.device("cpu"))
    t0 = time.perf_counter()
    rows = a.compute(ctx)
    return rows, time.perf_counter() - t0


def baseline(run_dir: Path, windows: int, probe_len: int) -> tuple[dict, float]:
    """The same numbers with transformers + numpy, one matrix at a time: ({(task, metric): value}, seconds)."""
    import transformers

    from pythia.run import open_run
    from pythia.data.indexed import validation_windows

    run = open_run(run_dir)
    probe = torch.from_numpy(validation_windows(run.spec.data.valid, probe_len, windows))
    path = run.member("bench-seed1").checkpoint(0).path
    t0 = time.perf_counter()
    model = transformers.GPTNeoXForCausalLM.from_pretrained(path).float().eval()
    out = model(probe[:, :-1], output_hidden_states=True)
    logits = out.logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), probe[:, 1:].reshape(-1))
    loss.backward()
    acts = [h[:, -1].detach().numpy().astype(np.float16) for h in out.hidden_states]  # what would be kept
    got = {("", "probe_loss"): float(loss.detach())}
    for name, p in model.named_parameters():
        if p.ndim != 2 or not name.endswith(".weight"):
            continue
        name = "embed_out.weight" if name == "lm_head.weight" else name
        for prefix, x in (("", p.detach().numpy()), ("grad_", p.grad.numpy())):
            s = np.linalg.svd(x, compute_uv=False).astype(np.float64)
            q = s / s.sum()
            got[(name, prefix + "per")] = math.exp(-(q[q > 0] * np.log(q[q > 0])).sum()) / s.size
            l1, l2 = np.abs(x).sum(dtype=np.float64), math.sqrt(np.square(x, dtype=np.float64).sum())
            root = math.sqrt(x.size)
            got[(name, prefix + "hoyer")] = (root - l1 / l2) / (root - 1)
            if prefix:
                got[(name, "grad_norm")] = l2
                continue
            got[(name, "condition")] = s[0] / s[s >= 1e-7 * s[0]].min()
            a = np.sort(np.abs(x).ravel()).astype(np.float64)
            i = np.arange(1, a.size + 1, dtype=np.float64)
            got[(name, "gini")] = float(((2 * i - a.size - 1) * a).sum() / (a.size * a.sum()))
    del acts
    return got, time.perf_counter() - t0


def csv_row_bytes(run_dir: Path, rows: list) -> float:
    """Mean bytes of one of these rows in results.csv (with the run's who-and-when columns)."""
    from pythia.analysis.runner import full_rows
    from pythia.results import ResultsStore
    from pythia.run import open_run

    run = open_run(run_dir)
    member = run.member("bench-seed1")
    table = full_rows(run, member, 140000, "representations", rows)
    return len(ResultsStore(run_dir / "results").to_csv(table).encode()) / len(table)


def storage_lines(rows_bytes: float, windows: int) -> list[str]:
    from pythia.config import model_config

    lines = [f"storage per member on Pythia's grid ({PYTHIA_CHECKPOINTS} checkpoints), --probe-windows {windows} "
             f"(the default): float16 activations (n x d per layer, layers + 1) + result rows (7 per weight matrix, "
             f"{rows_bytes:.0f} bytes each in results.csv)"]
    for size in PYTHIA_SIZES:
        c = model_config(size)
        acts = windows * c.hidden_size * (c.num_layers + 1) * 2
        rows = (7 * (4 * c.num_layers + 2) + 1) * rows_bytes
        lines.append(f"  {size:<12} {acts * PYTHIA_CHECKPOINTS / 1e6:8.1f} MB activations + "
                     f"{rows * PYTHIA_CHECKPOINTS / 1e6:6.1f} MB rows")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="pythia-160m")
    p.add_argument("--windows", type=int, default=8, help="probe windows (--probe-windows)")
    p.add_argument("--probe-len", type=int, default=64)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="threads for torch and numpy (default: libraries')")
    args = p.parse_args(argv)
    limits = nullcontext()
    if args.threads:
        torch.set_num_threads(args.threads)
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(args.threads)
    with tempfile.TemporaryDirectory() as tmp, limits:
        run_dir = lay_out_run(Path(tmp), args.shape, args.windows, args.probe_len)
        ours(run_dir, args.windows, args.probe_len)  # warm-up: page cache, kernels, LAPACK workspaces
        mine, base = [], []
        for _ in range(args.reps):
            rows, s = ours(run_dir, args.windows, args.probe_len)
            mine.append(s)
            ref, s = baseline(run_dir, args.windows, args.probe_len)
            base.append(s)
        unit = csv_row_bytes(run_dir, rows)
        act = next((Path(run_dir) / "results" / "artifacts" / "representations").rglob("*.safetensors")).stat().st_size
    got = {(r.task, r.metric): r.value for r in rows}
    worst = max(abs(got[k] - v) / max(abs(v), 1e-12) for k, v in ref.items())
    med = statistics.median
    print(f"representations benchmark: {args.shape}, probe {args.windows} windows x {args.probe_len} tokens, CPU, "
          f"torch threads {torch.get_num_threads()}, reps {args.reps} (timings on a shared machine are noisy)")
    print(f"  ours   load + forward/backward + batched SVDs + activations written: {med(mine):8.2f} s/checkpoint")
    print(f"  plain  transformers + per-matrix numpy loop                    : {med(base):8.2f} s/checkpoint")
    print(f"  ratio plain loop / ours: {med(base) / med(mine):5.2f}x")
    print(f"  {len(ref)} numbers agree: worst relative difference {worst:.1e} (condition numbers of random-init "
          "matrices: float32 SVDs on both sides)")
    print(f"  this checkpoint's activations file: {act / 1e3:.1f} kB; {len(rows)} rows")
    print("\n".join(storage_lines(unit, 64)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
