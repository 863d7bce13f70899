"""Attention-head scores on repeated random tokens (Olsson et al. 2022, "In-context Learning and
Induction Heads"; Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits").

The probe: n sequences of r random tokens, each repeated R times (no BOS), ids drawn uniformly
with a fixed seed from the ordinary vocabulary (special tokens left out). From the attention
pattern A (query x key, rows sum to 1) of head (l, h), averaged over the sequences:

- previous-token: mean over query positions q >= 1 of A[q, q-1];
- induction (prefix matching): mean over the query positions q of repeats 2..R of
  sum_{j < q, x_j = x_q} A[q, j+1], the attention to the token *after* an earlier copy;
- duplicate-token: the same sum over A[q, j] (the earlier copy itself);
- copying: the OV circuit W_U W_O^h W_V^h W_E with LayerNorms as the identity and biases left
  out; score = sum Re(lambda) / sum |lambda| over its eigenvalues, in [-1, 1], computed from the
  d_head x d_head matrix W_V^h W_E W_U W_O^h, which has the same non-zero eigenvalues.

TransformerLens' `detect_head` averages over every query row (rows without an earlier copy
dilute the score); here only the rows of repeats 2..R count.
"""
from __future__ import annotations

import numpy as np
import torch

from .internals import run_internals

SCORES = ("prev_token", "duplicate", "induction", "copying")
"""Metric names of the per-head scores, in the order the rows list them."""

__all__ = ["SCORES", "copying_scores", "head_scores", "ordinary_token_ids", "pattern_scores", "repeated_tokens"]


def ordinary_token_ids(tokenizer_path, vocab_size: int) -> np.ndarray:
    """Token ids < vocab_size that are not special tokens of the tokenizer (all of them when
    there is no tokenizer file)."""
    ids = np.arange(vocab_size, dtype=np.int64)
    if tokenizer_path is None:
        return ids
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    special = [i for i, t in tok.get_added_tokens_decoder().items() if t.special]
    size = min(vocab_size, tok.get_vocab_size(with_added_tokens=True))
    keep = np.ones(size, dtype=bool)
    keep[[i for i in special if i < size]] = False
    return ids[:size][keep]


def repeated_tokens(n: int, length: int, repeats: int, vocabulary: np.ndarray, seed: int) -> np.ndarray:
    """(n, length * repeats) int64: n random segments of `length` ids from `vocabulary`
    (uniform, numpy's PCG64 seeded with `seed`), each repeated `repeats` times."""
    rng = np.random.default_rng(seed)
    segments = np.asarray(vocabulary, dtype=np.int64)[rng.integers(0, len(vocabulary), size=(n, length))]
    return np.tile(segments, (1, repeats))


def pattern_scores(pattern: torch.Tensor, tokens: torch.Tensor, length: int) -> dict[str, torch.Tensor]:
    """prev_token, duplicate and induction scores (H,) float64, summed (not averaged) over the
    batch, from attention probabilities (B, H, T, T) of sequences `tokens` (B, T) whose repeats
    are `length` long; divide by the number of sequences for the mean."""
    B, H, T, _ = pattern.shape
    p = pattern.double()
    prev = p.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=-1).sum(dim=0)  # (H,)
    earlier = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril(diagonal=-1)  # j < q
    same = (tokens[:, :, None] == tokens[:, None, :]) & earlier  # (B, q, j): x_j = x_q, j < q
    after = torch.zeros_like(same)
    after[:, :, 1:] = same[:, :, :-1]  # (B, q, j+1): the token after an earlier copy
    rows = slice(length, T)  # query positions of repeats 2..R
    dup = (p * same[:, None].to(p.dtype)).sum(dim=-1)[:, :, rows].mean(dim=-1).sum(dim=0)
    ind = (p * after[:, None].to(p.dtype)).sum(dim=-1)[:, :, rows].mean(dim=-1).sum(dim=0)
    return {"prev_token": prev, "duplicate": dup, "induction": ind}


@torch.no_grad()
def copying_scores(model) -> torch.Tensor:
    """(L, H) float64 copying scores of every head (see the module doc)."""
    inner = getattr(model, "module", model)
    cfg, trunk = inner.config, inner.gpt_neox
    H, dh, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    emb, unemb = trunk.embed_in.weight, inner.embed_out.weight  # (V, d) each: W_E^T and W_U
    eu = torch.zeros(d, d, dtype=torch.float64, device=emb.device)  # W_E W_U (d x V @ V x d), float64,
    for s in range(0, emb.shape[0], 8192):  # summed over vocabulary chunks (no float64 copy of either)
        eu += emb[s:s + 8192].double().t() @ unemb[s:s + 8192].double()
    out = torch.empty(len(trunk.layers), H, dtype=torch.float64)
    for l, layer in enumerate(trunk.layers):
        w_v = layer.attention.query_key_value.weight.double().view(H, 3, dh, d)[:, 2]  # (H, dh, d)
        w_o = layer.attention.dense.weight.double().view(d, H, dh).permute(1, 0, 2)  # (H, d, dh)
        m = w_v @ eu @ w_o  # (H, dh, dh)
        lam = torch.linalg.eigvals(m)  # (H, dh) complex
        out[l] = lam.real.sum(dim=-1) / lam.abs().sum(dim=-1).clamp_min(torch.finfo(torch.float64).tiny)
    return out.cpu()


@torch.no_grad()
def head_scores(model, tokens, length: int, *, batch: int = 16, device=None, autocast=None) -> dict[str, np.ndarray]:
    """{score: (L, H) float64 array} of every head on the probe `tokens` (n, length * R)."""
    inner = getattr(model, "module", model)
    device = device or next(inner.parameters()).device
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    L = len(inner.gpt_neox.layers)
    sums = {k: torch.zeros(L, inner.config.num_heads, dtype=torch.float64) for k in ("prev_token", "duplicate", "induction")}
    for start in range(0, len(tokens), batch):
        x = tokens[start:start + batch].to(device)
        got = run_internals(model, x, patterns=True, autocast=autocast, layers=False)
        for l, pat in enumerate(got.patterns):
            for k, v in pattern_scores(pat, x, length).items():
                sums[k][l] += v.cpu()
    out = {k: (v / len(tokens)).numpy() for k, v in sums.items()}
    out["copying"] = copying_scores(model).numpy()
    return {k: out[k] for k in SCORES}
