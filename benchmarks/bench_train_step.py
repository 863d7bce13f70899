"""CPU: one training step (forward, loss, backward, AdamW) of our GPTNeoX vs transformers'.

Same config, same weights, same batch and the same optimizer settings for every variant:
ours eager, ours compiled as `train.compile: true` compiles it on CPU (pythia.train.compile:
each layer; the fused head + loss stays eager there, --compile-head adds a variant with it
compiled too), transformers eager, and with --hf-compile transformers under torch.compile
(model + cross-entropy in one graph). --profile adds, per variant, the share of one step spent
in matrix products (mm, addmm, bmm): the part no compiler shortens on a CPU. Timings alternate between the variants and
the median of the repetitions is reported (the machine is shared, so expect noise); compile
times are printed apart. Prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_train_step.py [--layers 4 --hidden 256 --heads 4 --vocab 50304 --batch 8 --seq 128 --reps 5
                                                     --threads 1 --no-fused-adam --no-compile --compile-head
                                                     --hf-compile --profile]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F


def make_models(args):
    from transformers import GPTNeoXForCausalLM

    from pythia.config import custom_config
    from pythia.hf import to_hf_config
    from pythia.model import GPTNeoX
    from transformers import GPTNeoXConfig

    cfg = custom_config(num_layers=args.layers, hidden_size=args.hidden, num_heads=args.heads,
                        vocab_size=args.vocab, max_seq_len=max(2048, args.seq), gelu="exact")
    torch.manual_seed(0)
    ours = GPTNeoX(cfg)
    hf_cfg = GPTNeoXConfig(**{k: v for k, v in to_hf_config(cfg).items() if k != "pythia_config"})
    hf = GPTNeoXForCausalLM(hf_cfg)
    hf.load_state_dict({("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in ours.state_dict().items()})
    return ours, hf


def step_fn(model, is_hf, batch, opt, compile_hf=False):
    inputs, labels = batch[:, :-1], batch[:, 1:]

    def hf_loss(inputs, labels):
        logits = model(inputs).logits  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    if compile_hf:
        hf_loss = torch.compile(hf_loss, dynamic=False)

    def step():
        opt.zero_grad(set_to_none=True)
        if is_hf:
            loss = hf_loss(inputs, labels)
        else:  # our training path: fused head + loss, same value and gradients
            loss = model(inputs, labels=labels)
        loss.backward()
        opt.step()
        return loss

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared, oversubscribed CPU, more threads mostly "
                        "measure OpenMP barrier waits)")
    p.add_argument("--no-fused-adam", dest="fused_adam", action="store_false",
                   help="use the default (foreach) AdamW for both instead of the fused one")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip our compiled step")
    p.add_argument("--compile-head", action="store_true", help="also time ours with the head + loss compiled")
    p.add_argument("--hf-compile", action="store_true", help="also time transformers under torch.compile")
    p.add_argument("--profile", action="store_true", help="print each variant's share of time in matrix products")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    from pythia.train.compile import Stopwatch, apply_compile, compile_head_default

    ours, hf = make_models(args)
    variants = [("pythia.GPTNeoX", ours, False, False)]
    if args.compile:
        compiled = copy.deepcopy(ours)
        apply_compile(compiled, head=compile_head_default(torch.device("cpu")))
        variants.append(("pythia.GPTNeoX compiled", compiled, False, False))
    if args.compile_head:
        compiled = copy.deepcopy(ours)
        apply_compile(compiled, head=True)
        variants.append(("pythia.GPTNeoX compiled + head", compiled, False, False))
    variants.append(("transformers.GPTNeoXForCausalLM", hf, True, False))
    if args.hf_compile:
        variants.append(("transformers compiled", copy.deepcopy(hf), True, True))
    batch = torch.randint(0, args.vocab, (args.batch, args.seq + 1))
    steps = {}
    for name, model, is_hf, compile_hf in variants:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                                fused=args.fused_adam)
        steps[name] = step_fn(model, is_hf, batch, opt, compile_hf)
    times: dict[str, list[float]] = {k: [] for k in steps}
    compile_s = {}
    for name, s in steps.items():  # the first call of a compiled variant compiles it
        with Stopwatch() as watch:
            s()
        if "compiled" in name:
            compile_s[name] = watch.wall
    for _ in range(args.warmup - 1):
        for s in steps.values():
            s()
    for _ in range(args.reps):  # interleaved so load changes hit both alike
        for name, s in steps.items():
            t0 = time.perf_counter()
            s()
            times[name].append(time.perf_counter() - t0)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; config L={args.layers} d={args.hidden} "
          f"H={args.heads} V={args.vocab}, batch {args.batch}x{args.seq}, fp32, AdamW fused={args.fused_adam} (same for both)")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        extra = f"; first call {compile_s[k]:.1f} s (compiling)" if k in compile_s else ""
        print(f"  {k:<34} median {med[k] * 1e3:8.1f} ms/step   (reps: {', '.join(f'{t * 1e3:.0f}' for t in v)}){extra}")
    base = "transformers.GPTNeoXForCausalLM"
    for k in times:
        if k != base:
            print(f"  ratio {k} / transformers = {med[k] / med[base]:.2f}x median, "
                  f"{min(times[k]) / min(times[base]):.2f}x best-of  (goal <= 0.80x)")
    if args.profile:
        print("  time in matrix products (one profiled step each; the rest is elementwise work, copies, the optimizer):")
        for k, s in steps.items():
            gemm, total = gemm_seconds(s)
            print(f"    {k:<34} {gemm * 1e3:8.1f} of {total * 1e3:8.1f} ms ({100 * gemm / total:.0f}%); "
                  f"= {gemm / med[base]:.2f}x transformers' median step")


GEMMS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm"}


def gemm_seconds(step) -> tuple[float, float]:
    """(seconds in matrix-product kernels, seconds of the whole step) for one profiled call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step()
        total = time.perf_counter() - t0
    gemm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in GEMMS) / 1e6
    return gemm, total


if __name__ == "__main__":
    main()
