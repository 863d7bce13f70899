"""CPU: the memorization study's inner loop, 32-token prompts -> 32 greedy tokens, two model shapes.

Per shape: ours (`generate_greedy`: static KV cache, flat one-token steps, last-position head
only) vs transformers' `generate` with use_cache=False and use_cache=True, same weights, same
prompts, alternating runs, median of the repetitions; also checks the tokens agree. The goals
are >= 20x generate(use_cache=False) and >= 2x generate(use_cache=True) in sequences/s.
"module path" is the same greedy loop through the model's own layers (`GPTNeoX.forward_cached`
for every new token, same KV cache): what `generate.decode_step`'s flat copy of the layer
saves is the ratio printed as "ours / module path".

The pythia-14m shape (d=128) is dominated by the d x V output head, which every method pays per
new token, so recomputing the prompt costs transformers little; in a deeper shape (pythia-70m,
d=512, L=6) the trunk dominates and the no-cache recompute shows. "full-logits loop" is what
generate(use_cache=False) computed in transformers 4.x (the version Pythia's memorization runs
used): a full forward with (B, T, V) logits per new token; by default only on the first shape
(it is the slowest), timed after the others. Prints figures, asserts nothing.
Default run: ~2 minutes on 1 thread.

    .venv/bin/python benchmarks/bench_generate.py [--shape pythia-14m:16 --shape pythia-70m:16]
        [--reps 5 --threads 1 --full-logits first|all|none]
    # custom shape: --shape layers=4,hidden=256,heads=4,vocab=50304:16
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

OURS = "pythia generate_greedy (KV cache)"
MODULES = "pythia forward_cached per token (module path)"
HF_NOCACHE = "transformers generate use_cache=False"
HF_CACHE = "transformers generate use_cache=True"
FULL = "transformers 4.x full-logits loop (no cache)"


def parse_shape(text: str):
    """'pythia-70m:8' or 'layers=4,hidden=256,heads=4,vocab=50304:16' -> (ModelConfig, batch)."""
    from pythia.config import custom_config, model_config

    spec, _, batch = text.partition(":")
    if "=" in spec:
        kw = dict(item.split("=", 1) for item in spec.split(","))
        cfg = custom_config(num_layers=int(kw["layers"]), hidden_size=int(kw["hidden"]), num_heads=int(kw["heads"]),
                            vocab_size=int(kw.get("vocab", 50304)), gelu="exact")
    else:
        cfg = model_config(spec).replace(gelu="exact")  # gelu as in the HF configs, so the outputs compare
    return cfg, int(batch or 16)


def timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def bench_shape(cfg, batch: int, args, full_logits: bool) -> None:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from pythia.generate import generate_greedy
    from pythia.hf import to_hf_config
    from pythia.model import GPTNeoX, KVCache

    torch.manual_seed(0)
    ours = GPTNeoX(cfg).eval()
    hf = GPTNeoXForCausalLM(GPTNeoXConfig(**{k: v for k, v in to_hf_config(cfg).items() if k != "pythia_config"}))
    hf.load_state_dict({("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in ours.state_dict().items()})
    hf.eval()
    prompts = torch.randint(0, cfg.vocab_size, (batch, args.prompt))
    mask = torch.ones_like(prompts)

    def hf_gen(use_cache):
        def run():
            with torch.inference_mode():
                return hf.generate(prompts, attention_mask=mask, max_new_tokens=args.new, min_new_tokens=args.new,
                                   do_sample=False, num_beams=1, use_cache=use_cache, pad_token_id=0, eos_token_id=None)
        return run

    def hf_full_logits_loop():
        ids = prompts
        with torch.inference_mode():
            for _ in range(args.new):
                nxt = hf(ids, attention_mask=torch.ones_like(ids)).logits[:, -1].argmax(-1)  # (B,)
                ids = torch.cat([ids, nxt[:, None]], dim=1)  # (B, T+1)
        return ids

    def module_path():
        with torch.inference_mode():
            B, P = prompts.shape
            cache = KVCache.allocate(ours, B, P + args.new)
            logits, new = ours.forward_cached(prompts, cache, start=0), []  # (B, V)
            for i in range(args.new):
                new.append(logits.argmax(-1))  # (B,): first index on ties, as generate_greedy
                if i + 1 < args.new:
                    logits = ours.forward_cached(new[-1][:, None], cache, start=P + i)
            return torch.cat([prompts, torch.stack(new, 1)], dim=1)

    runs = {OURS: lambda: generate_greedy(ours, prompts, args.new), MODULES: module_path,
            HF_NOCACHE: hf_gen(False), HF_CACHE: hf_gen(True)}
    outputs = {k: f() for k, f in runs.items()}  # warmup + agreement check
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.reps):  # alternate the runs so load drifts hit all alike
        for k, f in runs.items():
            times[k].append(timed(f))
    if full_logits:  # timed on its own afterwards: its (B, T, V) logits would flush the caches mid-rotation
        outputs[FULL] = hf_full_logits_loop()
        times[FULL] = [timed(hf_full_logits_loop) for _ in range(args.reps)]

    print(f"{cfg.name}: L={cfg.num_layers} d={cfg.hidden_size} H={cfg.num_heads} V={cfg.vocab_size}, fp32; "
          f"batch {batch}, {args.prompt}-token prompts + {args.new} greedy tokens")
    rate = {}
    for k, v in times.items():
        med = statistics.median(v)
        rate[k] = batch / med
        same = torch.equal(outputs[k], outputs[OURS])
        print(f"  {k:<46} {rate[k]:8.1f} seq/s  (median {med * 1e3:8.1f} ms/batch; reps "
              f"{', '.join(f'{t * 1e3:.0f}' for t in v)}; tokens identical to ours: {same})")
    for name, goal in ((HF_NOCACHE, 20.0), (HF_CACHE, 2.0)):
        x = rate[OURS] / rate[name]
        print(f"  ours / {name:<40} {x:6.1f}x  (goal >= {goal:g}x: {'met' if x >= goal else 'NOT met'})")
    print(f"  ours / {'module path':<40} {rate[OURS] / rate[MODULES]:6.2f}x  (what decode_step's flat layer saves)")
    if FULL in rate:
        print(f"  ours / {FULL:<40} {rate[OURS] / rate[FULL]:6.1f}x  (transformers 4.x use_cache=False compute)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", action="append",
                   help="NAME[:BATCH] or layers=..,hidden=..,heads=..[,vocab=..][:BATCH]; repeatable "
                        "(default: pythia-14m:16 and pythia-70m:16)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared, oversubscribed CPU, more threads mostly "
                        "measure OpenMP barrier waits; 0 = torch's choice)")
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--full-logits", choices=["first", "all", "none"], default="first",
                   help="where to run the transformers-4.x-style full-logits baseline (the slowest; default: "
                        "first shape only)")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [parse_shape(s) for s in (args.shape or ["pythia-14m:16", "pythia-70m:16"])]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, reps {args.reps} (+1 warmup), "
          f"ratios are sequences/s of ours over the baseline")
    t0 = time.perf_counter()
    for i, (cfg, batch) in enumerate(shapes):
        bench_shape(cfg, batch, args, full_logits=args.full_logits == "all" or (args.full_logits == "first" and i == 0))
    print(f"total benchmark time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
