"""`weights` on a pythia-160m-shaped checkpoint: seconds per checkpoint, the PolyPythias-suite
estimate (154 checkpoints x 10 seeds), and the ratio to a per-matrix numpy loop in this process.

The checkpoint is a random init written to disk with `save_pretrained` and loaded with
`load_model`, as `pythia analyze RUN weights` loads each checkpoint. Timed per repetition:
- ours: load + `weight_features` (batched `torch.linalg.svdvals` per shape group, on --device);
- baseline: the same 14 features from the loaded state dict with numpy, one
  `np.linalg.svd(W, compute_uv=False)` per matrix (float32, as loaded) -- the loop a
  transcription of extract_metrics.py into numpy would run, and the cheapest numpy SVD call;
  with --naive also the loop with `np.linalg.svd(W)` as called by default (it forms U and V too),
  timed once.
Both get the same threads (--threads; torch.set_num_threads + threadpoolctl for numpy). Medians
of --reps repetitions, alternating. Prints figures and whether the two agree; asserts nothing.

    .venv/bin/python benchmarks/bench_weights.py [--shape pythia-160m] [--device cpu|cuda] [--reps 3]
        [--threads N] [--naive]
    # custom shape: --shape layers=2,hidden=64,heads=4,vocab=512
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SUITE_CHECKPOINTS = 154 * 10


def parse_shape(text: str):
    from pythia.config import custom_config, model_config

    if "=" not in text:
        return model_config(text)
    kw = dict(item.split("=", 1) for item in text.split(","))
    return custom_config(num_layers=int(kw["layers"]), hidden_size=int(kw["hidden"]), num_heads=int(kw["heads"]),
                         vocab_size=int(kw["vocab"]))


def write_checkpoint(config, folder: Path) -> Path:
    from pythia.hf import save_pretrained
    from pythia.model import GPTNeoX

    torch.manual_seed(0)
    return save_pretrained(GPTNeoX(config), folder / "step0")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(path: Path, device: torch.device) -> tuple[dict, float, float]:
    """(features, load seconds, features seconds), the way the runner loads and computes."""
    from pythia.analysis.weights import weight_features
    from pythia.run import load_model

    t0 = time.perf_counter()
    model = load_model(path, device=device)
    sync(device)
    t1 = time.perf_counter()
    feats = weight_features(model)
    sync(device)
    return feats, t1 - t0, time.perf_counter() - t1


def numpy_features(path: Path, svd) -> tuple[dict, float]:
    """The 14 features with numpy, one `svd` call per weight matrix: (features, seconds after load)."""
    from pythia.analysis.weights import excluded
    from pythia.run import load_model

    state = {k: v.numpy() for k, v in load_model(path).state_dict().items() if not excluded(k)}
    t0 = time.perf_counter()
    mats = [v.reshape(v.shape[0], -1) for k, v in state.items() if k.endswith(".weight")]
    biases = [v.ravel() for k, v in state.items() if k.endswith(".bias")]
    per: dict[str, list] = {}
    for x in mats:
        s = svd(x).astype(np.float64)
        lam = s[0]
        s[s < 1e-5] = 0.0
        l1, tr = np.abs(x).sum(dtype=np.float64), np.trace(x, dtype=np.float64)
        l2 = np.sqrt((x.astype(np.float64) ** 2).sum())
        for k, v in (("L1", l1), ("L2", l2), ("L1/L2", l1 / l2), ("trace", tr), ("lambda_max", lam),
                     ("trace/lambda", tr / lam), ("mu_lambda", s.mean()), ("sigma_lambda", s.var(ddof=1))):
            per.setdefault(k, []).append(v)
    out = {k: float(np.mean(v)) for k, v in per.items()}
    for key, arrays in (("w", mats), ("b", biases)):
        flat = np.concatenate([a.ravel() for a in arrays]).astype(np.float64)
        out[f"mu_{key}"], out[f"sigma_{key}"] = flat.mean(), flat.var(ddof=1)
        out[f"median_{key}"] = np.partition(flat, (flat.size - 1) // 2)[(flat.size - 1) // 2]
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="pythia-160m")
    p.add_argument("--device", default="cpu", help="where ours runs: cpu or cuda (the numpy baseline is CPU)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="threads for torch and numpy (default: libraries')")
    p.add_argument("--naive", action="store_true", help="also time the loop with np.linalg.svd(W) as called by "
                   "default (U and V formed), once")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    limits = nullcontext()
    if args.threads:
        torch.set_num_threads(args.threads)
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(args.threads)
    config = parse_shape(args.shape)
    with tempfile.TemporaryDirectory() as tmp, limits:
        path = write_checkpoint(config, Path(tmp))
        ours(path, device)  # warm-up: page cache, kernels, LAPACK workspaces
        mine, load_s, feat_s, base_s = [], [], [], []
        for _ in range(args.reps):
            feats, a, b = ours(path, device)
            load_s.append(a)
            feat_s.append(b)
            mine.append(a + b)
            ref, c = numpy_features(path, lambda x: np.linalg.svd(x, compute_uv=False))
            base_s.append(c)
        naive = numpy_features(path, lambda x: np.linalg.svd(x)[1])[1] if args.naive else None
    report(args, config, device, feats, ref, mine, load_s, feat_s, base_s, naive)
    return 0


def report(args, config, device, feats, ref, mine, load_s, feat_s, base_s, naive) -> None:
    med = statistics.median
    worst = max(abs(feats[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in feats)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"weights benchmark: {args.shape} ({config.num_params(non_embedding=True) / 1e6:.1f}M non-embedding "
          f"params), device {device}{gpu}, torch threads {torch.get_num_threads()}, reps {args.reps}")
    print(f"  ours   load + features : {med(mine):8.3f} s/checkpoint "
          f"(load {med(load_s):.3f}, features {med(feat_s):.3f})")
    print(f"  numpy  per-matrix loop : {med(base_s):8.3f} s/checkpoint after load (np.linalg.svd(W, compute_uv=False))")
    print(f"  ratio numpy loop / our features        : {med(base_s) / med(feat_s):6.1f}x")
    print(f"  ratio numpy loop + load / ours with load: {(med(base_s) + med(load_s)) / med(mine):6.1f}x")
    if naive:
        print(f"  numpy  per-matrix loop, np.linalg.svd(W) (U, V formed): {naive:8.3f} s/checkpoint after load, once")
        print(f"  ratio that loop / our features         : {naive / med(feat_s):6.1f}x")
    print(f"  full suite ({SUITE_CHECKPOINTS} checkpoints = 154 x 10 seeds): "
          f"{med(mine) * SUITE_CHECKPOINTS / 3600:.2f} h "
          f"at {med(mine):.3f} s/checkpoint")
    print(f"  features agree with the numpy loop: worst relative difference {worst:.1e}")


if __name__ == "__main__":
    sys.exit(main())
