"""Batched greedy generation with a preallocated (static) KV cache.

This is the engine of the memorization study (32-token prompt, 32 greedy tokens, Pythia paper
section 4): the prompt runs once, then each step feeds one token per row, writes its keys and
values in place and takes the argmax of the last position only. The cache is a plain object
owned by the caller, never module state, so a wrapped (DDP/FSDP) model is untouched.

The one-token steps skip the modules: `decode_step` runs a layer as a flat sequence of
addmm / layer_norm / SDPA calls on 2-D (B, d) activations, writes the keys/values straight
into the cache slot, does the rotary in place in the fresh qkv buffer, the head as one mm into
a reused (B, V) buffer and the argmax into a preallocated token buffer. For small models
(pythia-14m) module dispatch, reshapes and cats were ~1/5 of a step. It is the same arithmetic
as the module path op for op, so logits are bit-identical to `forward_cached` (tests check).
The head's right-hand side is a per-model cached (d, V) copy on CPU (`_head_rhs`, ~10% of a
pythia-14m call). Tried and dropped: per-call transposed trunk weights (building them cost
what they saved), a chunked head + argmax, matmul-softmax instead of SDPA (no faster at T=1).

Benchmarks (lm-eval `generate_until`) batch prompts of different lengths: `generate_greedy_ragged`
keeps them right-aligned in one cache with per-row rotary positions and a key mask, and stops
as soon as a caller's test says every row is done (stop strings).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .model import GPTNeoX, KVCache


# model -> (weight key, (d, V) contiguous copy of embed_out.weight, {batch: bit-exact?}); see _head_rhs
_HEAD_T: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _head_rhs(model: GPTNeoX, batch: int) -> torch.Tensor:
    """Right-hand side (d, V) of the head mm for one-token steps of `batch` rows.

    On CPU, MKL runs x @ W_T with a contiguous (d, V) copy ~1.5x faster than x @ W.t() for
    small batches (pythia-14m: 1.7 vs 2.5 ms per step), but the copy costs ~a call's worth of
    savings to make, so it is kept per model (weakly: freed with the model; rebuilt when the
    weight is replaced or modified in place, which bumps its version). It is used only where
    a probe gives bit-identical results to F.linear (MKL may block K differently, and B=1 takes
    a GEMV path); elsewhere, and off CPU, the transposed view.
    """
    w = model.embed_out.weight  # (V, d)
    if w.device.type != "cpu":
        return w.t()
    key = (w.data_ptr(), w._version, tuple(w.shape), w.dtype)
    entry = _HEAD_T.get(model)
    if entry is None or entry[0] != key:
        entry = (key, w.detach().t().contiguous(), {})
        _HEAD_T[model] = entry
    _, w_t, exact = entry
    if batch not in exact:
        x = torch.randn(batch, w.shape[1], generator=torch.Generator().manual_seed(0)).to(w.dtype)  # (B, d)
        exact[batch] = torch.equal(torch.mm(x, w_t), F.linear(x, w))
    return w_t if exact[batch] else w.t()


@dataclass
class DecodeWeights:
    """The model's tensors gathered for one-token steps (views, no copies), built per generate call.

    `layers[i]` = (ln_in w, b, ln_post w, b, qkv W^T, b, dense W^T, b, h_to_4h W^T, b, 4h_to_h W^T, b)
    where W^T are transposed views, so addmm(b, x, W^T) is exactly what F.linear(x, W, b) runs;
    cos / sin_signed are (S, r) rotary tables with rotate_half's sign folded into sin.
    """

    embed: torch.Tensor  # (V, d)
    layers: list[tuple[torch.Tensor, ...]]
    final_ln: tuple[torch.Tensor, torch.Tensor]
    head_t: torch.Tensor  # (d, V) view of embed_out.weight
    cos: torch.Tensor  # (S, r)
    sin_signed: torch.Tensor  # (S, r)

    @classmethod
    def build(cls, model: GPTNeoX, max_len: int, batch: int = 0) -> DecodeWeights:
        trunk = model.gpt_neox
        layers = []
        for layer in trunk.layers:
            a, m = layer.attention, layer.mlp
            layers.append((
                layer.input_layernorm.weight, layer.input_layernorm.bias,
                layer.post_attention_layernorm.weight, layer.post_attention_layernorm.bias,
                a.query_key_value.weight.t(), a.query_key_value.bias,
                a.dense.weight.t(), a.dense.bias,
                m.dense_h_to_4h.weight.t(), m.dense_h_to_4h.bias,
                m.dense_4h_to_h.weight.t(), m.dense_4h_to_h.bias,
            ))
        p = model.embed_out.weight
        cos, sin = trunk.rotary_emb.get(0, max_len, p.dtype)  # (S, r) each
        half = sin.shape[-1] // 2
        # rotate_half(x) * sin == swap_halves(x) * [-sin_lo, sin_hi]: negation is exact, same bits
        sin_signed = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)  # (S, r)
        fln = trunk.final_layer_norm
        head_t = _head_rhs(model, batch) if batch else p.t()
        return cls(trunk.embed_in.weight, layers, (fln.weight, fln.bias), head_t, cos, sin_signed)


def decode_step(
    model: GPTNeoX, w: DecodeWeights, tokens: torch.Tensor, cache: KVCache, pos: int, logits: torch.Tensor,
    positions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row into cache slot `pos`: tokens (B,) long -> logits written into `logits` (B, V).

    Same computation as `model.forward_cached(tokens[:, None], cache, pos)` (parallel residual,
    NeoX rotary on the first r dims, SDPA over the cache), with the keys/values written in place.
    A flat copy of `model.Layer`'s arithmetic, kept on purpose: generating through the model's
    own layers instead (forward_cached for every token) is 1.43x slower at pythia-14m's shape,
    batch 16, 32 + 32 tokens, one thread (`benchmarks/bench_generate.py`, "ours / module
    path"); tests check the two give bit-identical logits, so a change to `Layer` must come here.
    Rows of different lengths (`generate_greedy_ragged`) pass `positions` (B,) long, each row's
    rotary position, and `mask` (B, 1, 1, >pos) bool, the slots each row may attend to.
    Call under torch.inference_mode() / no_grad (it writes into `logits` and the cache).
    """
    cfg = model.config
    H, dh, r, eps = cfg.num_heads, cfg.head_dim, cfg.rotary_dims, cfg.layer_norm_eps
    approximate = "tanh" if cfg.gelu == "tanh" else "none"
    B = tokens.shape[0]
    d = cfg.hidden_size
    half = r // 2
    if positions is None:
        cos, sin_s = w.cos[pos], w.sin_signed[pos]  # (r,) each
    else:
        cos, sin_s = w.cos[positions][:, None, None], w.sin_signed[positions][:, None, None]  # (B, 1, 1, r)
    keep = None if mask is None else mask[..., : pos + 1]  # (B, 1, 1, pos+1)
    x = F.embedding(tokens, w.embed)  # (B, d)
    for (ln1_w, ln1_b, ln2_w, ln2_b, qkv_w, qkv_b, o_w, o_b, up_w, up_b, down_w, down_b), (k_cache, v_cache) in zip(
        w.layers, cache.layers
    ):
        h = F.layer_norm(x, (d,), ln1_w, ln1_b, eps)  # (B, d)
        qkv = torch.addmm(qkv_b, h, qkv_w).view(B, H, 3, dh)  # per-head [q | k | v]
        if r > 0:  # rotary on q and k together, in place in the fresh qkv buffer
            rot = qkv[:, :, :2, :r]  # (B, H, 2, r)
            swapped = torch.cat([rot[..., half:], rot[..., :half]], dim=-1).mul_(sin_s)  # rotate_half(rot) * sin
            rot.copy_(torch.mul(rot, cos).add_(swapped))
        k_cache[:, :, pos] = qkv[:, :, 1]  # (B, H, dh)
        v_cache[:, :, pos] = qkv[:, :, 2]
        y = F.scaled_dot_product_attention(
            qkv[:, :, :1], k_cache[:, :, : pos + 1], v_cache[:, :, : pos + 1], attn_mask=keep
        )  # (B, H, 1, dh): a single query sees every cached key (ragged rows: those of its mask)
        attn = torch.addmm(o_b, y.reshape(B, d), o_w)  # (B, d)
        h = F.layer_norm(x, (d,), ln2_w, ln2_b, eps)
        mlp = torch.addmm(down_b, F.gelu(torch.addmm(up_b, h, up_w), approximate=approximate), down_w)  # (B, d)
        x = mlp.add_(attn).add_(x)  # same summation order as the module path / transformers
    x = F.layer_norm(x, (d,), *w.final_ln, eps)
    return torch.mm(x, w.head_t, out=logits)  # (B, V)


_ARGMAX_BLOCK = 128  # padded vocabularies are multiples of 128


def argmax_rows(logits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Row-wise argmax of logits (B, V) into out (B,) long, first index on ties (like torch.argmax).

    CPU max-with-index is a scalar loop (~0.45 ms for 16 x 50304); this takes the vectorised
    amax of 128-wide blocks, picks the first block holding the row max, and indexes only inside
    it (~0.23 ms). Same result, NaN included (a NaN block max wins, then its first NaN).
    """
    B, V = logits.shape
    if V % _ARGMAX_BLOCK or V < 8 * _ARGMAX_BLOCK or not logits.is_contiguous():
        return out.copy_(logits.max(dim=-1).indices)
    blocks = logits.view(B, V // _ARGMAX_BLOCK, _ARGMAX_BLOCK)  # (B, nb, 128)
    j = blocks.amax(dim=-1).max(dim=-1).indices  # (B,) first block holding the row max
    inner = blocks[torch.arange(B, device=logits.device), j].max(dim=-1).indices  # (B,)
    return torch.add(inner, j, alpha=_ARGMAX_BLOCK, out=out)


def suppress_tokens(logits: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    """Set logits (B, V) of token `ids` to -inf in place, so greedy never picks them: what
    transformers' MinLengthLogitsProcessor does to the end-of-document token while a sequence
    is shorter than `min_length` (Pythia's memorization script: min_length = max_length = 64)."""
    if ids is not None and ids.numel():
        logits.index_fill_(1, ids, float("-inf"))
    return logits


def suppress_ids(ids, device) -> torch.Tensor | None:
    """Token ids to suppress (int, iterable or None) as a long tensor on `device` (None: none)."""
    if ids is None:
        return None
    ids = [ids] if isinstance(ids, int) else list(ids)
    return torch.tensor(ids, dtype=torch.long, device=device) if ids else None


@torch.inference_mode()
def generate_greedy(model: GPTNeoX, prompts: torch.Tensor, max_new_tokens: int, suppress=None) -> torch.Tensor:
    """Greedy continuation of every row: prompts (B, P) long -> (B, P + max_new_tokens).

    No padding or early stop: every row gets exactly max_new_tokens tokens (ties go to the
    lowest id, like transformers' argmax). `suppress`: token id(s) never generated (e.g. the
    end-of-document id, as transformers' `min_length` does).
    """
    if prompts.dim() != 2:
        raise ValueError(f"prompts must be (batch, prompt_len), got shape {tuple(prompts.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    B, P = prompts.shape
    if P == 0:
        raise ValueError("prompts must hold at least one token per row")
    device = model.embed_out.weight.device
    prompts = prompts.to(device=device, dtype=torch.long)
    banned = suppress_ids(suppress, device)
    out = torch.empty(B, P + max_new_tokens, dtype=torch.long, device=device)  # (B, P+n)
    out[:, :P] = prompts
    if max_new_tokens == 0:
        return out
    was_training = model.training
    model.eval()
    try:
        total = P + max_new_tokens
        cache = KVCache.allocate(model, B, total)
        logits = model.forward_cached(prompts, cache, start=0)  # (B, V)
        weights = DecodeWeights.build(model, total, batch=B) if max_new_tokens > 1 else None
        new = torch.empty(max_new_tokens, B, dtype=torch.long, device=device)  # row i = token i of every seq
        for i in range(max_new_tokens):
            argmax_rows(suppress_tokens(logits, banned), new[i])  # first-index tie rule, like transformers' argmax
            if i + 1 < max_new_tokens:  # the next logits overwrite this (B, V) buffer in place
                decode_step(model, weights, new[i], cache, P + i, logits)
        out[:, P:] = new.t()
    finally:
        model.train(was_training)
    return out


@torch.inference_mode()
def generate_greedy_ragged(
    model: GPTNeoX, prompts: Sequence[Sequence[int]], max_new_tokens: int,
    stop: Callable[[torch.Tensor], bool] | None = None,
) -> torch.Tensor:
    """Greedy continuations of prompts of different lengths in one batch -> new tokens (B, n).

    The prompts sit right-aligned in the KV cache (row i in slots [P-P_i, P), P the longest),
    so each step writes one slot for every row, as in `generate_greedy`; a row keeps its own
    rotary positions (P_i, P_i+1, ...) and a mask hides the empty slots on its left, so its
    tokens are those it would get alone (lm-eval's `hf` model instead left-pads and shifts
    positions). Prompts of one length are prefilled together. n = max_new_tokens, unless
    `stop(new)`, asked after every step with the tokens so far (B, i), says True earlier.
    """
    lengths = [len(p) for p in prompts]
    if not prompts or min(lengths) == 0:
        raise ValueError("prompts must be a non-empty list of non-empty token lists")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    B, P = len(prompts), max(lengths)
    device = model.embed_out.weight.device
    was_training = model.training
    model.eval()
    try:
        cache = KVCache.allocate(model, B, P + max_new_tokens)
        for k, v in cache.layers:  # the masked slots are still read: garbage there could be NaN, and 0 * NaN = NaN
            k.zero_()
            v.zero_()
        mask = torch.zeros(B, 1, 1, P + max_new_tokens, dtype=torch.bool, device=device)  # slots a row attends
        logits = torch.empty(B, model.config.vocab_size, dtype=model.embed_out.weight.dtype, device=device)  # (B, V)
        for n in sorted(set(lengths)):
            rows = [i for i, m in enumerate(lengths) if m == n]
            idx = torch.tensor(rows, device=device)
            part = KVCache.allocate(model, len(rows), n)
            logits[idx] = model.forward_cached(torch.tensor([list(prompts[i]) for i in rows], device=device), part, 0)
            for (k, v), (pk, pv) in zip(cache.layers, part.layers):
                k[idx, :, P - n:P], v[idx, :, P - n:P] = pk, pv
            mask[idx, :, :, P - n:P] = True
        positions = torch.tensor(lengths, device=device)  # (B,) rotary position of each row's next token
        weights = DecodeWeights.build(model, P + max_new_tokens, batch=B) if max_new_tokens > 1 else None
        new = torch.empty(max_new_tokens, B, dtype=torch.long, device=device)  # row i = token i of every seq
        for i in range(max_new_tokens):
            argmax_rows(logits, new[i])
            if i + 1 == max_new_tokens or (stop is not None and stop(new[: i + 1].t())):
                break
            mask[..., P + i] = True
            decode_step(model, weights, new[i], cache, P + i, logits, positions=positions + i, mask=mask)
    finally:
        model.train(was_training)
    return new[: i + 1].t().clone()


__all__ = ["DecodeWeights", "argmax_rows", "decode_step", "generate_greedy", "generate_greedy_ragged",
           "suppress_ids", "suppress_tokens"]
