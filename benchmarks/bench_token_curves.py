"""`token_curves` per checkpoint on a pythia-160m-shaped model (random weights) against a plain
transformers loop producing the same surprisal matrix, in this process; the storage of a
member's matrix on Pythia's grid; the cost of the n-gram counts of what a member had seen.

Timed per repetition after one untimed warm-up of each (medians of --reps, alternating):
- ours: `TokenCurves.compute` on one checkpoint, the model already loaded (as `pythia analyze`
  hands it over): the probe's forward pass through the fused head + cross-entropy keeping
  every token's loss (`pythia.loss.token_losses`, no (tokens x V) logits), float16, the piece
  written atomically, the mean-surprisal row;
- baseline: `transformers.GPTNeoXForCausalLM` with the same weights, per batch of windows:
  full logits, float32 `cross_entropy(reduction="none")`, float16 -- the loop each
  learning-curve paper writes.
Then the n-gram fits of one checkpoint (`ngram_surprisals` + two least-squares fits, on
synthetic counts) and, with --ngram-tokens N, the one-pass counter (`pythia.data.seen_ngrams`)
over a synthetic GPT-NeoX order of N tokens: tokens per second and the time that rate gives for
Pythia's 143,000 x 1024 x 2048 tokens. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_token_curves.py [--windows 4] [--seq-len 512] [--reps 3]
        [--threads N] [--shape pythia-160m] [--ngram-tokens 20000000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_weights import parse_shape  # noqa: E402 - "pythia-160m" or layers=2,hidden=64,heads=4,vocab=512

PYTHIA_CHECKPOINTS = 154
PYTHIA_TOKENS = 143_000 * 1024 * 2048
PROBE_TOKENS = 65_536


def ours(model, windows: np.ndarray, results: Path, batch: int) -> tuple[np.ndarray, float]:
    from pythia.analysis.base import CheckpointContext
    from pythia.analysis.token_curves import TokenCurves

    member = SimpleNamespace(name="bench", dataset=None, base=None)
    run = SimpleNamespace(results_dir=results)
    ck = SimpleNamespace(step=0, revision="step0")
    ctx = CheckpointContext(run=run, member=member, checkpoint=ck, device=torch.device("cpu"), model_override=model)
    ctx.shared[("probe", "bench", windows.shape[1] - 1, windows.shape[0])] = windows
    analysis = TokenCurves(val_batch=batch)
    analysis._probe = lambda run, shared: _probe_of(windows)  # the windows given, not a run's validation split
    t0 = time.perf_counter()
    analysis.compute(ctx)
    took = time.perf_counter() - t0
    with np.load(results / "artifacts" / "token_curves" / "bench" / "step0" / "surprisal.npz") as z:
        return z["surprisal"], took


def _probe_of(windows):
    from pythia.analysis._probe import Probe

    return Probe("bench", windows.shape[1] - 1, windows)


def baseline(hf, windows: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        for a in range(0, len(windows), batch):
            ids = torch.from_numpy(windows[a:a + batch])
            logits = hf(ids[:, :-1]).logits.float()
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                   reduction="none")
            out.append(ce.reshape(ids.shape[0], -1).to(torch.float16).numpy())
    return np.concatenate(out), time.perf_counter() - t0


def fits_seconds(windows: np.ndarray, vocab: int, reps: int) -> float:
    from pythia.data.seen_ngrams import probe_pairs
    from pythia.token_dynamics import ngram_surprisals, ols_fit

    rng = np.random.default_rng(0)
    pairs = probe_pairs(windows)
    unigram = rng.integers(0, 10**6, vocab)
    bigram = rng.integers(0, 10**3, pairs.size)
    y = rng.random(windows[:, 1:].shape)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        u, b = ngram_surprisals(windows, unigram, pairs, bigram, int(unigram.sum()), vocab)
        ols_fit(y, [u])
        ols_fit(y, [u, b])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ngram_pass(tokens: int, vocab: int, tmp: Path) -> None:
    from pythia.data.indexed import IndexedDatasetBuilder
    from pythia.data.order import TrainingOrder, num_samples_for
    from pythia.data.seen_ngrams import SeenNgramCounter, probe_pairs

    rng = np.random.default_rng(0)
    seq, batch = 2048, 64
    zipf = np.minimum(rng.zipf(1.2, tokens), vocab - 1).astype(np.uint16)  # Zipf-like ids, as text
    with IndexedDatasetBuilder(tmp / "ds", np.uint16) as b:
        sizes = rng.integers(200, 4000, tokens // 1000)
        at = 0
        for n in sizes:
            if at + n > tokens:
                break
            b.add_document(zipf[at:at + n])
            at += n
    iters = at // (seq * batch) - 1
    order = TrainingOrder.build(str(tmp / "ds"), seq, 1234, num_samples_for(iters, batch), out_dir=tmp, progress=False)
    probe = np.minimum(rng.zipf(1.2, (32, seq + 1)), vocab - 1)
    counter = SeenNgramCounter(order, batch, probe_pairs(probe), vocab)
    t0 = time.perf_counter()
    counter.advance(iters)
    took = time.perf_counter() - t0
    rate = counter.state.total / took
    print(f"n-gram pass: {counter.state.total:,} tokens ({iters} steps of {batch} x {seq}) in {took:.2f} s = "
          f"{rate / 1e6:.1f} M tokens/s on one core; Pythia's {PYTHIA_TOKENS:.2e} tokens at that rate: "
          f"{PYTHIA_TOKENS / rate / 3600:.1f} h, once per training order (every checkpoint is a snapshot of "
          f"the same pass; re-scanning per checkpoint would cost ~{PYTHIA_CHECKPOINTS // 2}x that)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="pythia-160m")
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--ngram-tokens", type=int, default=0, help="also time the one-pass n-gram counter on this many")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    from pythia.hf import to_hf_config
    from pythia.model import GPTNeoX

    config = parse_shape(args.shape)
    torch.manual_seed(0)
    model = GPTNeoX(config).eval()
    hf_cfg = {k: v for k, v in to_hf_config(config).items() if k != "pythia_config"}
    hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**hf_cfg)).eval()
    state = model.state_dict()  # the same names (transformers 5 calls the head lm_head)
    if "lm_head.weight" in hf.state_dict():
        state["lm_head.weight"] = state.pop("embed_out.weight")
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights do not map onto transformers' model: missing {missing}, unexpected {unexpected}")
    windows = np.random.default_rng(1).integers(0, config.vocab_size, (args.windows, args.seq_len + 1))
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    print(f"shape {args.shape} ({model.num_params() / 1e6:.0f}M parameters, V={config.vocab_size}), probe "
          f"{args.windows} x {args.seq_len + 1} tokens, batch {args.batch}, {torch.get_num_threads()} threads; "
          "timings on a shared machine are noisy: compare the ratio")
    mine, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ours(model, windows[:1], Path(tmp), args.batch)  # warm-up, untimed: imports, first allocations
        baseline(hf, windows[:1], args.batch)
        for _ in range(args.reps):
            got, t = ours(model, windows, Path(tmp), args.batch)
            mine.append(t)
            want, t = baseline(hf, windows, args.batch)
            theirs.append(t)
        diff = np.abs(got.astype(np.float32) - want.astype(np.float32))
        print(f"ours      {statistics.median(mine):7.2f} s  ({tokens / statistics.median(mine):,.0f} tokens/s)")
        print(f"baseline  {statistics.median(theirs):7.2f} s  (transformers logits + cross_entropy)")
        print(f"ratio     {statistics.median(theirs) / statistics.median(mine):.2f}x  (baseline / ours); same matrix: "
              f"max |diff| {diff.max():.2e} nats ({(diff > 0).mean():.1%} of entries differ in float16)")
        fit = fits_seconds(windows, config.vocab_size, args.reps)
        print(f"n-gram fits of one checkpoint: {fit * 1e3:.1f} ms for {tokens:,} tokens")
        per_member = PYTHIA_CHECKPOINTS * PROBE_TOKENS * 2
        print(f"storage per member on Pythia's grid: {PYTHIA_CHECKPOINTS} checkpoints x {PROBE_TOKENS:,} probe tokens x "
              f"2 bytes = {per_member / 2**20:.1f} MiB of surprisal (+ {PROBE_TOKENS * (8 + 8 + 4 + 4 + 8) / 2**20:.1f} "
              "MiB of token ids and per-token values); a suite of 10 seeds x 8 sizes: "
              f"{80 * per_member / 2**30:.2f} GiB")
        d, V = config.hidden_size, config.vocab_size
        states = 2 * (PROBE_TOKENS * d + V * d) * 4
        model_bytes = model.num_params() * 4
        print(f"seed_convergence, two {args.shape}-shaped seeds on {PROBE_TOKENS:,} tokens (arithmetic, float32): "
              f"final hidden states + output embeddings {states / 2**30:.2f} GiB, + the model being read "
              f"{model_bytes / 2**30:.2f} GiB, + 0.5 GiB of log-probability chunks (--kl-memory-mb 512)")
        if args.ngram_tokens:
            ngram_pass(args.ngram_tokens, config.vocab_size, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
