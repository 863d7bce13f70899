"""`weights`: the 14 checkpoint statistics of Hu et al. (2023) that PolyPythias' training maps use.

Hu, Gorinski, Lenz, Van Durme, "Latent State Models of Training Dynamics" (TMLR 2023, arXiv
2308.09543, Table 3), as computed by PolyPythias (van der Wal et al., ICLR 2025) in
EleutherAI/pythia `polypythias/training-maps/extract_metrics.py`:

- per weight matrix X (a parameter named `*.weight`, viewed as `(shape[0], -1)`): L1 = sum |x|,
  L2 = sqrt(sum x^2), L1/L2, trace = sum of the main diagonal (of the leading square block),
  lambda_max = largest singular value, trace/lambda, mu_lambda = mean singular value and
  sigma_lambda = *variance* (unbiased) of the singular values, values below 1e-5 set to 0
  first; each is then averaged over the matrices (so L1/L2 is a mean of ratios);
- over every selected weight concatenated: mu_w (mean), median_w, sigma_w (unbiased variance);
  the same over every selected bias: mu_b, median_b, sigma_b. The median is torch's (the lower
  of the two middle values for an even count), as in the script.

Parameter selection: every weight matrix and bias except the input embedding (`embed_in`), the
output embedding (`embed_out`) and the LayerNorms (any name containing "norm"). The script skips
names *starting with* "embed" and names containing "norm": on the base `GPTNeoXModel` that is the
same set, but on `GPTNeoXForCausalLM` its filter keeps `gpt_neox.embed_in.weight`; we exclude
both embeddings whatever the class (a dotted component starting with "embed").

Numerics: sums, norms, means and variances accumulate in float64 (without float64 copies of the
weights); singular values come from `torch.linalg.svdvals` in float32 (float64 when the model
is), one batched call per group of same-shaped matrices (tall orientation), on the device the
model sits on (`ctx.device`). The spectral norm is the largest of those singular values (the
script ran a second SVD for it).
"""
from __future__ import annotations

from collections import defaultdict

from .base import Analysis, Row, register

FEATURES = ("L1", "L2", "L1/L2", "mu_w", "median_w", "sigma_w", "mu_b", "median_b", "sigma_b", "trace",
            "lambda_max", "trace/lambda", "mu_lambda", "sigma_lambda")
"""The 14 features, in extract_metrics.py's column order (also the result metrics' names)."""
SMALL_SINGULAR = 1e-5
"""Singular values below this count as 0 for mu_lambda and sigma_lambda (as in the script)."""


def excluded(name: str) -> bool:
    """Embeddings (a dotted component starting with "embed") and LayerNorms ("norm" in the name)."""
    return "norm" in name.lower() or any(part.startswith("embed") for part in name.split("."))


def selected_parameters(model) -> tuple[list[tuple[str, object]], list[tuple[str, object]]]:
    """([(name, weight as (shape[0], -1))], [(name, bias)]) of the parameters the features use."""
    weights, biases = [], []
    for name, p in model.named_parameters():
        if excluded(name):
            continue
        if name.endswith(".weight"):
            weights.append((name, p.detach().reshape(p.shape[0], -1)))
        elif name.endswith(".bias"):
            biases.append((name, p.detach().reshape(-1)))
    if not weights or not biases:
        raise ValueError(f"weights: the model has {len(weights)} selected weight matrices and {len(biases)} "
                         "biases; the features need both (is this a GPT-NeoX model?)")
    return weights, biases


def _check_finite(named) -> None:
    import torch

    for name, t in named:
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"weights: parameter {name} holds NaN or infinite values")


def singular_values(matrices: list, dtype=None) -> list:
    """Singular values of each matrix (same order), one `svdvals` call per shape group.

    Matrices are stacked per shape in tall orientation (rows >= columns, which LAPACK's gesdd and
    cuSOLVER handle fastest) and cast to float32 unless already float32/float64."""
    import torch

    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, m in enumerate(matrices):
        groups[tuple(m.shape)].append(i)
    out: list = [None] * len(matrices)
    for (rows, cols), idx in groups.items():
        batch = torch.stack([matrices[i] for i in idx])
        if dtype is None and batch.dtype not in (torch.float32, torch.float64):
            batch = batch.float()
        elif dtype is not None:
            batch = batch.to(dtype)
        if rows < cols:
            batch = batch.mT
        sv = torch.linalg.svdvals(batch.contiguous())  # (k, min(rows, cols)), descending
        for j, i in enumerate(idx):
            out[i] = sv[j]
    return out


def _wide(t):
    """float32 or float64 as is; half precisions widened to float32 (for differences)."""
    import torch

    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _pooled(tensors: list) -> tuple[float, float, float]:
    """(mean, unbiased variance, torch median) of the tensors concatenated; sums in float64
    (accumulated without float64 copies of the weights)."""
    import torch

    n = sum(t.numel() for t in tensors)
    mean = sum(float(t.sum(dtype=torch.float64)) for t in tensors) / n
    ss = sum(float(torch.linalg.vector_norm(_wide(t) - mean, dtype=torch.float64)) ** 2 for t in tensors)
    median = float(torch.cat([t.reshape(-1) for t in tensors]).median())
    return mean, ss / (n - 1), median


def matrix_features(weights: list, svals: list) -> dict[str, float]:
    """The eight per-matrix features, averaged over matrices (see module doc)."""
    import torch

    acc: dict[str, list[float]] = defaultdict(list)
    for (name, w), sv in zip(weights, svals):
        l1 = float(w.abs().sum(dtype=torch.float64))
        l2 = float(torch.linalg.vector_norm(w, dtype=torch.float64))
        trace = float(torch.diagonal(w).sum(dtype=torch.float64))
        sv = sv.double()
        lam = float(sv[0])
        if l2 == 0.0 or lam == 0.0:
            raise ValueError(f"weights: parameter {name} is all zeros (L1/L2 and trace/lambda undefined)")
        kept = torch.where(sv < SMALL_SINGULAR, torch.zeros_like(sv), sv)
        for key, value in (("L1", l1), ("L2", l2), ("L1/L2", l1 / l2), ("trace", trace), ("lambda_max", lam),
                           ("trace/lambda", trace / lam), ("mu_lambda", float(kept.mean())),
                           ("sigma_lambda", float(kept.var()) if kept.numel() > 1 else 0.0)):
            acc[key].append(value)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def weight_features(model, sv_dtype=None) -> dict[str, float]:
    """The 14 features of `model` (any nn.Module with GPT-NeoX parameter names), by name."""
    import torch

    with torch.no_grad():
        weights, biases = selected_parameters(model)
        _check_finite(weights + biases)
        svals = singular_values([w for _, w in weights], sv_dtype)
        feats = matrix_features(weights, svals)
        for key, tensors in (("w", [w for _, w in weights]), ("b", [b for _, b in biases])):
            feats[f"mu_{key}"], feats[f"sigma_{key}"], feats[f"median_{key}"] = _pooled(tensors)
    return {k: feats[k] for k in FEATURES}


@register
class Weights(Analysis):
    name = "weights"
    summary = "Hu et al.'s 14 weight statistics (norms, spectra, moments) that PolyPythias' training maps use"
    scope = "checkpoint"
    version = 1

    def compute(self, ctx) -> list[Row]:
        return [Row(k, v) for k, v in weight_features(ctx.model).items()]
