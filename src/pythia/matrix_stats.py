"""Statistics of weight matrices, gradients and representations that learning-dynamics studies read.

- Linear CKA (Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations
  Revisited", ICML 2019, eq. 5) of two activation matrices X, Y (n x d, columns centred):
  ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F). It equals <K, L>_F / (||K||_F ||L||_F) with the Gram
  matrices K = X X^T, L = Y Y^T (n x n), which is what `gram` precomputes once per checkpoint so
  each pair costs one dot product. With n well below d, linear CKA is biased towards 1 (Murphy,
  Zylberberg, Fyshe 2024): compare values at one probe size only.
- Proportional effective rank (Roy & Vetterli, "The effective rank", EUSIPCO 2007; pico-analyze's
  `per` metric, Diehl Martinez et al. 2024): exp(-sum p_i ln p_i) / #sigma with p_i = sigma_i / sum sigma.
- Condition number sigma_max / sigma_min over the singular values at least 1e-7 sigma_max.
- Hoyer sparsity (Hoyer 2004): (sqrt(n) - ||x||_1 / ||x||_2) / (sqrt(n) - 1), 0 for a constant
  vector, 1 for a single non-zero entry.
- Gini coefficient of |x| (Hurley & Rickard 2009): sum_i (2i - n - 1) |x|_(i) / (n sum |x|), |x|
  sorted ascending, i = 1..n.

Reductions run in float64 on the tensors' device; singular values come in as computed (float32
for float32 weights). Undefined values (an all-zero matrix) are NaN, which results rows drop.
"""
from __future__ import annotations

import math

import torch

SMALL_SINGULAR = 1e-7
"""Singular values below this fraction of the largest are dropped from the condition number."""

__all__ = ["SMALL_SINGULAR", "condition_number", "gini", "gram", "gram_cka", "hoyer", "is_weight_matrix", "linear_cka",
           "proportional_effective_rank"]


def is_weight_matrix(name: str, param) -> bool:
    """The parameters these statistics are taken of: every 2-D `*.weight` (embeddings, attention
    and MLP projections, the output head); LayerNorms and biases are vectors. `param`: a tensor or
    anything with `get_shape()` (a safetensors slice, read without loading the tensor)."""
    shape = param.shape if hasattr(param, "shape") else param.get_shape()
    return name.endswith(".weight") and len(shape) == 2


def proportional_effective_rank(sv: torch.Tensor) -> float:
    """PER of a matrix from its singular values (any order)."""
    sv = sv.double()
    total = float(sv.sum())
    if not math.isfinite(total) or total <= 0.0:
        return math.nan
    p = sv[sv > 0] / total
    return math.exp(-float((p * p.log()).sum())) / sv.numel()


def condition_number(sv: torch.Tensor) -> float:
    """sigma_max / sigma_min, ignoring singular values below SMALL_SINGULAR x sigma_max."""
    sv = sv.double()
    top = float(sv.max())
    if not math.isfinite(top) or top <= 0.0:
        return math.nan
    return top / float(sv[sv >= SMALL_SINGULAR * top].min())


def hoyer(x: torch.Tensor) -> float:
    """Hoyer's sparsity of all entries of `x` (NaN for a single entry or all zeros)."""
    n = x.numel()
    l1 = float(x.abs().sum(dtype=torch.float64))
    l2 = float(torch.linalg.vector_norm(x, dtype=torch.float64))
    if n < 2 or l2 == 0.0:
        return math.nan
    root = math.sqrt(n)
    return (root - l1 / l2) / (root - 1.0)


def gini(x: torch.Tensor, chunk: int = 1 << 20) -> float:
    """Gini coefficient of |x| over all entries (NaN for all zeros).

    sum_i (2i - n - 1) a_(i) = 2 sum_i i a_(i) - (n + 1) sum a, accumulated in float64 over chunks
    of `chunk` entries (no float64 copy of a large matrix)."""
    a = x.detach().reshape(-1).abs().sort().values
    n = a.numel()
    total = float(a.sum(dtype=torch.float64))
    if n == 0 or total == 0.0:
        return math.nan
    weighted = 0.0
    for start in range(0, n, chunk):
        part = a[start:start + chunk].double()
        ranks = torch.arange(start + 1, start + 1 + part.numel(), device=a.device, dtype=torch.float64)
        weighted += float(torch.dot(ranks, part))
    return (2.0 * weighted - (n + 1) * total) / (n * total)


def gram(x: torch.Tensor) -> torch.Tensor:
    """The centred Gram matrix of activations `x` (n x d), scaled to unit Frobenius norm, in
    float64: gram_cka of two of them is their linear CKA. An all-constant x gives NaNs."""
    x = x.double()
    x = x - x.mean(dim=0, keepdim=True)
    k = x @ x.T
    return k / torch.linalg.matrix_norm(k)


def gram_cka(k: torch.Tensor, l: torch.Tensor) -> float:
    """Linear CKA from two `gram` results (of the same n examples)."""
    if k.shape != l.shape:
        raise ValueError(f"CKA needs the same examples on both sides: Gram matrices {tuple(k.shape)} and {tuple(l.shape)}")
    return float((k * l).sum())


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of activations x (n x d1) and y (n x d2)."""
    return gram_cka(gram(x), gram(y))
