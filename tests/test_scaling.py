"""pythia.scaling: the laws recovered from points made with known parameters, checked against an
independent least-squares fit written here, deterministic, and refusing degenerate inputs."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from pythia.config import PYTHIA_SIZES
from pythia.scaling import ChinchillaFit, ScalingError, fit_chinchilla, fit_kaplan, fit_sigmoid

# Hoffmann et al. 2022's published fit (approach 3, their eq. 10)
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# Kaplan et al. 2020's L(N) (their eq. 1.1 / table 5): alpha_N = 0.076, N_c = 8.8e13
KAPLAN = {"alpha": 0.076, "N_c": 8.8e13}
PYTHIA = [c for name, c in PYTHIA_SIZES.items() if name not in ("pythia-14m", "pythia-31m")]  # the eight of the paper
STEPS = (1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000)
TOKENS_PER_STEP = 1024 * 2048
NOISE = 0.005
"""Multiplicative noise of the noisy tests: L x exp(N(0, 0.5%)), about the seed-to-seed spread of a
well-trained language model's validation loss."""


def pythia_grid():
    """N (non-embedding parameters of Pythia's eight sizes) x D (tokens at eight checkpoints)."""
    n = np.array([c.num_params(non_embedding=True) for c in PYTHIA], dtype=float)
    N, D = np.meshgrid(n, np.array(STEPS, dtype=float) * TOKENS_PER_STEP, indexing="ij")
    return N.ravel(), D.ravel()


def chinchilla_law(N, D, E, A, B, alpha, beta):
    return E + A / N ** alpha + B / D ** beta


def noisy(L, seed):
    return L * np.exp(np.random.default_rng(seed).normal(0.0, NOISE, np.shape(L)))


def least_squares_fit(N, D, L):
    """An independent fit: scipy's least squares on the log residuals ln L_hat - ln L, in the
    natural parameters (E, ln A, ln B, alpha, beta), from a few starts, no log-sum-exp and no
    centring. loss="huber" with f_scale = delta makes its objective sum C^2 rho((r/C)^2) =
    2 sum Huber_delta(r): Hoffmann et al.'s objective, minimised by another algorithm
    (trust-region reflective) on another parametrisation."""
    def residuals(p):
        E, lnA, lnB, alpha, beta = p
        return np.log(E + np.exp(lnA - alpha * np.log(N)) + np.exp(lnB - beta * np.log(D))) - np.log(L)

    best = None
    for start in ([1.0, 5.0, 5.0, 0.3, 0.3], [2.0, 8.0, 8.0, 0.5, 0.5], [0.5, 3.0, 7.0, 0.2, 0.4]):
        res = least_squares(residuals, start, bounds=([0.0, -50, -50, 0.01, 0.01], [L.min(), 50, 50, 2.0, 2.0]),
                            loss="huber", f_scale=1e-3, x_scale="jac", xtol=1e-14, ftol=1e-14, gtol=1e-14,
                            max_nfev=20000)
        if best is None or res.cost < best.cost:
            best = res
    E, lnA, lnB, alpha, beta = best.x
    return {"E": E, "A": np.exp(lnA), "B": np.exp(lnB), "alpha": alpha, "beta": beta}


def test_noiseless_chinchilla_points_are_recovered_exactly():
    N, D = pythia_grid()
    L = chinchilla_law(N, D, **CHINCHILLA)
    fit = fit_chinchilla(N, D, L, bootstrap=0)
    for name, value in CHINCHILLA.items():
        assert getattr(fit, name) == pytest.approx(value, rel=1e-6), name
    assert np.allclose(fit.predict(N, D), L, rtol=1e-9)
    assert fit.n_points == N.size and len(fit.samples) == 0 and np.isnan(fit.stderr["alpha"])


def test_noisy_chinchilla_points_within_tolerances_and_their_bootstrap_errors():
    N, D = pythia_grid()
    L = chinchilla_law(N, D, **CHINCHILLA)
    fit = fit_chinchilla(N, D, noisy(L, 1), bootstrap=100, seed=0)
    # stated tolerances at 0.5% noise: exponents to 0.03, E to 0.1 nats, A and B to a factor 1.5
    assert abs(fit.alpha - 0.34) < 0.03 and abs(fit.beta - 0.28) < 0.03 and abs(fit.E - 1.69) < 0.1
    assert 1 / 1.5 < fit.A / 406.4 < 1.5 and 1 / 1.5 < fit.B / 410.7 < 1.5
    for name, value in CHINCHILLA.items():  # and each within 4 of its bootstrap standard errors
        assert 0 < fit.stderr[name] and abs(getattr(fit, name) - value) < 4 * fit.stderr[name], name
    assert np.max(np.abs(fit.predict(N, D) / L - 1)) < 0.01  # the law itself, to 1%
    assert fit.samples.shape == (100, 5)
    lo, hi = fit.band(N, D)
    assert np.all(lo <= fit.predict(N, D) + 1e-12) and np.all(fit.predict(N, D) <= hi + 1e-12)
    assert np.all(fit.predict_stderr(N, D) > 0)


def test_an_independent_least_squares_fit_agrees_within_the_bootstrap_errors():
    N, D = pythia_grid()
    L = noisy(chinchilla_law(N, D, **CHINCHILLA), 2)
    ours = fit_chinchilla(N, D, L, bootstrap=100, seed=0)
    theirs = least_squares_fit(N, D, L)
    for name in CHINCHILLA:  # the same optimum: far within the bootstrap's standard errors
        assert abs(getattr(ours, name) - theirs[name]) < 0.01 * ours.stderr[name], (name, getattr(ours, name),
                                                                                    theirs[name])
    noiseless = chinchilla_law(N, D, **CHINCHILLA)  # and on exact points, to many digits
    exact = least_squares_fit(N, D, noiseless)
    for name, value in fit_chinchilla(N, D, noiseless, bootstrap=0).params.items():
        assert value == pytest.approx(exact[name], rel=1e-5), name


def test_the_bootstrap_is_seeded():
    N, D = pythia_grid()
    L = noisy(chinchilla_law(N, D, **CHINCHILLA), 3)
    a, b = fit_chinchilla(N, D, L, bootstrap=20, seed=7), fit_chinchilla(N, D, L, bootstrap=20, seed=7)
    assert a.samples.tobytes() == b.samples.tobytes() and a.stderr == b.stderr and a.params == b.params
    c = fit_chinchilla(N, D, L, bootstrap=20, seed=8)
    assert c.params == a.params and c.samples.tobytes() != a.samples.tobytes()


def test_compute_optimal_allocation_minimises_the_fitted_loss():
    """N_opt(C) against a brute-force scan of L(N, C/(6N)) over N."""
    fit = ChinchillaFit(**CHINCHILLA, n_points=0, objective=0.0)
    for C in (1e20, 5.76e23, 1e26):
        grid = np.logspace(6, 14, 400001)
        best = grid[np.argmin(fit.predict(grid, C / (6 * grid)))]
        n_opt, d_opt = fit.compute_optimal(C)
        assert n_opt == pytest.approx(best, rel=1e-3) and 6 * n_opt * d_opt == pytest.approx(C)
    g = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)
    assert fit.G == pytest.approx(g) and fit.N_opt(6e24) == pytest.approx(g * 1e24 ** (0.28 / 0.62))


def test_kaplan_points_are_recovered():
    n = np.repeat([c.num_params(non_embedding=True) for c in PYTHIA], 3).astype(float)
    L = (KAPLAN["N_c"] / n) ** KAPLAN["alpha"]
    exact = fit_kaplan(n, L, bootstrap=0)
    assert exact.alpha == pytest.approx(0.076, rel=1e-7) and exact.N_c == pytest.approx(8.8e13, rel=1e-5)
    fit = fit_kaplan(n, noisy(L, 4), bootstrap=100)
    assert abs(fit.alpha - 0.076) < 3 * fit.stderr["alpha"] and abs(fit.alpha - 0.076) < 0.01
    assert np.max(np.abs(fit.predict(n) / L - 1)) < 0.01
    # against numpy's least-squares line through (ln N, ln L), which it must match without noise
    slope, intercept = np.polyfit(np.log(n), np.log(L), 1)
    assert exact.alpha == pytest.approx(-slope, rel=1e-7) and np.log(exact.N_c) == pytest.approx(-intercept / slope)


def test_sigmoid_points_are_recovered():
    true = {"a": -0.55, "k": 2.5, "L0": 3.0, "b": 0.8}
    x = np.linspace(1.0, 5.5, 24)
    y = true["a"] / (1 + np.exp(-true["k"] * (x - true["L0"]))) + true["b"]
    fit = fit_sigmoid(x, y, bootstrap=0)
    for name, value in true.items():
        assert getattr(fit, name) == pytest.approx(value, rel=1e-6), name
    rng = np.random.default_rng(5)
    noisy_fit = fit_sigmoid(x, y + rng.normal(0, 0.01, x.size), bootstrap=100)
    assert np.max(np.abs(noisy_fit.predict(x) - y)) < 0.02
    for name, value in true.items():
        assert abs(getattr(noisy_fit, name) - value) < 4 * noisy_fit.stderr[name], name


@pytest.mark.parametrize("args, message", [
    (([1e6, 2e6, 4e6, 8e6], [1e9] * 4, [3.0, 2.9, 2.8, 2.7]), "at least 5 points"),
    (([1e6] * 6, [1e9, 2e9, 4e9, 8e9, 1.6e10, 3.2e10], [3, 2.9, 2.8, 2.7, 2.6, 2.5]), "N takes one value only"),
    (([1e6, 2e6, 4e6, 8e6, 1.6e7], [1e9] * 5, [3, 2.9, 2.8, 2.7, 2.6]), "D takes one value only"),
    (([1e6, 2e6, 4e6, 8e6, 1.6e7], [1e9, 2e9, 4e9, 8e9, 1.6e10], [3, 2.9, 0.0, 2.7, 2.6]), "must be positive"),
    (([1e6, 2e6, 4e6, 8e6, 1.6e7], [1e9, 2e9, 4e9, 8e9, 1.6e10], [3, float("nan"), 2.8, 2.7, 2.6]), "NaN"),
    (([1e6, 2e6, 4e6, 8e6, 1.6e7], [1e9, 2e9, 4e9, 8e9], [3, 2.9, 2.8, 2.7, 2.6]), "differ in length"),
])
def test_degenerate_chinchilla_inputs_are_refused(args, message):
    with pytest.raises(ScalingError, match=message):
        fit_chinchilla(*args, bootstrap=0)


def test_degenerate_kaplan_and_sigmoid_inputs_are_refused():
    with pytest.raises(ScalingError, match="one value only"):
        fit_kaplan([1e8] * 5, [3.0, 3.1, 2.9, 3.0, 3.05])
    with pytest.raises(ScalingError, match="must be positive"):
        fit_kaplan([1e6, 1e7, 1e8, 1e9, 1e10], [3.0, 2.5, -2.0, 1.9, 1.7])
    with pytest.raises(ScalingError, match="NaN"):
        fit_sigmoid([1.0, 2.0, 3.0, 4.0, float("inf")], [0.9, 0.8, 0.6, 0.4, 0.3])
    with pytest.raises(ScalingError, match=r"accuracy must lie in \[0, 1\]"):
        fit_sigmoid([1.0, 2.0, 3.0, 4.0, 5.0], [90, 80, 60, 40, 30])
    with pytest.raises(ScalingError, match="at least 5"):
        fit_sigmoid([1.0, 2.0, 3.0, 4.0], [0.9, 0.8, 0.6, 0.4])
    with pytest.raises(ScalingError, match="accuracy takes one value only"):  # a task no checkpoint solves
        fit_sigmoid([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5)
