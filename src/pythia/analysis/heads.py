"""`heads`: previous-token, duplicate-token, induction and copying scores of every attention head
(Olsson et al. 2022; Elhage et al. 2021), on repeated random tokens; definitions in
`pythia.mechanisms.heads`.

Rows: task `L{layer}.H{head}` (0-based), metric = the score (`prev_token`, `duplicate`,
`induction`, `copying`); task `max`: the largest head's value of each score. The probe (n
sequences of r random ordinary tokens repeated R times, `--probe-n/-len/-repeats/-seed`) is
the same for every checkpoint and is written once per run as
`results/artifacts/heads/probe_n{n}_r{r}_R{R}_seed{s}.npy` (int64, (n, r*R)) with a `.json`
sidecar saying how it was drawn, so that anyone can recompute every score.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path, write_json_atomic
from .base import Analysis, AnalysisError, Option, Row, register


def probe_name(n: int, r: int, R: int, seed: int) -> str:
    return f"probe_n{n}_r{r}_R{R}_seed{seed}"


@register
class Heads(Analysis):
    name = "heads"
    summary = "per-head previous-token, duplicate, induction and copying scores on repeated random tokens"
    version = 1
    options = (
        Option("probe_n", int, 64, "probe sequences"),
        Option("probe_len", int, 25, "random tokens per repeat (r)"),
        Option("probe_repeats", int, 4, "repeats per sequence (R >= 2)"),
        Option("probe_seed", int, 0, "seed of the random tokens"),
        Option("probe_batch", int, 16, "probe sequences per forward pass", affects_result=False),
    )

    def check(self, run, members) -> None:
        n, r, R = self.opts["probe_n"], self.opts["probe_len"], self.opts["probe_repeats"]
        if n < 1 or r < 1:
            raise AnalysisError(f"heads: --probe-n and --probe-len must be >= 1, got {n} and {r}")
        if R < 2:
            raise AnalysisError(f"heads: --probe-repeats must be >= 2 (induction needs a repeat), got {R}")
        for m in members:
            if m.seq_len and r * R > m.seq_len:
                raise AnalysisError(f"heads: the probe is --probe-len {r} x --probe-repeats {R} = {r * R} tokens, "
                                    f"longer than the context of {m.name} ({m.seq_len} tokens); lower --probe-len "
                                    "or --probe-repeats")

    def probe(self, ctx) -> np.ndarray:
        """The probe tokens for this member's vocabulary, drawn once per sweep and stored once per run."""
        from ..mechanisms.heads import ordinary_token_ids, repeated_tokens

        n, r, R, seed = (self.opts[k] for k in ("probe_n", "probe_len", "probe_repeats", "probe_seed"))
        vocab = ctx.model.config.vocab_size
        if r * R > ctx.model.config.max_seq_len:
            raise AnalysisError(f"heads: the probe ({r} x {R} = {r * R} tokens) is longer than the model's context "
                                f"({ctx.model.config.max_seq_len}); lower --probe-len or --probe-repeats")
        tokenizer = ctx.member.tokenizer_path
        key = ("heads.probe", n, r, R, seed, vocab, str(tokenizer))
        if key not in ctx.shared:
            tokens = repeated_tokens(n, r, R, ordinary_token_ids(tokenizer, vocab), seed)
            self._store(Path(ctx.run.results_dir) / "artifacts" / self.name, probe_name(n, r, R, seed), tokens,
                        {"n": n, "r": r, "R": R, "seed": seed, "vocab_size": vocab,
                         "drawn": "numpy.random.default_rng(seed).integers(0, len(ordinary), (n, r)) indexes the "
                                  "ordinary token ids (ids < vocab_size that are not special tokens of the tokenizer), "
                                  "each row tiled R times"})
            ctx.shared[key] = tokens
        return ctx.shared[key]

    @staticmethod
    def _store(folder: Path, name: str, tokens: np.ndarray, meta: dict) -> None:
        path = folder / f"{name}.npy"
        if path.is_file():
            old = np.load(path, allow_pickle=False)
            if old.shape == tokens.shape and np.array_equal(old, tokens):
                return
            raise AnalysisError(f"heads: {path} holds another probe with the same options (a member with another "
                                "vocabulary?); give this run's members one tokenizer or move the file")
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, tokens, allow_pickle=False)
        write_json_atomic(folder / f"{name}.json", meta)

    def compute(self, ctx) -> list[Row]:
        from ..mechanisms.heads import SCORES, head_scores

        tokens = self.probe(ctx)
        model = ctx.model
        was_training = model.training
        model.eval()
        try:
            scores = head_scores(model, tokens, self.opts["probe_len"], batch=self.opts["probe_batch"],
                                 device=ctx.device, autocast=ctx.autocast)
        finally:
            model.train(was_training)
        rows = []
        for metric in SCORES:
            s = scores[metric]
            rows += [Row(metric, float(s[l, h]), task=f"L{l}.H{h}") for l in range(s.shape[0]) for h in range(s.shape[1])]
            rows.append(Row(metric, float(s.max()), task="max"))
        return rows
