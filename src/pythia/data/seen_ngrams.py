"""What a member had seen by each checkpoint: running unigram and bigram counts over its training
order, snapshotted at the steps asked for, in one pass over the batches.

Counts follow `pythia data count` (counts.py): a token counts at the optimizer step of the
sample that holds it as an input position (the first S of the sample's S+1 tokens); a bigram
(v, w) counts there when w follows v inside one document (a pair across a document boundary is
not a bigram of the corpus). "Counts at step t" are those of updates 0..t-1, what checkpoint
`step{t}` had trained on. A fork's batches are read through its intervention, so its counts are
what the fork itself was fed (counts.py counts its base's). Unigrams are counted for every id
(a (V,) array); bigrams only for the pairs asked for (a probe's): a chunk's pair codes are
sorted, and each asked-for pair's count is the length of its run (two binary searches per pair).

Cost: one pass over the tokens of updates 0..max(steps)-1, whatever the number of snapshots:
reading the batches, a bincount and a sort of ~2M int64 per chunk, O(V + pairs + chunk) memory
(benchmarks/bench_token_curves.py --ngram-tokens measures the rate). Every
snapshot is a (V,) + (pairs,) copy. Re-scanning the batches for every checkpoint instead costs
the sum of the steps (~77x one pass on Pythia's 154 checkpoints). `SeenNgramCounter` resumes
from any snapshot, so a run that grows by a checkpoint scans only the new steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .order import PositionError, PreshuffledOrder, TrainingOrder

CHUNK_TOKENS = 1 << 21
"""Tokens read per pass of the counters (several small batches at once)."""
SHIFT = 32
"""A bigram (v, w) is the code (v << 32) | w: token ids below 2^31 fit an int64."""


def pair_codes(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    return (np.asarray(prev, np.int64) << SHIFT) | np.asarray(nxt, np.int64)


def probe_pairs(windows: np.ndarray) -> np.ndarray:
    """The distinct (context, token) pairs of (b, T) windows, as sorted codes."""
    w = np.asarray(windows, np.int64)
    return np.unique(pair_codes(w[:, :-1], w[:, 1:]))


@dataclass
class NgramState:
    """Counts of updates 0..step-1: unigram (V,), bigram (P,) for the counter's pairs, total
    tokens counted (the unigram sum)."""

    step: int
    unigram: np.ndarray
    bigram: np.ndarray
    total: int

    def copy(self) -> NgramState:
        return NgramState(self.step, self.unigram.copy(), self.bigram.copy(), self.total)


def _base_order(order):
    """A fork's InterventionOrder reads its base's documents (train.intervention): the base."""
    return order.base if hasattr(order, "transform") and hasattr(order, "base") else order


class SeenNgramCounter:
    """Running counts of one training order; `advance(t)` scans the batches up to step t."""

    def __init__(self, order, batch_size: int, pairs: np.ndarray, vocab_size: int,
                 state: NgramState | None = None):
        self.order, self.batch_size, self.vocab_size = order, int(batch_size), int(vocab_size)
        self.pairs = np.asarray(pairs, np.int64)
        if self.pairs.size and np.any(np.diff(self.pairs) <= 0):
            raise ValueError("pairs must be sorted distinct codes (probe_pairs)")
        self.base = _base_order(order)
        if not isinstance(self.base, (TrainingOrder, PreshuffledOrder)):
            raise TypeError(f"cannot count over a {type(order).__name__}")
        self.fork_from = getattr(order, "from_step", None) if self.base is not order else None
        self.state = state.copy() if state is not None else NgramState(
            0, np.zeros(self.vocab_size, np.int64), np.zeros(self.pairs.size, np.int64), 0)
        if self.state.unigram.shape != (self.vocab_size,) or self.state.bigram.shape != self.pairs.shape:
            raise ValueError("a resumed state must have the counter's vocabulary and pairs")

    @property
    def num_steps(self) -> int:
        """Whole steps the order holds."""
        return self.base.num_positions // self.batch_size

    def advance(self, to_step: int) -> NgramState:
        """Scan updates [state.step, to_step); returns the state (not a copy)."""
        to_step = int(to_step)
        if to_step < self.state.step:
            raise ValueError(f"counts are at step {self.state.step}; cannot go back to {to_step} (resume from an "
                             "earlier snapshot)")
        if to_step > self.num_steps:
            where = getattr(self.base, "stem", None) or self.base.dataset.prefix
            raise PositionError(f"{where}: the order holds {self.num_steps} steps of batch {self.batch_size}; counts "
                                f"up to step {to_step} need {to_step}")
        per = max(1, CHUNK_TOKENS // (self.batch_size * (self.base.seq_len + 1)))
        a = self.state.step
        while a < to_step:
            b = min(to_step, a + per)
            if self.fork_from is not None and a < self.fork_from < b:
                b = self.fork_from  # the fork's steps are read one batch at a time (its transform)
            self._count(*self._read(a, b))
            self.state.step = b
            a = b
        return self.state

    def _read(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Tokens of steps [a, b) (R, S+1) and, for a GPT-NeoX order, whether tokens i and i+1 of
        each row lie in one document (R, S); None for preshuffled rows (each row is its own item)."""
        B = self.batch_size
        if isinstance(self.base, PreshuffledOrder):
            tokens = np.asarray(self.base.rows[a * B:b * B], np.int64)
            same = None
        else:
            ks = np.arange(a * B, b * B, dtype=np.int64)
            tokens = self.base.samples(ks)
            _, _, lo, hi = self.base.segments(self.base.shuffle_idx[ks].astype(np.int64))
            seg = np.repeat(np.arange(lo.size), hi - lo).reshape(tokens.shape)  # (R, S+1) slot piece of each token
            same = seg[:, :-1] == seg[:, 1:]
        if self.fork_from is not None and b > self.fork_from:
            tokens = np.concatenate([self.order.batch(s, B) for s in range(a, b)])  # what the fork was fed
        return tokens, same

    def _count(self, tokens: np.ndarray, same: np.ndarray | None) -> None:
        S = tokens.shape[1] - 1
        inputs = tokens[:, :S]
        counts = np.bincount(inputs.reshape(-1), minlength=self.vocab_size)
        if counts.size > self.vocab_size:
            raise ValueError(f"token id {int(inputs.max())} in the training data is outside the vocabulary "
                             f"0..{self.vocab_size - 1}")
        st = self.state
        st.unigram += counts
        st.total += inputs.size
        if not self.pairs.size:
            return
        codes = pair_codes(inputs, tokens[:, 1:])
        codes = codes[same] if same is not None else codes.reshape(-1)
        codes.sort()  # then each asked-for pair is a run: two binary searches per pair, none per token
        st.bigram += np.searchsorted(codes, self.pairs, "right") - np.searchsorted(codes, self.pairs, "left")


def seen_counts(order, batch_size: int, steps, pairs: np.ndarray, vocab_size: int,
                start: NgramState | None = None) -> list[NgramState]:
    """Snapshots of the counts at each of `steps` (sorted, distinct), in one pass (from `start`,
    a snapshot at or before the first step, else from step 0)."""
    steps = sorted({int(s) for s in steps})
    counter = SeenNgramCounter(order, batch_size, pairs, vocab_size, start)
    out = []
    for s in steps:
        out.append(counter.advance(s).copy())
    return out


__all__ = ["NgramState", "SeenNgramCounter", "pair_codes", "probe_pairs", "seen_counts"]
