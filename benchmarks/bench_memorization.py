"""Memorization scoring: our two methods vs Pythia's own procedure, sequences/s, one process.

The job is the memorization analysis' inner loop: N training-like sequences of 64 tokens, a
32-token prompt and the 32-token target, scored by greedy decoding with the end-of-document
token suppressed (Pythia's eval_memorization.py: transformers `generate(max_length=64,
min_length=64)` on a model loaded with use_cache=False). Measured, same weights, same sequences:

  exact, score prefix   one teacher-forced pass: the memorized set and matched prefixes, no decoding
  exact, score full     + greedy decoding past each row's first mismatch: Pythia's position-wise score
  generate              our static-KV-cache greedy decoder on every sequence: Pythia's score
  transformers no cache Pythia's procedure: generate(use_cache=False, min_length=64)
  transformers cached   generate(use_cache=True, min_length=64)

The transformers baselines run on the first --baseline-sequences sequences only (they are the
slow part); sequences/s is the comparable figure, and the scores of those sequences are
compared with ours. The methods take turns batch by batch, so load drifts on a shared machine
hit all of them alike. Goals (issue 10): exact >= 20x Pythia's procedure, generate >= 3x
transformers with its cache. A fraction --memorized of the sequences continue with the model's
own greedy output, so some are memorized (Pythia's models memorize ~0.3-1.6 %). Prints figures,
asserts nothing.

    python benchmarks/bench_memorization.py                   # CPU, d=256 L=4 V=50304, 4,096 sequences
    python benchmarks/bench_memorization.py --smoke           # seconds: checks the code path
    python benchmarks/bench_memorization.py --device cuda --size pythia-410m --dtype float16 --batch 1024
"""
from __future__ import annotations

import argparse
import time

import torch

P = C = 32


def build(args):
    """(our model, the transformers model with the same weights)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from pythia.config import custom_config, model_config
    from pythia.hf import to_hf_config
    from pythia.model import GPTNeoX

    if "=" in args.size:
        kw = dict(item.split("=", 1) for item in args.size.split(","))
        cfg = custom_config(num_layers=int(kw["layers"]), hidden_size=int(kw["hidden"]), num_heads=int(kw["heads"]),
                            vocab_size=int(kw.get("vocab", 50304)), gelu="exact")
    else:
        cfg = model_config(args.size).replace(gelu="exact")  # gelu as the HF config says, so outputs compare
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    ours = GPTNeoX(cfg, device=args.device).to(dtype).eval()
    hf_cfg = GPTNeoXConfig(**{k: v for k, v in to_hf_config(cfg).items() if k != "pythia_config"})
    hf = GPTNeoXForCausalLM(hf_cfg).to(device=args.device, dtype=dtype).eval()
    hf.load_state_dict({("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in ours.state_dict().items()})
    return cfg, ours, hf


def sequences(model, vocab: int, n: int, memorized: float, batch: int, device) -> torch.Tensor:
    """(n, 64) tokens: random, except a fraction whose continuation is the model's own greedy one."""
    from pythia.generate import generate_greedy

    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, vocab, (n, P + C), generator=g).to(device)
    k = int(round(n * memorized))
    for i in range(0, k, batch):
        j = min(k, i + batch)
        tokens[i:j] = generate_greedy(model, tokens[i:j, :P], C, suppress=0)
    return tokens[torch.randperm(n, generator=g).to(device)]


def timed(fn, tokens, device) -> tuple[float, torch.Tensor]:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(tokens)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def ours_fn(model, method, score):
    from pythia.memorization import score_sequences

    return lambda tokens: score_sequences(model, tokens, P, C, method, score, suppress=0)


def hf_fn(hf, use_cache):
    def run(tokens):
        with torch.inference_mode():
            prompt = tokens[:, :P]
            gen = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_length=P + C, min_length=P + C,
                              do_sample=False, num_beams=1, use_cache=use_cache, eos_token_id=0, pad_token_id=0)
        return (gen[:, P:] == tokens[:, P:]).sum(1)
    return run


def interleaved(runs: dict, tokens: torch.Tensor, batch: int, device) -> tuple[dict, dict]:
    """Round by round, every method in turn (the order rotating), so that load drifts on a
    shared machine hit all alike; a method that scores fewer sequences (the baselines) has its
    batches spread evenly over the rounds. runs: {name: (fn, number of sequences it scores)}.
    Returns ({name: seconds}, {name: scores in sequence order})."""
    rounds = -(-len(tokens) // batch)
    plan = {k: {round(b * rounds / -(-n // batch)): b for b in range(-(-n // batch))} for k, (_, n) in runs.items()}
    secs = {k: 0.0 for k in runs}
    outs: dict = {k: [] for k in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, n = runs[name]
            if r in plan[name]:
                lo = plan[name][r] * batch
                sec, out = timed(fn, tokens[lo:min(lo + batch, n)], device)
                secs[name] += sec
                outs[name].append(out.cpu())
    return secs, {k: torch.cat(v) for k, v in outs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", default="layers=4,hidden=256,heads=4,vocab=50304",
                   help="a Pythia size (pythia-410m) or layers=..,hidden=..,heads=..[,vocab=..] (random init)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--batch", type=int, default=256, help="sequences per call, every method")
    p.add_argument("--sequences", type=int, default=4096)
    p.add_argument("--baseline-sequences", type=int, default=None,
                   help="sequences for the transformers baselines (default: 4 batches, at most --sequences)")
    p.add_argument("--memorized", type=float, default=0.02, help="fraction of sequences made memorized")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch's choice)")
    p.add_argument("--smoke", action="store_true", help="tiny model and counts: exercise the code path in seconds")
    args = p.parse_args()
    if args.smoke:
        args.size, args.sequences, args.batch = "layers=2,hidden=64,heads=4,vocab=512", 64, 16
    if args.threads:
        torch.set_num_threads(args.threads)
    base_n = min(args.sequences, args.baseline_sequences or 4 * args.batch)

    cfg, ours, hf = build(args)
    tokens = sequences(ours, cfg.vocab_size, args.sequences, args.memorized, args.batch, args.device)
    print(f"{cfg.name}: L={cfg.num_layers} d={cfg.hidden_size} H={cfg.num_heads} V={cfg.vocab_size}, {args.dtype} on "
          f"{args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}; batch {args.batch}; "
          f"{args.sequences} sequences (transformers: the first {base_n}), {P}+{C} tokens, EOD suppressed")
    warm = tokens[:min(8, len(tokens))]
    ours_fn(ours, "exact", "full")(warm), hf_fn(hf, True)(warm)  # kernels, caches, the head copy
    runs = {
        "exact, score prefix (memorized set)": (ours_fn(ours, "exact", "prefix"), len(tokens)),
        "exact, score full": (ours_fn(ours, "exact", "full"), len(tokens)),
        "generate": (ours_fn(ours, "generate", "full"), len(tokens)),
        "transformers cached": (hf_fn(hf, True), base_n),
        "transformers no cache (Pythia)": (hf_fn(hf, False), base_n),
    }
    secs, out = interleaved(runs, tokens, args.batch, args.device)
    rate = {}
    for name, (_, n) in runs.items():
        rate[name] = n / secs[name]
        print(f"  {name:<36} {rate[name]:10.1f} seq/s  ({n} sequences in {secs[name]:.1f} s)", flush=True)
    full = out["exact, score full"]
    print(f"  memorized: {int((full == C).sum())}/{len(full)}; on the first {base_n}: exact full == generate: "
          f"{torch.equal(full[:base_n], out['generate'][:base_n])}, == transformers no cache: "
          f"{torch.equal(full[:base_n], out['transformers no cache (Pythia)'])}, == transformers cached: "
          f"{torch.equal(full[:base_n], out['transformers cached'])}")
    for name, against, goal in (("exact, score prefix (memorized set)", "transformers no cache (Pythia)", 20),
                                ("exact, score full", "transformers no cache (Pythia)", 20),
                                ("generate", "transformers no cache (Pythia)", None),
                                ("generate", "transformers cached", 3)):
        x = rate[name] / rate[against]
        verdict = f"  (goal >= {goal}x: {'met' if x >= goal else 'NOT met'})" if goal else ""
        print(f"  {name} / {against}: {x:6.1f}x{verdict}")


if __name__ == "__main__":
    main()
