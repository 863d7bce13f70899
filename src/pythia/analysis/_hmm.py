"""Fitting a training map: a Gaussian HMM over per-checkpoint statistics, one sequence per seed,
after PolyPythias' EleutherAI/pythia `polypythias/training-maps/training_map.py` (itself after
Hu et al., "Latent State Models of Training Dynamics", TMLR 2023).

Procedure (differences from the script in brackets):
- each seed's checkpoints, in step order, form one sequence; every feature is z-scored within
  the seed over all its checkpoints [the script z-scores the train and held-out parts of a seed
  separately, so one checkpoint's value depended on which split it fell in];
- 20% of all (seed, step) rows are held out, drawn as sklearn's `train_test_split(test_size=0.2,
  random_state=2546)` draws them (same permutation); the remaining rows of each seed, in step
  order, are its training sequence;
- for n = 1..8 states (at most the number of training rows), `hmmlearn.hmm.GaussianHMM(n,
  covariance_type="diag", n_iter=10000)` is fitted from each of the script's five random states;
- each fit is scored on the held-out checkpoints by their predictive log-likelihood given the
  training checkpoints, log p(all) - log p(training rows), both by the forward algorithm over the
  full step grid with the missing rows marginalised out; the best fit per n is kept; n is the
  fewest states whose score is within one standard error (from the per-seed scores) of the best
  n's (the one-standard-error rule) [the script scores the held-out rows as sequences of their
  own, so two held-out checkpoints far apart in training count as one HMM step and a
  left-to-right map pays ~log(1e-100) for each state it skips: on clean 3-phase synthetic data
  that score preferred 1 state; the script logs it with BIC/AIC and leaves n to a person.
  Without the 1-SE rule, held-out likelihood keeps slicing smooth trends into more states];
- Viterbi decoding of every full sequence gives the states; states are renumbered by first
  visit along training (state 0 is where training starts) [hmmlearn's numbering is arbitrary].

hmmlearn starts each fit from scikit-learn's KMeans (10 restarts), whose OpenMP threads wait for
each other at every Lloyd iteration: on a busy machine those barriers made the 40 k-means of a
map take ~40x longer than on one thread, and their last bits depended on the number of cores
(the threads' partial sums meet in another order). The fits run with OpenMP on one thread: as
fast on any machine, and the same map on every machine.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

RANDOM_STATES = (5329, 2332, 4642, 6432, 4754)
SPLIT_SEED = 2546
HELD_OUT = 0.2
N_ITER = 10000


@dataclass
class MapFit:
    n_states: int
    states: list[np.ndarray]
    """Viterbi states of each input sequence, renumbered by first visit."""
    transmat: np.ndarray
    selection: list[dict] = field(default_factory=list)
    """One record per (n, random state): held-out log-likelihood and BIC, converged."""


def zscore_within(x: np.ndarray) -> np.ndarray:
    """Columns z-scored (population std, as scipy.stats.zscore); a constant column becomes 0."""
    std = x.std(axis=0)
    return np.divide(x - x.mean(axis=0), std, out=np.zeros_like(x, dtype=np.float64), where=std > 0)


def held_out_rows(n_rows: int, fraction: float = HELD_OUT, seed: int = SPLIT_SEED) -> np.ndarray:
    """Boolean mask of held-out rows: the first ceil(fraction * n) of RandomState(seed)'s
    permutation, which is what sklearn's ShuffleSplit (train_test_split) takes."""
    perm = np.random.RandomState(seed).permutation(n_rows)
    mask = np.zeros(n_rows, dtype=bool)
    mask[perm[:math.ceil(fraction * n_rows)]] = True
    return mask


def _stack(seqs: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    seqs = [s for s in seqs if len(s)]
    return np.concatenate(seqs), [len(s) for s in seqs]


def fit_map(sequences: list[np.ndarray], max_states: int = 8, n_states: int | None = None) -> MapFit:
    """Fit the map to per-seed (checkpoints, features) arrays in step order (see module doc)."""
    seqs = [zscore_within(np.asarray(s, dtype=np.float64)) for s in sequences]
    held = held_out_rows(sum(len(s) for s in seqs))
    bounds = np.cumsum([0] + [len(s) for s in seqs])
    observed = [~held[a:b] for a, b in zip(bounds[:-1], bounds[1:])]  # per seed: True = a training row
    train = _stack([s[m] for s, m in zip(seqs, observed)])
    if len(train[0]) < 2:
        raise ValueError(f"training map: {len(train[0])} training checkpoint(s); at least 2 are needed")
    candidates = [n_states] if n_states else list(range(1, min(max_states, len(train[0])) + 1))
    best: dict[int, tuple[np.ndarray, object]] = {}
    selection = []
    for n in candidates:
        for rs in RANDOM_STATES:
            model = _fit_one(n, rs, train)
            per_seed = held_out_loglik(model, seqs, observed) if model is not None else None
            ll = None if per_seed is None else float(per_seed.sum())
            selection.append({"n": n, "random_state": rs, "held_out_loglik": ll,
                              "converged": bool(model.monitor_.converged) if model is not None else False})
            if ll is not None and (n not in best or ll > best[n][0].sum()):
                best[n] = (per_seed, model)
    if not best:
        raise ValueError("training map: no HMM could be fitted (every fit failed)")
    pick = one_standard_error(best)
    model = best[pick][1]
    states = [model.predict(s) for s in seqs]
    order = _first_visit_order(states, pick)
    relabel = np.empty(pick, dtype=np.int64)
    relabel[order] = np.arange(pick)
    return MapFit(n_states=pick, states=[relabel[s] for s in states],
                  transmat=model.transmat_[np.ix_(order, order)], selection=selection)


def _fit_one(n: int, rs: int, train):
    """A GaussianHMM fitted to the training sequences; None when the fit fails."""
    from threadpoolctl import threadpool_limits

    model = _gaussian_hmm()(n_components=n, covariance_type="diag", n_iter=N_ITER, random_state=rs)
    log = logging.getLogger("hmmlearn")
    level = log.level
    log.setLevel(logging.ERROR)  # "model is not converging" notes go to the selection table instead
    try:
        with warnings.catch_warnings(), threadpool_limits(1, user_api="openmp"):
            warnings.simplefilter("ignore")
            model.fit(*train)
    except ValueError:  # e.g. "startprob_ must sum to 1 (got nan)": skipped, as the script does
        return None
    finally:
        log.setLevel(level)
    return model if usable(model) else None


_HMM_CLASS = None


def _gaussian_hmm():
    """hmmlearn's GaussianHMM, whose E-step normalises each frame's posteriors with
    `logsumexp_rows` instead of scipy's logsumexp: the same numpy operations, so the same fit
    bit for bit, without scipy's array-API dispatch, which cost ~1/3 of every EM iteration
    (hmmlearn 0.3's `_compute_posteriors_log` and `utils.log_normalize`, rewritten)."""
    global _HMM_CLASS
    if _HMM_CLASS is None:
        from hmmlearn.hmm import GaussianHMM

        class MapHMM(GaussianHMM):
            def _compute_posteriors_log(self, fwdlattice, bwdlattice):
                log_gamma = fwdlattice + bwdlattice
                if log_gamma.shape[1] == 1:
                    log_gamma[:] = 0
                else:
                    with np.errstate(under="ignore"):
                        log_gamma -= logsumexp_rows(log_gamma)
                with np.errstate(under="ignore"):
                    return np.exp(log_gamma)

        _HMM_CLASS = MapHMM
    return _HMM_CLASS


def logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """scipy.special.logsumexp(a, axis=1, keepdims=True) of a real (T, n) array, bit for bit:
    scipy's own numpy steps (scipy 1.17 `_logsumexp.py`) on the same shapes."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out_inf = np.log(np.sum(np.exp(a), axis=1, keepdims=True))
        top = np.max(a, axis=1, keepdims=True)
        at_top = a == top
        m = np.sum(at_top.astype(a.dtype), axis=1, keepdims=True, dtype=a.dtype)
        rest = a.copy()
        rest[at_top] = -np.inf
        s = np.sum(np.exp(rest - top), axis=1, keepdims=True, dtype=a.dtype)
        s = np.where(s == 0, s, s / m)
        sign = np.sign(s + 1) * np.sign(m)
        s = np.where(s < -1, -s - 2, s)
        out = np.log1p(s) + np.log(np.abs(m)) + top
        out[sign < 0] = np.nan
    return np.where(np.isfinite(out), out, out_inf)


def usable(model) -> bool:
    """Whether a fitted HMM can decode: finite means and probabilities that sum to 1. A state
    that training rows enter but never leave (it only ever comes last) keeps an all-zero
    transition row after EM, and hmmlearn then refuses to decode ("transmat_ rows must sum to
    1"): such a fit is degenerate and skipped like a failed one."""
    return bool(np.isfinite(model.means_).all() and np.isfinite(model.transmat_).all()
                and np.allclose(model.transmat_.sum(axis=1), 1.0) and np.isclose(model.startprob_.sum(), 1.0))


def held_out_loglik(model, seqs: list[np.ndarray], observed: list[np.ndarray]) -> np.ndarray | None:
    """Per seed: log p(held-out rows | training rows) = log p(all rows) - log p(training rows),
    each by the forward algorithm over the full step grid with unobserved rows marginalised
    out; None if not finite."""
    emits = [_log_emission(model, x) for x in seqs]
    both = _forwards(model, emits + [np.where(obs[:, None], e, 0.0) for e, obs in zip(emits, observed)])
    out = np.array([a - b for a, b in zip(both[:len(seqs)], both[len(seqs):])])
    return out if np.isfinite(out).all() else None


def one_standard_error(best: dict[int, tuple[np.ndarray, object]]) -> int:
    """The fewest states whose held-out score is within one standard error of the best score
    (Hastie, Tibshirani & Friedman, Elements of Statistical Learning, 2nd ed., section 7.10);
    the standard error from the spread of the per-seed scores of the best model."""
    top = max(best, key=lambda n: best[n][0].sum())
    scores = best[top][0]
    se = math.sqrt(len(scores)) * float(scores.std(ddof=1)) if len(scores) > 1 else 0.0
    return min(n for n in best if best[n][0].sum() >= scores.sum() - se)


def _log_emission(model, x: np.ndarray) -> np.ndarray:
    """log N(x_t | mean_k, diag var_k) for every row t and state k: (T, n)."""
    var = np.diagonal(model.covars_, axis1=1, axis2=2)  # (n, F)
    diff = x[:, None, :] - model.means_[None, :, :]  # (T, n, F)
    return -0.5 * (np.log(2 * np.pi * var).sum(axis=1)[None, :] + (diff ** 2 / var[None]).sum(axis=2))


def _forward(model, emit: np.ndarray) -> float:
    """log p(x) of one sequence's (T, n) log emissions (see `_forwards`)."""
    return _forwards(model, [emit])[0]


def _forwards(model, emits: list[np.ndarray]) -> list[float]:
    """The forward algorithm's log p(x) of each sequence: alpha_t = logsumexp_i(alpha_{t-1}(i) +
    log A(i, .)) + emit_t, alpha_0 = log pi + emit_0. The sequences of one length advance
    together, one array operation per step for all of them (`_logsumexp_over_previous`), which
    is what made held-out scoring cheap: it used to be one scipy call per step and sequence."""
    from scipy.special import logsumexp

    with np.errstate(divide="ignore"):
        log_a, log_pi = np.log(model.transmat_), np.log(model.startprob_)
    out = [0.0] * len(emits)
    by_length: dict[int, list[int]] = {}
    for i, e in enumerate(emits):
        by_length.setdefault(len(e), []).append(i)
    for length, idx in by_length.items():
        emit = np.stack([emits[i] for i in idx])  # (B, T, n)
        alpha = log_pi[None, :] + emit[:, 0]
        for t in range(1, length):
            alpha = _logsumexp_over_previous(alpha[:, :, None] + log_a[None]) + emit[:, t]
        for i, a in zip(idx, alpha):
            out[i] = float(logsumexp(a))
    return out


def _logsumexp_over_previous(x: np.ndarray) -> np.ndarray:
    """(B, n, n) -> (B, n): scipy.special.logsumexp(x[b], axis=0) for every b, the same bits:
    scipy's steps (the maximum taken out, exp of the rest summed, log1p, and the direct log of
    the sum of exps where that is not finite), each sum added up over the previous state in
    order, as numpy reduces a C-ordered matrix along its first axis."""
    def total(y):
        acc = y[:, 0].copy()
        for i in range(1, y.shape[1]):
            acc += y[:, i]
        return acc

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out_inf = np.log(total(np.exp(x)))
        top = x.max(axis=1, keepdims=True)
        at_top = x == top
        m = total(at_top.astype(x.dtype))
        s = total(np.exp(np.where(at_top, -np.inf, x) - top))
        s = np.where(s == 0, s, s / m)
        sign = np.sign(s + 1) * np.sign(m)
        s = np.where(s < -1, -s - 2, s)
        out = np.log1p(s) + np.log(np.abs(m)) + top[:, 0]
        out[sign < 0] = np.nan
    return np.where(np.isfinite(out), out, out_inf)


def _first_visit_order(states: list[np.ndarray], n: int) -> np.ndarray:
    """Old state ids sorted by (earliest position any seed enters them, mean position); states
    Viterbi never uses go last."""
    first = np.full(n, np.inf)
    total, count = np.zeros(n), np.zeros(n)
    for s in states:
        for k in range(n):
            where = np.flatnonzero(s == k)
            if where.size:
                first[k] = min(first[k], where[0])
                total[k] += where.sum()
                count[k] += where.size
    mean = np.divide(total, count, out=np.full(n, np.inf), where=count > 0)
    return np.array(sorted(range(n), key=lambda k: (first[k], mean[k], k)), dtype=np.int64)
