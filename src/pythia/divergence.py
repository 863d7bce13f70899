"""Symmetric KL between the next-token distributions of several models on the same tokens,
from each model's final hidden states and output embedding, in row chunks.

For models a, b at one position: KL_sym = 1/2 [KL(p_a || p_b) + KL(p_b || p_a)]
= 1/2 sum_v (p_a(v) - p_b(v)) (ln p_a(v) - ln p_b(v)) (Fehlauer, Mahowald and Pimentel 2025 compare
seeds this way). The full logits of a probe never exist at once: at 64k tokens x 50,304 ids they
are 13 GB per model in float32. Each chunk of rows gets every model's log-softmax (float32) once
and serves every pair; the memory is the hidden states (rows x d per model), the output
embeddings (V x d per model) and `budget` bytes of chunk buffers.
"""
from __future__ import annotations

import torch


def chunk_rows(num_models: int, vocab_size: int, budget: int) -> int:
    """Rows per chunk so that the models' log-probabilities and a pair's temporaries (3 more
    rows x V) fit `budget` bytes (float32); at least 1."""
    return max(1, int(budget) // ((num_models + 3) * vocab_size * 4))


@torch.no_grad()
def pairwise_symmetric_kl(hidden: list[torch.Tensor], weight: list[torch.Tensor],
                          budget: int = 512 * 2**20) -> dict[tuple[int, int], float]:
    """hidden[i] (N, d_i) and weight[i] (V, d_i) of model i -> {(i, j): mean over the N rows of
    KL_sym(p_i, p_j)} for every pair i < j. Logits are computed in float32."""
    n = len(hidden)
    if n != len(weight) or n < 2:
        raise ValueError("need the hidden states and output embeddings of at least two models")
    rows = hidden[0].shape[0]
    if any(h.shape[0] != rows for h in hidden):
        raise ValueError("every model must be read on the same tokens")
    vocab = weight[0].shape[0]
    if any(w.shape[0] != vocab for w in weight):
        raise ValueError("models with different vocabularies cannot be compared token by token")
    step = chunk_rows(n, vocab, budget)
    weight = [w.float() for w in weight]  # a no-op for float32 weights; fp16 ones once, not per chunk
    sums = {(i, j): 0.0 for i in range(n) for j in range(i + 1, n)}
    for a in range(0, rows, step):
        logp = [torch.log_softmax(h[a:a + step].float() @ w.t(), dim=-1) for h, w in zip(hidden, weight)]
        for i, j in sums:
            diff = logp[i].exp() - logp[j].exp()  # (c, V)
            diff.mul_(logp[i] - logp[j])
            sums[i, j] += 0.5 * float(diff.sum(dtype=torch.float64))
        del logp
    return {k: v / rows for k, v in sums.items()}


__all__ = ["chunk_rows", "pairwise_symmetric_kl"]
