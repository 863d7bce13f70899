"""One forward pass of our GPTNeoX that also yields the residual stream and attention patterns.

Read from the outside with forward hooks on the modules named as in Hugging Face's GPTNeoX
(`gpt_neox.embed_in`, `gpt_neox.layers.{l}`, `...attention.query_key_value`,
`gpt_neox.final_layer_norm`), so the model and its forward's return value are never relied on:

- residual stream h_0 .. h_L: the embeddings, then the output of each block (before the final
  LayerNorm; transformers' `hidden_states` replace h_L by its normed value);
- attention pattern of layer l: recomputed from the fused QKV projection's output with the
  model's own rotary tables (`RotaryEmbedding.get`, `apply_rotary`): softmax(q k^T / sqrt(d_head))
  under the causal mask, in float32, as transformers' eager attention computes it;
- the final LayerNorm's output, after which the pass stops (a private exception raised by the
  hook): the (B, T, V) logits are never built unless asked for, since the lens and the loss by
  position unembed in row chunks themselves.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

from ..model import apply_rotary

__all__ = ["Internals", "attention_pattern", "run_internals"]


class _Stop(Exception):
    """Raised by the final LayerNorm's hook: everything needed has been captured."""


@dataclass
class Internals:
    """What one pass captured, for a batch of B sequences of T tokens."""

    resid: list[torch.Tensor] = field(default_factory=list)
    """L+1 tensors (B, T, d): the embeddings, then the residual stream after each block."""
    final: torch.Tensor | None = None
    """(B, T, d): the final LayerNorm of the last residual (what the unembedding reads)."""
    patterns: list[torch.Tensor] | None = None
    """L tensors (B, H, T, T) float32, rows sum to 1 (None unless asked for)."""


def attention_pattern(qkv: torch.Tensor, num_heads: int, rotary, rotary_dims: int) -> torch.Tensor:
    """(B, T, 3d) output of a fused per-head [q_h | k_h | v_h] projection -> (B, H, T, T) float32
    causal attention probabilities, with NeoX partial rotary on q and k."""
    B, T, three_d = qkv.shape
    dh = three_d // (3 * num_heads)
    x = qkv.view(B, T, num_heads, 3, dh).transpose(1, 2).float()  # (B, H, T, 3, dh)
    q, k = x[..., 0, :], x[..., 1, :]
    if rotary_dims > 0:
        cos, sin = rotary.get(0, T, torch.float32)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=qkv.device).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


@torch.no_grad()
def run_internals(model, input_ids: torch.Tensor, *, patterns: bool = False, autocast=None,
                  layers: bool = True) -> Internals:
    """Run `model` (our GPTNeoX) on input_ids (B, T) and capture the residual stream (when
    `layers`), the final LayerNorm output and (when `patterns`) every layer's attention pattern."""
    inner = getattr(model, "module", model)  # DDP / compiled wrappers: hook the module, call the wrapper
    trunk = inner.gpt_neox
    out = Internals(patterns=[] if patterns else None)
    hooks = []

    def keep(_module, _args, output):
        out.resid.append(output)

    def stop(_module, _args, output):
        out.final = output
        raise _Stop

    def pattern_hook(_module, _args, output):
        cfg = inner.config
        out.patterns.append(attention_pattern(output, cfg.num_heads, trunk.rotary_emb, cfg.rotary_dims))

    try:
        if layers:
            hooks.append(trunk.embed_in.register_forward_hook(keep))
            hooks += [layer.register_forward_hook(keep) for layer in trunk.layers]
        if patterns:
            hooks += [layer.attention.query_key_value.register_forward_hook(pattern_hook) for layer in trunk.layers]
        hooks.append(trunk.final_layer_norm.register_forward_hook(stop))
        amp = (torch.autocast(device_type=input_ids.device.type, dtype=autocast) if autocast is not None
               else contextlib.nullcontext())
        try:
            with amp:
                model(input_ids)
        except _Stop:
            pass
    finally:
        for h in hooks:
            h.remove()
    if out.final is None:
        raise RuntimeError("run_internals: the model never ran its final LayerNorm (not a GPTNeoX?)")
    return out
