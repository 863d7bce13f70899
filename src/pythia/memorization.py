"""The memorization score of training sequences, computed two ways that give one answer.

Biderman et al. 2023, "Emergent and Predictable Memorization in Large Language Models"
(arXiv 2304.11158), as run by EleutherAI/pythia `predictable-memorization/eval_memorization.py`:
a sequence is the first P + C tokens of a training sample (P = C = 32); the model greedily
continues the prompt `tokens[:P]` for C tokens with `generate(max_length=64, min_length=64)`
(the min_length keeps the end-of-document id from ever being generated); the score is the
number of the C positions where the generated token equals the true one (accuracy = count / C),
and the sequence is memorized when all C match.

- `generate`: that procedure, with our batched static-KV-cache decoder (`pythia.generate`).
- `exact`: greedy decoding reproduces the target exactly as long as every teacher-forced argmax
  equals the next target token, so ONE forward pass over prompt + target gives every row's
  longest matched prefix m (memorized <=> m == C) without decoding. It runs in two stages (the
  prompt decides the first token; only rows that match it run the target tokens) and the head
  runs column by column on the rows still matching, so a row that fails at once costs one
  prompt pass and one head, which is most rows of a random or young model.
  The position-wise score then needs generation only for rows with m < C, and only from
  position m on: the forward already filled the KV cache for the prefix and computed the
  mismatching token, and the rows decode in lock step from the batch's smallest m (a row whose
  own m lies ahead is fed its target tokens until then).

Both return per-row counts: matched positions (score "full", Pythia's) or the matched prefix
length (score "prefix": the same memorized set; for `exact` no decoding at all). They agree
exactly in exact arithmetic; in floating point the two paths differ by rounding, which can
flip an argmax only at a near tie (tests: identical on thousands of rows in float64 and on
trained checkpoints in float32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .generate import DecodeWeights, argmax_rows, decode_step, generate_greedy, suppress_ids, suppress_tokens
from .model import GPTNeoX, KVCache

__all__ = ["METHODS", "SCORES", "matched_prefix", "score_sequences", "trunk_hidden"]

METHODS = ("exact", "generate")
SCORES = ("full", "prefix")


@torch.inference_mode()
def score_sequences(model: GPTNeoX, tokens: torch.Tensor, prompt_len: int = 32, cont_len: int = 32,
                    method: str = "exact", score: str = "full", suppress=0) -> torch.Tensor:
    """tokens (B, >= P+C) long -> (B,) long: matched continuation tokens per row (see module doc).

    suppress: token id(s) greedy may never produce (default 0, the end-of-document id, as
    Pythia's min_length did); None lets every token through.
    """
    if method not in METHODS or score not in SCORES:
        raise ValueError(f"method must be one of {METHODS} and score one of {SCORES}, got {method!r}, {score!r}")
    P, C = prompt_len, cont_len
    if tokens.dim() != 2 or tokens.shape[1] < P + C or P < 1 or C < 1:
        raise ValueError(f"tokens must be (batch, >= {P}+{C}) with prompt and continuation >= 1, "
                         f"got shape {tuple(tokens.shape)}")
    device = model.embed_out.weight.device
    tokens = tokens[:, :P + C].to(device=device, dtype=torch.long)
    banned = suppress_ids(suppress, device)
    was_training = model.training
    model.eval()
    try:
        if method == "generate":
            out = generate_greedy(model, tokens[:, :P], C, suppress=banned)
            return _count(out[:, P:] == tokens[:, P:], score)
        return _score_exact(model, tokens, P, C, score, banned)
    finally:
        model.train(was_training)


def _count(equal: torch.Tensor, score: str) -> torch.Tensor:
    """(B, C) bool -> (B,): matches (full) or length of the leading run of matches (prefix)."""
    if score == "full":
        return equal.sum(1)
    return equal.long().cumprod(1).sum(1)


def trunk_hidden(model: GPTNeoX, ids: torch.Tensor, cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
    """Final-LayerNorm hidden states (B, T, d) of ids (B, T) at positions [start, start+T), the
    model's forward without the head; with a cache, attends over and fills it as
    `forward_cached` does (start > 0 needs the cache to hold positions [0, start))."""
    trunk = model.gpt_neox
    x = trunk.embed_in(ids)  # (B, T, d)
    rope = trunk.rotary_emb.get(start, ids.shape[1], x.dtype)
    for i, layer in enumerate(trunk.layers):
        x = layer(x, rope, cache.layers[i] if cache is not None else None, start)
    return trunk.final_layer_norm(x)


def matched_prefix(model: GPTNeoX, hidden: torch.Tensor, target: torch.Tensor,
                   banned: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (B, C, d): states at the positions that predict target (B, C) -> (m, g), both (B,):
    m = length of the prefix where every argmax equals the target (C: memorized), g = the
    argmax at position m (the first generated token that differs; 0 where m == C).

    Column j's logits are computed only for the rows that matched columns < j."""
    B, C = target.shape
    weight = model.embed_out.weight  # (V, d)
    m = torch.full((B,), C, dtype=torch.long, device=target.device)
    g = torch.zeros(B, dtype=torch.long, device=target.device)
    alive = torch.arange(B, device=target.device)
    for j in range(C):
        pred = suppress_tokens(F.linear(hidden[alive, j], weight), banned).argmax(-1)  # (n,)
        ok = pred == target[alive, j]
        miss = alive[~ok]
        m[miss] = j
        g[miss] = pred[~ok]
        alive = alive[ok]
        if alive.numel() == 0:
            break
    return m, g


def _rows(cache: KVCache, rows: torch.Tensor) -> KVCache:
    """The cache of some rows (a copy; the cache itself when the rows are all of them)."""
    if rows.numel() == cache.layers[0][0].shape[0]:
        return cache
    return KVCache([(k[rows], v[rows]) for k, v in cache.layers], cache.max_len)


def _score_exact(model: GPTNeoX, tokens: torch.Tensor, P: int, C: int, score: str,
                 banned: torch.Tensor | None) -> torch.Tensor:
    """Two stages: the prompt alone decides column 0 (most rows of a random or young model stop
    there, at the cost of one prefill); only the rows that match it run the other C-1 target
    tokens, teacher-forced, on top of the prompt's cache."""
    target = tokens[:, P:]  # (B, C)
    cache = KVCache.allocate(model, tokens.shape[0], P + C)
    last = trunk_hidden(model, tokens[:, :P], cache)[:, -1:]  # (B, 1, d): predicts column 0
    m, g = matched_prefix(model, last, target[:, :1], banned)  # m in {0, 1}
    alive = (m == 1).nonzero().squeeze(1)
    if alive.numel() and C > 1:
        sub = _rows(cache, alive)
        hidden = trunk_hidden(model, target[alive, :C - 1], sub, start=P)  # (n, C-1, d): columns 1..C-1
        m1, g1 = matched_prefix(model, hidden, target[alive, 1:], banned)
        m[alive], g[alive] = m1 + 1, g1
        if score == "full" and sub is not cache:  # the survivors' keys/values, for decoding past their m
            for (k, v), (ks, vs) in zip(cache.layers, sub.layers):
                k[alive], v[alive] = ks, vs
    if score == "prefix":
        return m
    need = m < C  # rows whose score needs decoding past their first mismatch
    n = int(need.sum())
    if n * 2 >= len(m):  # most rows: decode them all (a memorized row just stays teacher-forced)
        return _decode_from_mismatch(model, cache, m, g, target, P, banned)
    counts = m.clone()
    if n:
        rows = need.nonzero().squeeze(1)
        counts[rows] = _decode_from_mismatch(model, _rows(cache, rows), m[rows], g[rows], target[rows], P, banned)
    return counts


def _decode_from_mismatch(model: GPTNeoX, cache: KVCache, m: torch.Tensor, g: torch.Tensor,
                          target: torch.Tensor, P: int, banned: torch.Tensor | None) -> torch.Tensor:
    """Greedy continuation of rows whose prefix matched for m (n,) tokens and then produced g:
    returns the matched positions of each row (n,). `cache` holds the teacher-forced keys and
    values of prompt + target; decoding starts at position P + min(m). A row with m == C is
    teacher-forced throughout and scores C."""
    n, C = target.shape
    seq = target.clone()  # (n, C) continuation: target up to m, then g, then generated
    miss = m < C
    seq[miss.nonzero().squeeze(1), m[miss]] = g[miss]
    start = int(m.min())  # < C: some row mismatches
    if start < C - 1:
        weights = DecodeWeights.build(model, P + C, batch=n)
        logits = torch.empty(n, model.embed_out.weight.shape[0], dtype=model.embed_out.weight.dtype, device=seq.device)
        pred = torch.empty(n, dtype=torch.long, device=seq.device)
        for j in range(start, C - 1):
            decode_step(model, weights, seq[:, j].contiguous(), cache, P + j, logits)  # predicts position j+1
            argmax_rows(suppress_tokens(logits, banned), pred)
            seq[:, j + 1] = torch.where(m <= j, pred, seq[:, j + 1])  # rows still before m keep the target
    return (seq == target).sum(1)
