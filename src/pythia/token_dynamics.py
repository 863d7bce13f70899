"""Token-level learning curves: statistics of a surprisal matrix (checkpoints x probe tokens) and
its relation to the n-gram statistics of what the model had trained on.

Definitions (Chang, Tu and Bergen, "Characterizing Learning Curves During Language Model
Pre-Training", TACL 2024; Michaelov et al. 2025; natural logs), per probe token over checkpoints
t_0 < ... < t_K:
- age of acquisition: the first t with s_t <= s_{t_0} - (s_{t_0} - min s) / 2 (half-way from the
  first value to the minimum; Chang et al. fit a sigmoid in log step, this is the direct
  crossing). A token whose surprisal never falls below its first value is acquired at t_0;
- forgettability: s_{t_K} - min s;
- variability: the standard deviation (ddof 0) of s over the last ceil((K+1)/4) checkpoints;
- n-gram surprisals of what the model had seen by step t, add-one smoothed over the vocabulary
  V: unigram -ln((c_t(w) + 1) / (N_t + V)), bigram -ln((c_t(v w) + 1) / (c_t(v) + V));
- fits: ordinary least squares of the model's surprisal on [1, unigram] and on [1, unigram,
  bigram]; R^2 of each, and the two slopes of the second.
"""
from __future__ import annotations

import math

import numpy as np


def age_of_acquisition(steps, surprisal: np.ndarray) -> np.ndarray:
    """surprisal (K, ...) over checkpoints `steps` (K,) ascending -> the step of acquisition of
    each token (...), int64. Float64 arithmetic: exact on stored float16 values."""
    s = np.asarray(surprisal, np.float64)
    steps = np.asarray(steps, np.int64)
    threshold = s[0] - (s[0] - s.min(axis=0)) / 2
    first = np.argmax(s <= threshold, axis=0)  # the minimum itself always qualifies
    return steps[first]


def forgettability(surprisal: np.ndarray) -> np.ndarray:
    """(...) float32, computed in float64."""
    s = np.asarray(surprisal, np.float64)
    return (s[-1] - s.min(axis=0)).astype(np.float32)


def late_window(num_checkpoints: int) -> int:
    """Checkpoints in "the last quarter": ceil(n / 4), at least 1."""
    return max(1, math.ceil(num_checkpoints / 4))


def variability(surprisal: np.ndarray) -> np.ndarray:
    """(...) float32, computed in float64."""
    s = np.asarray(surprisal, np.float64)
    return s[-late_window(s.shape[0]):].std(axis=0).astype(np.float32)


def acquired_share(steps, aoa: np.ndarray) -> np.ndarray:
    """(K,) share of tokens whose age of acquisition is at or before each step."""
    flat = np.sort(np.asarray(aoa).reshape(-1))
    return np.searchsorted(flat, np.asarray(steps), side="right") / max(flat.size, 1)


def frequency_bucket(count: int) -> str:
    """`freq=0`, or `freq=2^k:2^(k+1)` holding count (2^k <= count < 2^(k+1))."""
    if count <= 0:
        return "freq=0"
    k = int(count).bit_length() - 1
    return f"freq=2^{k}:2^{k + 1}"


def bucket_key(label: str) -> int:
    """Sort key of frequency_bucket labels (freq=0 first)."""
    return -1 if label == "freq=0" else int(label.split("^")[1].split(":")[0])


def ngram_surprisals(windows: np.ndarray, unigram: np.ndarray, pairs: np.ndarray, bigram: np.ndarray,
                     total: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(unigram, bigram) surprisal in nats of every predicted token of windows (b, T), each (b, T-1):
    counts c(w) = unigram[w] (N = total tokens), c(v w) = bigram[i] for pairs[i] = (v << 32) | w."""
    w = np.asarray(windows, np.int64)
    ctx, tok = w[:, :-1], w[:, 1:]
    uni = np.asarray(unigram, np.float64)
    s_uni = -np.log((uni[tok] + 1.0) / (float(total) + vocab_size))
    codes = (ctx << 32) | tok
    idx = np.searchsorted(pairs, codes)
    idx[idx == len(pairs)] = 0
    found = np.asarray(pairs)[idx] == codes
    c_pair = np.where(found, np.asarray(bigram, np.float64)[idx], 0.0)
    s_bi = -np.log((c_pair + 1.0) / (uni[ctx] + vocab_size))
    return s_uni, s_bi


def ols_fit(y: np.ndarray, features: list[np.ndarray]) -> tuple[float, list[float | None]]:
    """R^2 and slopes of y on [1, features...] by least squares (normal equations of the centred
    variables, float64). A feature without variance (e.g. every count 0 at step 0) gets no slope
    (None) and adds nothing to the fit."""
    y = np.asarray(y, np.float64).reshape(-1)
    yc = y - y.mean()
    sst = float(yc @ yc)
    cols, keep = [], []
    for i, f in enumerate(features):
        fc = np.asarray(f, np.float64).reshape(-1)
        fc = fc - fc.mean()
        if float(fc @ fc) > 1e-12 * max(1.0, fc.size):
            cols.append(fc)
            keep.append(i)
    slopes: list[float | None] = [None] * len(features)
    if not cols or sst == 0.0:
        return 0.0, slopes
    X = np.stack(cols, axis=1)  # (n, p)
    beta, *_ = np.linalg.lstsq(X.T @ X, X.T @ yc, rcond=None)  # p x p: the normal equations
    resid = yc - X @ beta
    for i, b in zip(keep, beta):
        slopes[i] = float(b)
    return 1.0 - float(resid @ resid) / sst, slopes


__all__ = ["acquired_share", "age_of_acquisition", "bucket_key", "forgettability", "frequency_bucket", "late_window",
           "ngram_surprisals", "ols_fit", "variability"]
