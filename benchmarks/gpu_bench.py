"""GPU benchmark, ours beside transformers in one run (prepared for one H100 / H200).

1. bf16 training throughput at seq 2048 for pythia-160m, -410m, -1b shapes: tokens/s and MFU
   (fp32 master weights, torch.autocast bf16). Ours is the trainer's own `Trainer.train_step` on
   a real MemberRun (random tokens): the batch read, fused head + loss (pythia.loss), clipping
   and AdamW that `pythia train` runs. Transformers computes logits then fp32 cross-entropy like
   its own loss function, with the same clip and torch's fused AdamW.
2. The memorization study's generation: pythia-410m in fp16, batch 1024, 32-token prompts + 32
   greedy tokens: sequences/s of our KV-cache generator vs transformers.generate with
   use_cache=True and use_cache=False, and how many rows agree.
3. When this tree has pythia.analysis.weights: seconds per checkpoint of the `weights` analysis
   (singular values of every weight matrix) on a pythia-160m-shaped model; skipped with a note
   otherwise.

Random weights and tokens (nothing to download); prints a table and, with --out, writes JSON.
`--cpu-smoke` runs the same code on CPU with tiny configs to check the script itself.

    python benchmarks/gpu_bench.py [--out results.json]          # on the GPU machine
    python benchmarks/gpu_bench.py --cpu-smoke                    # anywhere, seconds
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import torch
import torch.nn.functional as F

# Dense bf16 tensor-core peak (no sparsity) per device name fragment, FLOP/s.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def twin(cfg, device, dtype=torch.float32):
    """Our model and a transformers model with the same weights."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from pythia.hf import to_hf_config
    from pythia.model import GPTNeoX

    torch.manual_seed(0)
    ours = GPTNeoX(cfg, device=device, dtype=dtype)
    hf_cfg = GPTNeoXConfig(**{k: v for k, v in to_hf_config(cfg).items() if k != "pythia_config"})
    hf_cfg._attn_implementation = "sdpa"
    with torch.device(device):
        hf = GPTNeoXForCausalLM(hf_cfg).to(dtype)
    hf.load_state_dict({("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in ours.state_dict().items()})
    return ours, hf


def time_steps(fn, device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class RandomOrder:
    """Stands in for a TrainingOrder: .batch(step, B) -> (B, S+1) int64 random tokens."""

    def __init__(self, vocab: int, seq: int, batches: int = 4):
        rng = np.random.default_rng(0)
        self.tokens = rng.integers(0, vocab, size=(batches, seq + 1), dtype=np.int64)

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        rows = (np.arange(batch_size) + step * batch_size) % len(self.tokens)
        return self.tokens[rows]


def pythia_trainer(cfg, model, micro_batch, seq, device, out_dir):
    """A real Trainer on a MemberRun (bf16, one rank, global batch = micro batch): its train_step
    is the function `pythia train` calls each update (order.batch, fused loss, clip, AdamW)."""
    from pythia.train.distributed import DistContext
    from pythia.train.spec import Member, SuiteSpec
    from pythia.train.trainer import MemberRun, Trainer

    spec = SuiteSpec.from_dict({
        "name": "gpu-bench", "output": str(out_dir),
        "data": {"train": str(out_dir / "unused"), "seq_len": seq},
        "train": {"iters": 10**6, "global_batch": micro_batch, "micro_batch": micro_batch, "precision": "bf16",
                  "device": device.type, "warmup_fraction": 0.0, "lr": 1e-4},
        "checkpoints": {"interval": 10**6, "log_spaced": False},
        "members": [{"name": "bench", "num_layers": 1, "hidden_size": 8, "num_heads": 1}],  # shape from `member`
    })
    member = Member(name=cfg.name, config=cfg, seed=0, data_seed=0, lr=1e-4, min_lr=1e-5)
    run = MemberRun(member=member, spec=spec, member_dir=out_dir / cfg.name, order=RandomOrder(cfg.vocab_size, seq),
                    ctx=DistContext(device=device), build_model=lambda config, dev: model)
    trainer = Trainer(run)
    trainer.setup()
    return trainer


def bench_training(cfg, micro_batch, seq, device, warmup, steps, peak):
    """Ours: the Trainer's own train_step. Transformers: its forward + fp32 cross-entropy, the
    same clip and a fused torch AdamW (the fastest stock optimizer), same weights and tokens."""
    from pythia.model import flops_per_token

    rows = []
    ours, hf = twin(cfg, device)
    fpt = flops_per_token(cfg, seq)
    tmp = tempfile.TemporaryDirectory()
    trainer = pythia_trainer(cfg, ours, micro_batch, seq, device, Path(tmp.name))
    tokens = torch.from_numpy(trainer.run.order.batch(0, micro_batch)).to(device)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                               fused=device.type == "cuda")
    counter = iter(range(10**9))

    def hf_step():
        hf_opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = hf(inputs).logits  # (B, T, V)
            loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        hf_opt.step()

    for name, model, step in (("pythia", ours, lambda: trainer.train_step(next(counter))),
                              ("transformers", hf, hf_step)):
        model.train()
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            dt = time_steps(step, device, warmup, steps)
            tps = micro_batch * seq / dt
            mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            rows.append(dict(model=cfg.name, impl=name, micro_batch=micro_batch, seq=seq, step_s=dt,
                             tokens_per_s=tps, mfu=tps * fpt / peak if peak else None, peak_mem_gib=mem))
        except torch.cuda.OutOfMemoryError:
            rows.append(dict(model=cfg.name, impl=name, micro_batch=micro_batch, seq=seq, error="OOM"))
        if name == "pythia":  # free our model and optimizer before measuring the baseline
            trainer.log.close()
            del trainer
            ours.cpu()
        free(device)
    del ours, hf, hf_opt
    tmp.cleanup()
    free(device)
    return rows


def bench_generation(cfg, batch, prompt_len, new, device, dtype, reps, with_nocache=True):
    from pythia.generate import generate_greedy

    ours, hf = twin(cfg, device, dtype)
    ours.eval()
    hf.eval()
    torch.manual_seed(1)
    prompts = torch.randint(0, 50277, (batch, prompt_len), device=device) % cfg.vocab_size
    mask = torch.ones_like(prompts)

    def hf_run(use_cache):
        def run():
            with torch.inference_mode():
                return hf.generate(prompts, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                   do_sample=False, num_beams=1, use_cache=use_cache, pad_token_id=0,
                                   eos_token_id=None)
        return run

    runs = {"pythia": lambda: generate_greedy(ours, prompts, new), "transformers use_cache=True": hf_run(True)}
    if with_nocache:
        runs["transformers use_cache=False"] = hf_run(False)
    rows, ref = [], None
    for name, fn in runs.items():
        try:
            out = fn()
            ref = out if ref is None else ref
            dt = time_steps(fn, device, warmup=0, steps=reps)
            agree = (out == ref).all(dim=1).float().mean().item()
            rows.append(dict(model=cfg.name, impl=name, dtype=str(dtype), batch=batch, seq_per_s=batch / dt,
                             s_per_batch=dt, rows_identical_to_ours=agree))
        except torch.cuda.OutOfMemoryError:
            rows.append(dict(model=cfg.name, impl=name, batch=batch, error="OOM"))
        free(device)
    del ours, hf
    free(device)
    return rows


def bench_weights(cfg, device, reps: int = 2) -> list[dict]:
    """Seconds per checkpoint of the `weights` analysis (singular values of every weight
    matrix) on one model, when this tree has pythia.analysis.weights; else a note."""
    try:
        from pythia.analysis import weights as analysis
    except ImportError as exc:
        print(f"  skipped: pythia.analysis.weights is not in this tree ({exc})")
        return []
    fn = next((getattr(analysis, n) for n in ("weight_features", "checkpoint_features", "compute", "features")
               if callable(getattr(analysis, n, None))), None)
    if fn is None:
        public = [n for n in dir(analysis) if not n.startswith("_") and callable(getattr(analysis, n))]
        print(f"  skipped: no weight_features/compute entry point in pythia.analysis.weights (has {public})")
        return []
    torch.manual_seed(0)
    from pythia.model import GPTNeoX

    model = GPTNeoX(cfg, device=device)
    state = model.state_dict()
    call = lambda: fn(state)  # noqa: E731  (state dict of one checkpoint, on the device)
    dt = time_steps(call, device, warmup=1, steps=reps)
    row = dict(model=cfg.name, impl=f"pythia.analysis.weights.{fn.__name__}", s_per_checkpoint=dt)
    print(f"  {row['impl']:<44}{dt:>8.2f} s per checkpoint ({cfg.name}; x154 checkpoints x10 seeds: "
          f"{dt * 1540 / 3600:.1f} h)")
    del model, state
    free(device)
    return [row]


def main() -> None:
    from pythia.config import custom_config, model_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny configs on CPU, to check the script runs")
    p.add_argument("--sizes", default="pythia-160m,pythia-410m,pythia-1b")
    p.add_argument("--micro-batch", type=int, help="sequences per training step (default per size)")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--gen-size", default="pythia-410m")
    p.add_argument("--gen-batch", type=int, default=1024)
    p.add_argument("--gen-reps", type=int, default=2)
    p.add_argument("--no-gen-nocache", action="store_true", help="skip transformers use_cache=False (slowest)")
    p.add_argument("--weights-size", default="pythia-160m", help="model for the `weights` analysis section")
    p.add_argument("--no-weights", action="store_true", help="skip the `weights` analysis section")
    p.add_argument("--peak-tflops", type=float, help="bf16 peak for MFU (default: from the device name)")
    p.add_argument("--out", help="write all figures as JSON here")
    args = p.parse_args()

    if args.cpu_smoke:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # tiny ops: extra threads only add barrier waits
        tiny = custom_config(num_layers=2, hidden_size=64, num_heads=4, vocab_size=512, name="tiny")
        train_cfgs = [(tiny, 2)]
        seq, gen_cfg, gen_batch, gen_dtype = 64, tiny, 8, torch.float32
        weights_cfg = tiny
        args.warmup, args.steps, args.gen_reps = 1, 2, 1
        peak = args.peak_tflops * 1e12 if args.peak_tflops else None
        name = "cpu"
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device; use --cpu-smoke to dry-run")
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name(device)
        peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
            (v for k, v in PEAK_BF16.items() if k in name), None)
        default_micro = {"pythia-160m": 16, "pythia-410m": 8, "pythia-1b": 4}
        train_cfgs = [(model_config(s), args.micro_batch or default_micro.get(s, 4)) for s in args.sizes.split(",") if s]
        seq, gen_cfg, gen_batch, gen_dtype = args.seq, model_config(args.gen_size), args.gen_batch, torch.float16
        weights_cfg = model_config(args.weights_size)

    import transformers

    print(f"device {name}; torch {torch.__version__}; transformers {transformers.__version__}; "
          f"peak bf16 {peak / 1e12 if peak else 'unknown'} TFLOP/s")
    results = {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
               "training": [], "generation": [], "weights": []}
    print(f"\n[training] bf16 autocast, seq {seq}, median of {args.steps} steps after {args.warmup} warmup")
    print(f"  {'model':<13}{'impl':<14}{'micro':>6}{'step ms':>10}{'tokens/s':>12}{'MFU':>8}{'mem GiB':>9}")
    for cfg, micro in train_cfgs:
        rows = bench_training(cfg, micro, seq, device, args.warmup, args.steps, peak)
        results["training"] += rows
        for r in rows:
            if "error" in r:
                print(f"  {r['model']:<13}{r['impl']:<14}{micro:>6}  {r['error']}")
                continue
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a"
            print(f"  {r['model']:<13}{r['impl']:<14}{micro:>6}{r['step_s'] * 1e3:>10.1f}{r['tokens_per_s']:>12,.0f}"
                  f"{mfu:>8}{r['peak_mem_gib']:>9.1f}")
        ok = {r["impl"]: r for r in rows if "error" not in r}
        if len(ok) == 2:
            print(f"  -> {cfg.name}: ours / transformers tokens/s = "
                  f"{ok['pythia']['tokens_per_s'] / ok['transformers']['tokens_per_s']:.2f}x")

    print(f"\n[generation] {gen_cfg.name} {str(gen_dtype).removeprefix('torch.')}, batch {gen_batch}, 32-token prompts "
          f"+ 32 greedy tokens")
    rows = bench_generation(gen_cfg, gen_batch, 32, 32, device, gen_dtype, args.gen_reps, not args.no_gen_nocache)
    results["generation"] = rows
    for r in rows:
        if "error" in r:
            print(f"  {r['impl']:<32} {r['error']}")
        else:
            print(f"  {r['impl']:<32}{r['seq_per_s']:>12,.1f} seq/s  ({r['s_per_batch']:.2f} s/batch; "
                  f"rows identical to ours {100 * r['rows_identical_to_ours']:.1f}%)")
    ok = {r["impl"]: r for r in rows if "error" not in r}
    for base in ("transformers use_cache=True", "transformers use_cache=False"):
        if "pythia" in ok and base in ok:
            print(f"  -> ours vs {base}: {ok['pythia']['seq_per_s'] / ok[base]['seq_per_s']:.1f}x")
    if not args.no_weights:
        print(f"\n[weights analysis] {weights_cfg.name} fp32 weights on {device.type}")
        results["weights"] = bench_weights(weights_cfg, device)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
