"""pythia.matrix_stats against direct numpy implementations of the definitions (written here from
the formulas, not from the project's code), and the properties CKA must have."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pythia.matrix_stats import (
    condition_number,
    gini,
    gram,
    gram_cka,
    hoyer,
    is_weight_matrix,
    linear_cka,
    proportional_effective_rank,
)


def np_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. eq. 5 in feature space: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), columns centred."""
    x = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    y = y.astype(np.float64) - y.mean(axis=0, dtype=np.float64)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def np_per(m: np.ndarray) -> float:
    s = np.linalg.svd(m.astype(np.float64), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return math.exp(-(p * np.log(p)).sum()) / len(s)


def np_condition(m: np.ndarray) -> float:
    s = np.linalg.svd(m.astype(np.float64), compute_uv=False)
    kept = s[s >= 1e-7 * s.max()]
    return kept.max() / kept.min()


def np_hoyer(m: np.ndarray) -> float:
    x = m.astype(np.float64).ravel()
    n = x.size
    return (math.sqrt(n) - np.abs(x).sum() / math.sqrt((x * x).sum())) / (math.sqrt(n) - 1)


def np_gini(m: np.ndarray) -> float:
    a = np.sort(np.abs(m.astype(np.float64).ravel()))
    n = a.size
    i = np.arange(1, n + 1)
    return ((2 * i - n - 1) * a).sum() / (n * a.sum())


def _svals(m: np.ndarray) -> torch.Tensor:
    return torch.linalg.svdvals(torch.from_numpy(m))


@pytest.mark.parametrize("shape", [(40, 16), (16, 40), (33, 33)])
def test_matrix_statistics_equal_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    m = rng.standard_normal(shape) * rng.uniform(0.1, 3.0, size=shape[1])  # uneven column scales
    assert proportional_effective_rank(_svals(m)) == pytest.approx(np_per(m), rel=1e-12)
    assert condition_number(_svals(m)) == pytest.approx(np_condition(m), rel=1e-9)
    t = torch.from_numpy(m)
    assert hoyer(t) == pytest.approx(np_hoyer(m), rel=1e-12)
    assert gini(t) == pytest.approx(np_gini(m), rel=1e-12)
    assert gini(t.float(), chunk=7) == pytest.approx(np_gini(m.astype(np.float32)), rel=1e-6)  # chunked sums


def test_known_values_and_edges():
    one_hot = torch.zeros(10)
    one_hot[3] = -2.0
    assert hoyer(one_hot) == pytest.approx(1.0) and gini(one_hot) == pytest.approx(0.9)  # (n-1)/n
    flat = torch.full((4, 5), 0.5)
    assert hoyer(flat) == pytest.approx(0.0, abs=1e-12) and gini(flat) == pytest.approx(0.0, abs=1e-12)
    assert proportional_effective_rank(torch.ones(8)) == pytest.approx(1.0)  # equal singular values: full rank
    assert proportional_effective_rank(torch.tensor([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    rank_one = np.outer(np.arange(1.0, 6.0), np.arange(1.0, 4.0))  # tiny singular values are dropped
    assert condition_number(_svals(rank_one)) == pytest.approx(1.0)
    for f in (hoyer, gini):
        assert math.isnan(f(torch.zeros(3, 3)))
    assert math.isnan(proportional_effective_rank(torch.zeros(3))) and math.isnan(condition_number(torch.zeros(3)))


def test_cka_equals_numpy_is_one_with_itself_and_invariant_to_rotation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 64)) @ rng.standard_normal((64, 64))
    y = x[:, :48] + 0.7 * rng.standard_normal((24, 48))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert linear_cka(tx, ty) == pytest.approx(np_cka(x, y), rel=1e-10)
    assert linear_cka(tx, tx) == pytest.approx(1.0, rel=1e-12)
    q, _ = np.linalg.qr(rng.standard_normal((64, 64)))  # orthogonal
    assert linear_cka(tx, torch.from_numpy(x @ q)) == pytest.approx(1.0, rel=1e-10)
    assert linear_cka(torch.from_numpy(x @ q), ty) == pytest.approx(linear_cka(tx, ty), rel=1e-10)
    assert linear_cka(tx * 3.0 + 5.0, ty) == pytest.approx(linear_cka(tx, ty), rel=1e-10)  # isotropic scale, shift
    # more examples than features (the feature-space and Gram forms agree either way)
    a, b = rng.standard_normal((80, 6)), rng.standard_normal((80, 9))
    assert gram_cka(gram(torch.from_numpy(a)), gram(torch.from_numpy(b))) == pytest.approx(np_cka(a, b), rel=1e-10)
    # a canary: independent features score far below related ones
    assert linear_cka(torch.from_numpy(a), torch.from_numpy(b)) < 0.5 < linear_cka(tx, ty)
    with pytest.raises(ValueError, match="same examples"):
        gram_cka(gram(tx), gram(torch.from_numpy(a)))


def test_weight_matrices_are_the_2d_weights():
    assert is_weight_matrix("gpt_neox.layers.0.mlp.dense_h_to_4h.weight", torch.zeros(4, 2))
    assert is_weight_matrix("embed_out.weight", torch.zeros(4, 2))
    assert not is_weight_matrix("gpt_neox.layers.0.input_layernorm.weight", torch.zeros(4))
    assert not is_weight_matrix("gpt_neox.layers.0.mlp.dense_h_to_4h.bias", torch.zeros(4))
