"""CPU: one training step (forward, loss, backward, AdamW) of our GPTNeoX vs transformers'.

Same config, same weights, same batch and the same optimizer settings for both; timings
alternate between the two models and the median of the repetitions is reported (the machine
is shared, so expect noise). Prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_train_step.py [--layers 4 --hidden 256 --heads 4 --vocab 50304 --batch 8 --seq 128 --reps 5
                                                     --threads 1 --no-fused-adam]
"""
from __future__ import annotations

import argparse
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


def step_fn(model, is_hf, batch, opt):
    inputs, labels = batch[:, :-1], batch[:, 1:]

    def step():
        opt.zero_grad(set_to_none=True)
        if is_hf:
            logits = model(inputs).logits  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
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
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    ours, hf = make_models(args)
    ours.train()
    hf.train()
    batch = torch.randint(0, args.vocab, (args.batch, args.seq + 1))
    steps = {}
    for name, model, is_hf in (("pythia.GPTNeoX", ours, False), ("transformers.GPTNeoXForCausalLM", hf, True)):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                                fused=args.fused_adam)
        steps[name] = step_fn(model, is_hf, batch, opt)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.warmup):
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
        print(f"  {k:<34} median {med[k] * 1e3:8.1f} ms/step   (reps: {', '.join(f'{t * 1e3:.0f}' for t in v)})")
    ratio = med["pythia.GPTNeoX"] / med["transformers.GPTNeoXForCausalLM"]
    print(f"  ratio ours / transformers = {ratio:.2f}x median  (goal <= 0.80x); "
          f"{min(times['pythia.GPTNeoX']) / min(times['transformers.GPTNeoXForCausalLM']):.2f}x best-of")


if __name__ == "__main__":
    main()
