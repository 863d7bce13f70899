"""`icl` + `heads` + logit `lens` on a pythia-160m-shaped checkpoint: seconds per checkpoint, the
estimate for Pythia's 154-checkpoint grid, and the ratio to a plain transformers loop computing
the same numbers in this process.

The checkpoint is a random init written with `save_pretrained`, loaded per repetition as the
runner loads it. Timed per repetition (medians of --reps, alternating):
- ours: `load_model` + `held_out_sums(lens=True)` (one pass per batch of held-out windows: loss
  by position, logit-lens KL/CE per layer, prediction depth) + `head_scores` (the probe's
  attention patterns through hooks, and the OV copying scores) -- what `pythia analyze RUN
  icl,heads,lens` computes per checkpoint;
- baseline: `GPTNeoXForCausalLM.from_pretrained(attn_implementation="eager")`, a forward with
  `output_hidden_states=True` per batch of windows, each layer's logits through the final
  LayerNorm and `embed_out` (full (B, T, V) tensors), then the probe with `output_attentions=True`
  and the same scores; the copying scores by the same eigenvalue formula per head.
Both use the same threads (--threads). Prints figures and the largest difference between the two
sets of numbers; asserts nothing.

    .venv/bin/python benchmarks/bench_mechanisms.py [--shape pythia-160m] [--windows 2] [--seq-len 2048]
        [--probe 64x25x4] [--reps 3] [--threads N] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

GRID = 154


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(path, windows, probe, r, device, batch):
    from pythia.run import load_model
    from pythia.mechanisms.heads import head_scores
    from pythia.mechanisms.lens import held_out_sums

    t0 = time.perf_counter()
    model = load_model(path, device=device)
    sums = held_out_sums(model, windows, lens=True, batch=batch, device=device)
    heads = head_scores(model, probe, r, batch=16, device=device)
    sync(device)
    n = sums.positions
    return {"ce_by_position": sums.ce_by_position / sums.windows, "kl": sums.kl / n, "ce": sums.ce / n,
            "depth": np.array([sums.depth / n]), **heads}, time.perf_counter() - t0


@torch.no_grad()
def baseline(path, windows, probe, r, device, batch):
    from transformers import GPTNeoXForCausalLM

    t0 = time.perf_counter()
    hf = GPTNeoXForCausalLM.from_pretrained(path, attn_implementation="eager").to(device).eval()
    ln, head = hf.gpt_neox.final_layer_norm, hf.get_output_embeddings()
    L = hf.config.num_hidden_layers
    w = torch.as_tensor(windows).to(device)
    ce_pos = torch.zeros(w.shape[1] - 1, dtype=torch.float64, device=device)
    kl, ce, depth, count = torch.zeros(L + 1, dtype=torch.float64), torch.zeros(L + 1, dtype=torch.float64), 0.0, 0
    for s in range(0, len(w), batch):
        x, y = w[s:s + batch, :-1], w[s:s + batch, 1:]
        out = hf(x, output_hidden_states=True)
        logp_final = out.logits.float().log_softmax(-1)
        ce_pos += -logp_final.gather(-1, y[..., None])[..., 0].double().sum(0)
        top = logp_final.argmax(-1)
        agree = []
        for l in range(L + 1):  # hidden_states[L] is already normed by transformers
            logp = logp_final if l == L else head(ln(out.hidden_states[l])).float().log_softmax(-1)
            kl[l] += (logp_final.exp() * (logp_final - logp)).sum().double().cpu()
            ce[l] += -logp.gather(-1, y[..., None]).sum().double().cpu()
            agree.append(logp.argmax(-1) == top)
        trailing = torch.stack(agree).flip(0).long().cumprod(0).sum(0)
        depth += float((L + 1 - trailing).sum())
        count += y.numel()
    p = torch.as_tensor(probe).to(device)
    T = p.shape[1]
    sums = {k: np.zeros((L, hf.config.num_attention_heads)) for k in ("prev_token", "duplicate", "induction")}
    for s in range(0, len(p), 16):
        x = p[s:s + 16]
        att = hf(x, output_attentions=True).attentions
        same = (x[:, :, None] == x[:, None, :]) & torch.ones(T, T, dtype=torch.bool, device=device).tril(-1)
        after = torch.zeros_like(same)
        after[:, :, 1:] = same[:, :, :-1]
        for l, a in enumerate(att):
            a = a.double()
            sums["prev_token"][l] += a.diagonal(-1, -2, -1).mean(-1).sum(0).cpu().numpy()
            sums["duplicate"][l] += (a * same[:, None]).sum(-1)[:, :, r:].mean(-1).sum(0).cpu().numpy()
            sums["induction"][l] += (a * after[:, None]).sum(-1)[:, :, r:].mean(-1).sum(0).cpu().numpy()
    heads = {k: v / len(p) for k, v in sums.items()}
    cfg = hf.config
    H, d = cfg.num_attention_heads, cfg.hidden_size
    dh = d // H
    eu = hf.gpt_neox.embed_in.weight.double().t() @ head.weight.double()
    copying = np.zeros((L, H))
    for l, layer in enumerate(hf.gpt_neox.layers):
        qkv = layer.attention.query_key_value.weight.double().view(H, 3, dh, d)
        for h in range(H):
            w_o = layer.attention.dense.weight.double()[:, h * dh:(h + 1) * dh]
            lam = torch.linalg.eigvals(qkv[h, 2] @ eu @ w_o)
            copying[l, h] = float(lam.real.sum() / lam.abs().sum())
    heads["copying"] = copying
    sync(device)
    return {"ce_by_position": (ce_pos / len(w)).cpu().numpy(), "kl": (kl / count).numpy(), "ce": (ce / count).numpy(),
            "depth": np.array([depth / count]), **heads}, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="pythia-160m")
    ap.add_argument("--windows", type=int, default=2, help="held-out windows per checkpoint")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--probe", default="64x25x4", help="n x r x R")
    ap.add_argument("--batch", type=int, default=1, help="windows per forward pass (both)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from pythia.config import model_config
    from pythia.hf import save_pretrained
    from pythia.mechanisms.heads import repeated_tokens
    from pythia.model import GPTNeoX

    device = torch.device(args.device)
    config = model_config(args.shape)
    n, r, R = (int(v) for v in args.probe.split("x"))
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 50277, size=(args.windows, args.seq_len + 1))
    probe = repeated_tokens(n, r, R, np.arange(2, 50277), 0)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        path = save_pretrained(GPTNeoX(config), Path(tmp) / "step0")
        times = {"ours": [], "transformers": []}
        results = {}
        for _ in range(args.reps):
            for name, fn in (("ours", ours), ("transformers", baseline)):
                results[name], t = fn(path, windows, probe, r, device, args.batch)
                times[name].append(t)
    a, b = statistics.median(times["ours"]), statistics.median(times["transformers"])
    diff = max(float(np.max(np.abs(np.asarray(results["ours"][k]) - np.asarray(results["transformers"][k]))))
               for k in results["ours"])
    print(f"{args.shape}, {args.windows} held-out windows x {args.seq_len + 1} tokens, probe {n} x {r} x {R}, "
          f"{torch.get_num_threads()} threads, {device}, median of {args.reps}")
    print(f"  ours (icl + heads + logit lens, load included): {a:.2f} s/checkpoint; {GRID} checkpoints: "
          f"{a * GRID / 3600:.2f} h")
    print(f"  transformers loop (eager attention, hidden states): {b:.2f} s/checkpoint; ratio {b / a:.2f}x "
          f"({'ours faster' if a <= b else 'ours SLOWER'})")
    print(f"  largest difference between the two sets of numbers: {diff:.2e}")


if __name__ == "__main__":
    main()
