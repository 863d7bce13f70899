"""Tokenization throughput of `tokenize_corpus` (parallel workers, JSON parsing and .bin/.idx
writing included) vs plain single-process `Tokenizer.encode` of the same texts, side by side.

    .venv/bin/python benchmarks/bench_tokenize.py --mb 20 [--workers 2] [--tokenizer PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = ROOT / "tests" / "fixtures" / "20B_tokenizer.json"
WORDS = ("The model was trained on the Pile, a large corpus of English text drawn from 22 sources; "
         "each document ends with an end-of-text token, and samples of 2049 tokens are cut from the "
         "shuffled stream. Results: accuracy rose from 41.2% to 57.9% (n=1,024) between steps 512 "
         "and 143000. def f(x): return x ** 2 # comment").split()


def make_corpus(path: Path, megabytes: float) -> list[str]:
    rng = np.random.default_rng(0)
    texts, total = [], 0
    while total < megabytes * 1e6:
        t = " ".join(rng.choice(WORDS, int(rng.integers(50, 1500))))
        texts.append(t)
        total += len(t.encode())
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "meta": {"pile_set_name": "Synthetic"}}) + "\n")
    return texts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=20.0, help="megabytes of synthetic text (default 20)")
    p.add_argument("--workers", type=int, default=None,
                   help="tokenize_corpus workers (default: one process, multithreaded encode_batch)")
    p.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER))
    args = p.parse_args()
    from pythia.data.tokenize import tokenize_corpus
    from pythia.data.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        texts = make_corpus(corpus, args.mb)
        mb = sum(len(t.encode()) for t in texts) / 1e6
        t0 = time.perf_counter()
        m = tokenize_corpus([corpus], args.tokenizer, Path(tmp) / "out", workers=args.workers, progress=False)
        ours = time.perf_counter() - t0
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # baseline: one thread, one process
        tok = load_tokenizer(args.tokenizer)
        t0 = time.perf_counter()
        n = sum(len(tok.encode(t).ids) + 1 for t in texts)
        base = time.perf_counter() - t0
    assert n == m["tokens"], (n, m["tokens"])
    print(f"bench_tokenize  {mb:.1f} MB of text, {len(texts)} documents, {n:,} tokens, cpus {os.cpu_count()}, "
          f"tokenizer {Path(args.tokenizer).name}")
    print(f"  tokenize_corpus (workers={args.workers or 1}, end to end): {ours:.2f} s = {mb / ours:.2f} MB/s")
    print(f"  baseline single-process Tokenizer.encode loop:      {base:.2f} s = {mb / base:.2f} MB/s")
    print(f"  ratio ours / baseline: {base / ours:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
