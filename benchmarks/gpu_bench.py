"""GPU benchmark, ours beside transformers in one run (prepared for one H100 / H200).

1. bf16 training throughput at seq 2048 for pythia-160m, -410m, -1b shapes: tokens/s and MFU
   (fp32 master weights, torch.autocast bf16), every variant in one process: ours eager and
   compiled (`train.compile`), at the default micro batch, twice it and `train.micro_batch:
   auto`, with CUDA graphs (compile mode reduce-overhead) at 160m; transformers eager and
   compiled. Ours is the trainer's own `Trainer.train_step` on a real MemberRun (random
   tokens): the batch read, fused head + loss (pythia.loss), clipping and AdamW that `pythia
   train` runs, with its statistics read every few steps as in training. Transformers computes
   logits then fp32 cross-entropy like its own loss function, with the same clip and torch's
   fused AdamW (compiled: model + loss in one torch.compile graph). Variants run in priority
   order (410m's full comparison first) within --budget seconds; the rest are listed as skipped.
2. The memorization study's generation: pythia-410m in fp16, batch 1024, 32-token prompts + 32
   greedy tokens: sequences/s of our KV-cache generator vs transformers.generate with
   use_cache=True and use_cache=False, and how many rows agree.
3. When this tree has pythia.analysis.weights: seconds per checkpoint of the `weights` analysis
   (singular values of every weight matrix) on a pythia-160m-shaped model; skipped with a note
   otherwise.

Random weights and tokens (nothing to download); prints a table and, with --out, writes JSON.
`--cpu-smoke` runs the same code on CPU with tiny configs (fp32) to check the script itself.

    python benchmarks/gpu_bench.py [--sections training --budget 280] [--out results.json]  # GPU
    python benchmarks/gpu_bench.py --cpu-smoke                    # anywhere; minutes (it compiles)
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
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

    def __init__(self, vocab: int, seq: int, batches: int = 64):
        rng = np.random.default_rng(0)
        self.tokens = rng.integers(0, vocab, size=(batches, seq + 1), dtype=np.int64)

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        rows = (np.arange(batch_size) + step * batch_size) % len(self.tokens)
        return self.tokens[rows]


@dataclass(frozen=True)
class Variant:
    """One row of the training table: an implementation at a micro batch."""

    impl: str  # "pythia" or "transformers"
    micro: int | str  # sequences per forward, or "auto" (pythia: train.micro_batch: auto)
    compile: bool = False
    mode: str = "default"  # torch.compile mode; "reduce-overhead" = CUDA graphs
    global_batch: int | None = None  # pythia: sequences per update (default: the micro batch)

    @property
    def label(self) -> str:
        name = self.impl + (" compiled" if self.compile else "")
        name += " +CUDA graphs" if self.mode == "reduce-overhead" else ""
        return name + (f" micro auto of {self.global_batch}" if self.micro == "auto" else "")

    @property
    def cost_s(self) -> float:
        """Rough seconds it takes on an H100 host (compiling dominates), to plan within --budget."""
        return (90.0 if self.impl == "transformers" else 45.0) if self.compile else 10.0


def plan(sizes: list[str], micro: dict[str, int], extras: bool = True) -> list[tuple[str, Variant]]:
    """Priority order: the goal size (410m) with every comparison first, then ours and
    transformers eager at the other sizes, then everything else (compiled transformers
    elsewhere, larger micro batches, auto, CUDA graphs) while the budget lasts."""
    first = [s for s in sizes if s.endswith("410m")] or sizes[:1]
    rest = [s for s in sizes if s not in first]
    out = []
    for s in first:
        m = micro[s]
        out += [(s, Variant("pythia", m)), (s, Variant("pythia", m, True)), (s, Variant("transformers", m)),
                (s, Variant("transformers", m, True))]
    for s in rest:
        m = micro[s]
        out += [(s, Variant("pythia", m)), (s, Variant("pythia", m, True)), (s, Variant("transformers", m))]
    if extras:
        for s in first + rest:
            m = micro[s]
            out += [(s, Variant("pythia", 2 * m, True)), (s, Variant("pythia", "auto", True, global_batch=4 * m))]
        out += [(s, Variant("transformers", micro[s], True)) for s in rest]
        out += [(s, Variant("pythia", micro[s], True, "reduce-overhead")) for s in sizes if s.endswith("160m")]
    return out


def pythia_trainer(cfg, variant: Variant, seq, device, out_dir, precision="bf16"):
    """A real Trainer on a MemberRun (one rank): its train_step is the function `pythia train`
    calls each update (order.batch, fused loss, clip, AdamW; compiled as train.compile does)."""
    from pythia.model import GPTNeoX
    from pythia.train.distributed import DistContext
    from pythia.train.spec import Member, SuiteSpec
    from pythia.train.trainer import MemberRun, StepOptions, Trainer

    batch = variant.global_batch or variant.micro
    spec = SuiteSpec.from_dict({
        "name": "gpu-bench", "output": str(out_dir),
        "data": {"train": str(out_dir / "unused"), "seq_len": seq},
        "train": {"iters": 10**4, "global_batch": batch, "micro_batch": variant.micro, "precision": precision,
                  "device": device.type, "warmup_fraction": 0.0, "lr": 1e-4, "compile": variant.compile},
        "checkpoints": {"interval": 10**4, "log_spaced": False},
        "members": [{"name": "bench", "num_layers": 1, "hidden_size": 8, "num_heads": 1}],  # shape from `member`
    })
    member = Member(name=cfg.name, config=cfg, seed=0, data_seed=0, lr=1e-4, min_lr=1e-5)
    run = MemberRun(member=member, spec=spec, member_dir=out_dir / cfg.name, order=RandomOrder(cfg.vocab_size, seq),
                    ctx=DistContext(device=device), build_model=lambda config, dev: GPTNeoX(config, device=dev),
                    options=StepOptions(compile_mode=variant.mode))
    trainer = Trainer(run)
    trainer.setup()
    return trainer


def transformers_step(cfg, variant: Variant, seq, device, precision="bf16"):
    """transformers' GPTNeoXForCausalLM (sdpa attention): forward, fp32 cross-entropy on the full
    logits like its own loss function, the same clip and torch's fused AdamW; compiled: model +
    loss as one torch.compile graph."""
    ours, hf = twin(cfg, device)
    del ours
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=device.type == "cuda")
    tokens = torch.from_numpy(RandomOrder(cfg.vocab_size, seq).batch(0, variant.micro)).to(device)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]

    def loss_fn(inputs, labels):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = hf(inputs).logits  # (B, T, V)
            return F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), labels.reshape(-1))

    if variant.compile:
        loss_fn = torch.compile(loss_fn, mode=None if variant.mode == "default" else variant.mode)
    hf.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(inputs, labels).backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()

    return step, (hf, opt)


def bench_variant(cfg, variant: Variant, seq, device, warmup, steps, peak, precision="bf16") -> dict:
    """Tokens/s of `steps` updates after `warmup` (one sync at the end, as training runs), the
    MFU and the peak memory; compile (and the micro-batch probe) happen before the timing."""
    from pythia.model import flops_per_token

    row = dict(model=cfg.name, impl=variant.label, micro_batch=variant.micro, seq=seq)
    free(device)  # the previous variant's compiled model sits in a reference cycle until collected
    tmp = tempfile.TemporaryDirectory()
    keep = None
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        if variant.impl == "pythia":
            trainer = pythia_trainer(cfg, variant, seq, device, Path(tmp.name), precision)
            counter = iter(range(10**9))
            step, keep = (lambda: trainer.train_step(next(counter))), trainer
            row["micro_batch"], batch = trainer.micro, trainer.B
        else:
            step, keep = transformers_step(cfg, variant, seq, device, precision)
            batch = variant.micro
        for _ in range(warmup):
            step()
        if variant.impl == "pythia":
            trainer.settle()
        sync(device)
        row["setup_s"] = time.perf_counter() - t0  # model, compile, probe, warm-up steps
        t1 = time.perf_counter()
        for _ in range(steps):
            step()
        if variant.impl == "pythia":
            trainer.settle()
        sync(device)
        dt = (time.perf_counter() - t1) / steps
        tps = batch * seq / dt
        row.update(step_s=dt, batch=batch, tokens_per_s=tps, mfu=tps * flops_per_token(cfg, seq) / peak if peak else None,
                   peak_mem_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"))
    except torch.cuda.OutOfMemoryError:
        row["error"] = "OOM"
    except Exception as exc:  # noqa: BLE001 -- one failing variant must not lose the others' figures
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
    finally:
        if variant.impl == "pythia" and keep is not None:
            if keep.log is not None:
                keep.log.close()
            if keep.compiled is not None:
                keep.compiled.undo()  # break the model <-> compiled-method cycle
        del keep
        tmp.cleanup()
        free(device)
    return row


def print_training_row(r: dict) -> None:
    if "error" in r:
        print(f"  {r['model']:<13}{r['impl']:<33}{str(r['micro_batch']):>6}  {r['error']}", flush=True)
        return
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a"
    print(f"  {r['model']:<13}{r['impl']:<33}{r['micro_batch']:>6}{r['step_s'] * 1e3 * r['micro_batch'] / r['batch']:>10.1f}"
          f"{r['tokens_per_s']:>12,.0f}{mfu:>8}{r['peak_mem_gib']:>9.1f}{r['setup_s']:>9.0f}", flush=True)


def training_summary(rows: list[dict]) -> list[str]:
    """Ours (best pythia row) vs transformers' best (eager or compiled) per size, same run."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = [r for r in rows if r["model"] == model and "error" not in r]
        ours = max((r for r in ok if r["impl"].startswith("pythia")), key=lambda r: r["tokens_per_s"], default=None)
        theirs = max((r for r in ok if r["impl"].startswith("transformers")), key=lambda r: r["tokens_per_s"], default=None)
        if ours and theirs:
            mfu = f", MFU {100 * ours['mfu']:.1f}% vs {100 * theirs['mfu']:.1f}%" if ours["mfu"] else ""
            lines.append(f"  -> {model}: ours ({ours['impl']}, micro {ours['micro_batch']}) / transformers' best "
                         f"({theirs['impl']}, micro {theirs['micro_batch']}) tokens/s = "
                         f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x{mfu}")
    return lines


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
    p.add_argument("--sections", default="training,generation,weights", help="comma-separated subset to run")
    p.add_argument("--sizes", default="pythia-160m,pythia-410m,pythia-1b")
    p.add_argument("--micro-batch", type=int, help="sequences per training step (default per size)")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--budget", type=float, default=900.0,
                   help="seconds for the training section: variants that would start too late are listed as skipped")
    p.add_argument("--no-extras", action="store_true", help="training: only eager/compiled at the default micro batch")
    p.add_argument("--gen-size", default="pythia-410m")
    p.add_argument("--gen-batch", type=int, default=1024)
    p.add_argument("--gen-reps", type=int, default=2)
    p.add_argument("--no-gen-nocache", action="store_true", help="skip transformers use_cache=False (slowest)")
    p.add_argument("--weights-size", default="pythia-160m", help="model for the `weights` analysis section")
    p.add_argument("--no-weights", action="store_true", help="skip the `weights` analysis section")
    p.add_argument("--peak-tflops", type=float, help="bf16 peak for MFU (default: from the device name)")
    p.add_argument("--out", help="write all figures as JSON here")
    args = p.parse_args()
    sections = set(args.sections.split(","))
    if args.no_weights:
        sections.discard("weights")

    if args.cpu_smoke:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # tiny ops: extra threads only add barrier waits
        tiny = custom_config(num_layers=2, hidden_size=64, num_heads=4, vocab_size=512, name="tiny")
        configs, micro = {"tiny": tiny}, {"tiny": 2}
        seq, gen_cfg, gen_batch, gen_dtype = 64, tiny, 8, torch.float32
        weights_cfg = tiny
        args.warmup, args.steps, args.gen_reps = 1, 2, 1
        peak = args.peak_tflops * 1e12 if args.peak_tflops else None
        name, precision = "cpu", "fp32"  # bf16 kernels compile slowly on CPU; the logic is the same
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device; use --cpu-smoke to dry-run")
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name, precision = torch.cuda.get_device_name(device), "bf16"
        peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
            (v for k, v in PEAK_BF16.items() if k in name), None)
        default_micro = {"pythia-160m": 16, "pythia-410m": 8, "pythia-1b": 4}
        configs = {s: model_config(s) for s in args.sizes.split(",") if s}
        micro = {s: args.micro_batch or default_micro.get(s, 4) for s in configs}
        seq, gen_cfg, gen_batch, gen_dtype = args.seq, model_config(args.gen_size), args.gen_batch, torch.float16
        weights_cfg = model_config(args.weights_size)

    import transformers

    print(f"device {name}; torch {torch.__version__}; transformers {transformers.__version__}; "
          f"peak bf16 {peak / 1e12 if peak else 'unknown'} TFLOP/s")
    results = {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
               "training": [], "generation": [], "weights": []}
    if "training" in sections:
        deadline = time.monotonic() + args.budget
        print(f"\n[training] {precision} (fp32 master weights), seq {seq}, {args.steps} steps timed after {args.warmup} (one sync at the "
              f"end); budget {args.budget:.0f} s")
        print(f"  {'model':<13}{'impl':<33}{'micro':>6}{'ms/micro':>10}{'tokens/s':>12}{'MFU':>8}{'mem GiB':>9}"
              f"{'setup s':>9}")
        skipped = []
        for size, variant in plan(list(configs), micro, extras=not args.no_extras):
            if time.monotonic() + variant.cost_s > deadline:
                skipped.append(f"{size} {variant.label} micro {variant.micro}")
                continue
            row = bench_variant(configs[size], variant, seq, device, args.warmup, args.steps, peak, precision)
            results["training"].append(row)
            print_training_row(row)
            finish(results, args.out, quiet=True)  # kept after each row: a timeout loses nothing measured
        for line in training_summary(results["training"]):
            print(line)
        if skipped:
            print(f"  skipped (time budget): {'; '.join(skipped)}")
        results["training_skipped"] = skipped

    if "generation" in sections:
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
    if "weights" in sections:
        print(f"\n[weights analysis] {weights_cfg.name} fp32 weights on {device.type}")
        results["weights"] = bench_weights(weights_cfg, device)
    finish(results, args.out)


def finish(results: dict, out: str | None, quiet: bool = False) -> None:
    if out:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        if not quiet:
            print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
