"""Scaling laws fitted to any table of (parameters, tokens, loss): numpy and scipy only.

- `fit_chinchilla(N, D, L)`: L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022,
  "Training Compute-Optimal Large Language Models", approach 3). As in the paper, the fit
  minimises sum_i Huber_delta(LSE(a - alpha ln N_i, b - beta ln D_i, e) - ln L_i) with
  delta = 1e-3, A = e^a, B = e^b, E = e^e, by L-BFGS-B from a grid of starts; the bounds of
  OLMo-core's fit (github.com/allenai/OLMo-core `src/olmo_core/model_ladder/analysis/scaling_laws.py`:
  E in [0, min L], alpha and beta in [0.01, 2]). `compute_optimal` gives N_opt(C) = G (C/6)^(beta/(alpha+beta)),
  G = (alpha A / (beta B))^(1/(alpha+beta)), for C ~ 6ND.
- `fit_kaplan(N, L)`: L(N) = (N_c/N)^alpha_N (Kaplan et al. 2020, "Scaling Laws for Neural
  Language Models", eq. 1.1) on final checkpoints at one D, same Huber loss on log residuals.
- `fit_sigmoid(task_loss, accuracy)`: accuracy = a / (1 + e^(-k (L - L0))) + b, step 2 of OLMo's
  ladder (Bhagia et al. 2024, "Establishing Task Scaling Laws via Compute-Efficient Model
  Ladders", arXiv:2412.04403), by least squares as their step-2 fit.

Every fit reports bootstrap standard errors: the points are resampled with replacement
(`bootstrap` times, >= 100 by default, from `numpy.random.default_rng(seed)`, so the same
inputs give the same numbers) and refitted; a resample whose points leave a parameter
unidentified (one N, one D) is drawn again. `band(...)` is the bootstrap's pointwise interval.

Choices the papers leave open (documented in docs/analyses.md):
- The optimiser works in centred coordinates: a_c = a - alpha mean(ln N) and b_c likewise (the
  same model; A and B are recovered exactly), because a and alpha are otherwise almost collinear
  over a few decades of N. E's lower bound is e >= ln(min L) - 30 (E = 0 has no logarithm).
- The grid: E/min L in {0.001, 0.25, 0.5, 0.75, 0.95} x alpha, beta in {0.1, 0.25, 0.5, 1, 1.5} x the
  share of (geometric-mean L - E) given to the N term in {0.1, 0.3, 0.5, 0.7, 0.9}: 625 starts,
  scored at once, L-BFGS-B from the 10 best. A bootstrap resample starts from the full fit.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares, minimize
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

__all__ = ["DELTA", "ChinchillaFit", "KaplanFit", "ScalingError", "SigmoidFit", "fit_chinchilla", "fit_kaplan",
           "fit_sigmoid", "huber"]

DELTA = 1e-3
"""Huber's delta on log residuals (Hoffmann et al.)."""
MIN_POINTS = 5
BOOTSTRAP = 200
ALPHA_BOUNDS = (0.01, 2.0)
E_FLOOR = 30.0
"""e >= ln(min L) - E_FLOOR: E down to ~1e-13 x min L stands for OLMo-core's E >= 0."""
TOP_STARTS = 10
_E_FRACTIONS = (0.001, 0.25, 0.5, 0.75, 0.95)
_EXPONENTS = (0.1, 0.25, 0.5, 1.0, 1.5)
_SHARES = (0.1, 0.3, 0.5, 0.7, 0.9)
_OPTIONS = {"ftol": 1e-12, "gtol": 1e-9, "maxiter": 1000}
_MAX_REDRAWS = 20


class ScalingError(ValueError):
    """Inputs no scaling law can be fitted to (too few points, one size, non-positive or NaN values)."""


def huber(r: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Huber's loss: r^2/2 within delta, delta (|r| - delta/2) beyond."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


# ---------------------------------------------------------------------------------------------
# input checks


def _one_blas_thread(fit):
    """Run a fit with BLAS on one thread: scipy's L-BFGS-B calls BLAS on 5-vectors thousands of
    times, and OpenBLAS's thread pool made that ~10x slower (100x on a busy machine)."""
    @functools.wraps(fit)
    def wrapper(*args, **kwargs):
        with threadpool_limits(1, user_api="blas"):
            return fit(*args, **kwargs)
    return wrapper


def _column(values, name: str, positive: bool = True) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ScalingError(f"{name} must be numbers, got {values!r:.80}") from None
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ScalingError(f"{name} has {bad.size} NaN or infinite value(s) (rows {_rows(bad)}): drop the rows "
                           "whose metric is undefined before fitting")
    if positive:
        bad = np.flatnonzero(x <= 0)
        if bad.size:
            raise ScalingError(f"{name} must be positive; rows {_rows(bad)} hold {x[bad[0]]!r}"
                               + (" (a loss of 0 or less has no logarithm)" if name.startswith("L") else ""))
    return x


def _rows(idx: np.ndarray) -> str:
    return ", ".join(map(str, idx[:8])) + (", ..." if idx.size > 8 else "")


def _same_length(**columns: np.ndarray) -> int:
    lengths = {k: v.size for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ScalingError("inputs differ in length: " + ", ".join(f"{k} {n}" for k, n in lengths.items()))
    n = next(iter(lengths.values()))
    if n < MIN_POINTS:
        raise ScalingError(f"a scaling law needs at least {MIN_POINTS} points, got {n}")
    return n


def _distinct(x: np.ndarray, name: str, what: str) -> None:
    if np.unique(x).size < 2:
        raise ScalingError(f"{name} takes one value only ({x[0]:.6g}): {what}")


# ---------------------------------------------------------------------------------------------
# what every fit has


class _Fit:
    """Shared by the fits: `PARAMS` name the fields the law `_law(*x, *params)` takes after its
    inputs; `samples` holds the bootstrap fits' parameters in that order."""

    PARAMS: tuple[str, ...] = ()
    samples: np.ndarray

    @staticmethod
    def _law(*args):
        raise NotImplementedError

    @property
    def params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.PARAMS}

    def predict(self, *x) -> np.ndarray:
        """The fitted law at x (arrays broadcast)."""
        return self._law(*(np.asarray(v, dtype=np.float64) for v in x), *self.params.values())

    def _resampled(self, x) -> np.ndarray:
        x = [np.asarray(v, dtype=np.float64) for v in x]
        return np.stack([self._law(*x, *s) for s in self.samples])

    def band(self, *x, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap interval at x: the (1-level)/2 and (1+level)/2 quantiles of the
        resampled fits' predictions (the prediction itself without a bootstrap)."""
        if len(self.samples) < 2:
            p = self.predict(*x)
            return p, p
        lo, hi = np.quantile(self._resampled(x), [(1 - level) / 2, (1 + level) / 2], axis=0)
        return lo, hi

    def predict_stderr(self, *x) -> np.ndarray:
        """Standard deviation of the resampled fits' predictions at x (NaN without a bootstrap)."""
        if len(self.samples) < 2:
            return np.full(np.broadcast(*(np.asarray(v) for v in x)).shape, np.nan)
        return self._resampled(x).std(axis=0, ddof=1)


# ---------------------------------------------------------------------------------------------
# Chinchilla: L(N, D) = E + A/N^alpha + B/D^beta


@dataclass(frozen=True)
class ChinchillaFit(_Fit):
    """A fitted L(N, D); `stderr` and `samples` come from the bootstrap."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    n_points: int
    objective: float
    """Mean Huber loss of the log residuals at the optimum, over delta^2."""
    stderr: dict = field(default_factory=dict)
    """{"E", "A", "B", "alpha", "beta"}: standard deviation over the bootstrap fits (NaN: none)."""
    samples: np.ndarray = field(default_factory=lambda: np.empty((0, 5)), repr=False)
    """(resamples, 5) array of E, A, B, alpha, beta fitted to each bootstrap resample."""

    PARAMS = ("E", "A", "B", "alpha", "beta")

    @staticmethod
    def _law(N, D, E, A, B, alpha, beta):
        return E + A * N ** (-alpha) + B * D ** (-beta)

    @property
    def G(self) -> float:
        """(alpha A / (beta B))^(1/(alpha+beta)) of the compute-optimal allocation."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def compute_optimal(self, C) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) for compute C ~ 6ND: N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = C/(6 N_opt)."""
        C = np.asarray(C, dtype=np.float64)
        n = self.G * (C / 6.0) ** (self.beta / (self.alpha + self.beta))
        return n, C / (6.0 * n)

    def N_opt(self, C) -> np.ndarray:
        return self.compute_optimal(C)[0]


class _Chinchilla:
    """The objective in centred coordinates theta = (a_c, b_c, e, alpha, beta)."""

    def __init__(self, N, D, L, delta):
        self.lnN, self.lnD, self.lnL = np.log(N), np.log(D), np.log(L)
        self.cN, self.cD = self.lnN.mean(), self.lnD.mean()
        self.u, self.v = self.lnN - self.cN, self.lnD - self.cD
        self.delta = delta
        self.n = L.size
        lo_e = self.lnL.min() - E_FLOOR
        self.bounds = [(None, None), (None, None), (lo_e, self.lnL.min()), ALPHA_BOUNDS, ALPHA_BOUNDS]

    def __call__(self, theta, idx=None):
        """(objective, gradient) on the points `idx` (all by default). The objective is the mean
        Huber loss over delta^2 (the same minimiser; values of order (residual/delta)^2, so that
        L-BFGS-B's relative tolerances mean something)."""
        u, v, lnL = (self.u, self.v, self.lnL) if idx is None else (self.u[idx], self.v[idx], self.lnL[idx])
        a_c, b_c, e, alpha, beta = theta
        t1, t2 = a_c - alpha * u, b_c - beta * v
        m = np.maximum(np.maximum(t1, t2), e)
        x1, x2, x3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
        total = x1 + x2 + x3
        r = m + np.log(total) - lnL
        d = self.delta
        a = np.abs(r)
        loss = np.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d)).sum()
        psi = np.clip(r, -d, d) / total
        scale = 1.0 / (r.size * d * d)
        p1, p2 = psi * x1, psi * x2
        g = np.array([p1.sum(), p2.sum(), (psi * x3).sum(), -(p1 @ u), -(p2 @ v)]) * scale
        return float(loss * scale), g

    def grid(self, idx=None) -> np.ndarray:
        """The grid of starts (module doc), best first by the objective on `idx`."""
        lnL = self.lnL if idx is None else self.lnL[idx]
        lmin, lgeo = np.exp(lnL.min()), np.exp(lnL.mean())
        starts = []
        for f, alpha, beta, s in itertools.product(_E_FRACTIONS, _EXPONENTS, _EXPONENTS, _SHARES):
            E = f * lmin
            rest = max(lgeo - E, 1e-3 * lgeo)
            starts.append((np.log(s * rest), np.log((1 - s) * rest), np.log(E), alpha, beta))
        starts = np.array(starts)
        u, v = (self.u, self.v) if idx is None else (self.u[idx], self.v[idx])
        t = np.stack(np.broadcast_arrays(starts[:, :1] - starts[:, 3:4] * u, starts[:, 1:2] - starts[:, 4:5] * v,
                                         starts[:, 2:3]))
        score = huber(logsumexp(t, axis=0) - lnL, self.delta).mean(axis=1)
        return starts[np.argsort(score, kind="stable")]

    def solve(self, starts, idx=None) -> tuple[np.ndarray, float]:
        best = None
        for x0 in starts:
            res = minimize(self, x0, args=(idx,), jac=True, method="L-BFGS-B", bounds=self.bounds, options=_OPTIONS)
            if np.all(np.isfinite(res.x)) and (best is None or res.fun < best.fun):
                best = res
        return best.x, float(best.fun)

    def natural(self, theta) -> np.ndarray:
        """(E, A, B, alpha, beta) of centred theta."""
        a_c, b_c, e, alpha, beta = theta
        return np.array([np.exp(e), np.exp(a_c + alpha * self.cN), np.exp(b_c + beta * self.cD), alpha, beta])


@_one_blas_thread
def fit_chinchilla(N, D, L, *, bootstrap: int = BOOTSTRAP, seed: int = 0, delta: float = DELTA) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta to points (N non-embedding parameters, D tokens,
    L loss > 0); see the module doc. `bootstrap` = 0: no standard errors."""
    N, D, L = _column(N, "N (parameters)"), _column(D, "D (tokens)"), _column(L, "L (loss)")
    n = _same_length(N=N, D=D, L=L)
    _distinct(N, "N", "one model size cannot separate A/N^alpha from E (fit several sizes)")
    _distinct(D, "D", "one token count cannot separate B/D^beta from E (fit several checkpoints or runs of "
                      "different lengths, or use fit_kaplan at one D)")
    obj = _Chinchilla(N, D, L, delta)
    theta, fun = obj.solve(obj.grid()[:TOP_STARTS])
    rows = []

    def one(idx):
        if np.unique(N[idx]).size < 2 or np.unique(D[idx]).size < 2:
            return None
        t, _ = obj.solve([theta], idx)
        return obj.natural(t)

    samples = _bootstrap(one, n, bootstrap, seed, 5)
    rows = dict(zip(ChinchillaFit.PARAMS, obj.natural(theta)))
    return ChinchillaFit(**{k: float(v) for k, v in rows.items()}, n_points=n, objective=fun,
                         stderr=_stderr(ChinchillaFit.PARAMS, samples), samples=samples)


def _bootstrap(one, n: int, count: int, seed: int, width: int) -> np.ndarray:
    """Fits of `count` resamples (indices drawn with replacement); a resample `one` refuses
    (returns None) is drawn again, at most _MAX_REDRAWS times in a row."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(max(int(count), 0)):
        for _ in range(_MAX_REDRAWS):
            fit = one(rng.integers(0, n, size=n))
            if fit is not None:
                out.append(fit)
                break
    return np.array(out, dtype=np.float64).reshape(len(out), width)


def _stderr(names, samples: np.ndarray) -> dict[str, float]:
    if len(samples) < 2:
        return {k: float("nan") for k in names}
    return {k: float(s) for k, s in zip(names, samples.std(axis=0, ddof=1))}


# ---------------------------------------------------------------------------------------------
# Kaplan: L(N) = (N_c / N)^alpha_N


@dataclass(frozen=True)
class KaplanFit(_Fit):
    """A fitted L(N) = (N_c/N)^alpha at one D."""

    alpha: float
    N_c: float
    n_points: int
    objective: float
    stderr: dict = field(default_factory=dict)
    samples: np.ndarray = field(default_factory=lambda: np.empty((0, 2)), repr=False)
    """(resamples, 2): alpha, N_c of each bootstrap fit."""

    PARAMS = ("alpha", "N_c")

    @staticmethod
    def _law(N, alpha, N_c):
        return np.exp(alpha * (np.log(N_c) - np.log(N)))


@_one_blas_thread
def fit_kaplan(N, L, *, bootstrap: int = BOOTSTRAP, seed: int = 0, delta: float = DELTA) -> KaplanFit:
    """Fit L(N) = (N_c/N)^alpha (points at one D): Huber loss on ln L = alpha ln N_c - alpha ln N,
    a convex problem, solved by L-BFGS-B from the least-squares line."""
    N, L = _column(N, "N (parameters)"), _column(L, "L (loss)")
    n = _same_length(N=N, L=L)
    _distinct(N, "N", "a power law in N needs several sizes")
    lnN, lnL = np.log(N), np.log(L)
    c = lnN.mean()
    u = lnN - c

    def solve(idx):
        x, y = u[idx], lnL[idx]

        def f(p):
            r = p[0] - p[1] * x - y
            scale = 1.0 / (r.size * delta * delta)  # as in _Chinchilla
            psi = np.clip(r, -delta, delta) * scale
            return float(huber(r, delta).sum() * scale), np.array([psi.sum(), -(psi @ x)])

        slope = -np.polyfit(x, y, 1)[0]
        res = minimize(f, np.array([y.mean() + slope * x.mean(), slope]), jac=True, method="L-BFGS-B",
                       options=_OPTIONS)
        k0, alpha = res.x
        return np.array([alpha, np.exp(k0 / alpha + c)]), float(res.fun)

    everything = np.arange(n)
    best, fun = solve(everything)

    def one(idx):
        return solve(idx)[0] if np.unique(N[idx]).size >= 2 else None

    samples = _bootstrap(one, n, bootstrap, seed, 2)
    return KaplanFit(alpha=float(best[0]), N_c=float(best[1]), n_points=n, objective=fun,
                     stderr=_stderr(KaplanFit.PARAMS, samples), samples=samples)


# ---------------------------------------------------------------------------------------------
# OLMo's ladder, step 2: accuracy = a / (1 + exp(-k (L - L0))) + b


@dataclass(frozen=True)
class SigmoidFit(_Fit):
    """A fitted accuracy(task loss) = a / (1 + e^(-k (L - L0))) + b."""

    a: float
    k: float
    L0: float
    b: float
    n_points: int
    objective: float
    """Mean squared residual at the optimum."""
    stderr: dict = field(default_factory=dict)
    samples: np.ndarray = field(default_factory=lambda: np.empty((0, 4)), repr=False)

    PARAMS = ("a", "k", "L0", "b")

    @staticmethod
    def _law(x, a, k, L0, b):
        return a / (1.0 + np.exp(np.clip(-k * (x - L0), -700, 700))) + b


@_one_blas_thread
def fit_sigmoid(task_loss, accuracy, *, bootstrap: int = BOOTSTRAP, seed: int = 0) -> SigmoidFit:
    """Fit accuracy = a / (1 + e^(-k (L - L0))) + b by least squares (scipy's trust-region
    reflective solver, analytic Jacobian) from 9 starts spread over the data's range.

    A handful of points on the sigmoid's straight stretch leave its four parameters free to
    wander (OLMo's ladder pins them with two made-up points, perfect and chance accuracy); here
    bounds keep the curve an accuracy that falls as the loss grows: both asymptotes in [0, 1]
    (b in [0, 1], a in [-1, 0]), k in [0, 1000/span] and L0 within the losses' range widened by
    its span on both sides (span = max - min of the losses)."""
    x = _column(task_loss, "task_loss", positive=False)
    y = _column(accuracy, "accuracy", positive=False)
    n = _same_length(task_loss=x, accuracy=y)
    _distinct(x, "task_loss", "a sigmoid of the loss needs several losses")
    _distinct(y, "accuracy", "no sigmoid is defined by a flat line (a task no checkpoint solves, or all do)")
    outside = np.flatnonzero((y < 0) | (y > 1))
    if outside.size:
        raise ScalingError(f"accuracy must lie in [0, 1]; rows {_rows(outside)} hold {y[outside[0]]!r}")
    span = float(np.ptp(x))
    bounds = ([-1.0, 0.0, x.min() - span, 0.0], [0.0, 1000.0 / span, x.max() + span, 1.0])

    def starts(xs, ys):
        hi, lo = float(ys.max()), float(ys.min())
        return [np.clip([min(lo - hi, -1e-3), k / span, l0, hi], *bounds) for k in (1.0, 4.0, 12.0)
                for l0 in np.quantile(xs, [0.25, 0.5, 0.75])]

    def jac(p, xs, ys):
        a, k, l0, _ = p
        s = SigmoidFit._law(xs, 1.0, k, l0, 0.0)
        ds = s * (1.0 - s)
        return np.stack([s, a * ds * (xs - l0), -a * ds * k, np.ones_like(xs)], axis=1)

    def solve(xs, ys, x0s):
        best = None
        for x0 in x0s:
            res = least_squares(lambda p, xs, ys: SigmoidFit._law(xs, *p) - ys, x0, jac=jac, args=(xs, ys),
                                bounds=bounds, method="trf", x_scale="jac", max_nfev=500)
            if np.all(np.isfinite(res.x)) and (best is None or res.cost < best.cost):
                best = res
        return best.x, 2.0 * float(best.cost) / xs.size

    theta, fun = solve(x, y, starts(x, y))

    def one(idx):
        if np.unique(x[idx]).size < 4:  # four parameters
            return None
        return solve(x[idx], y[idx], [theta])[0]

    samples = _bootstrap(one, n, bootstrap, seed, 4)
    return SigmoidFit(**dict(zip(SigmoidFit.PARAMS, map(float, theta))), n_points=n, objective=fun,
                      stderr=_stderr(SigmoidFit.PARAMS, samples), samples=samples)
