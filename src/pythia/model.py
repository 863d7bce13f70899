"""The GPT-NeoX network of Pythia, top-down: rotary, attention, MLP, parallel-residual layer, model.

Parameter names are exactly Hugging Face's (`gpt_neox.layers.{i}.attention.query_key_value.weight`,
..., `embed_out.weight`) so conversion is the identity (spec section 2.1). The module is
single-device code: DDP / FSDP2 / compile are applied from outside, forward never writes to
parameters, and generation keeps its KV cache (`KVCache`) outside the module state (see
generate.py). Loading and saving are functions: pythia.load_model, pythia.save_pretrained.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


@dataclass
class KVCache:
    """Per-layer (keys, values), each (B, H, max_len, head_dim), filled left to right: the model's
    own cache for incremental decoding (`GPTNeoX.forward_cached`), owned by the caller."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    max_len: int

    @classmethod
    def allocate(cls, model: GPTNeoX, batch: int, max_len: int) -> KVCache:
        cfg = model.config
        p = model.embed_out.weight
        shape = (batch, cfg.num_heads, max_len, cfg.head_dim)
        layers = [
            (torch.empty(shape, dtype=p.dtype, device=p.device), torch.empty(shape, dtype=p.dtype, device=p.device))
            for _ in range(cfg.num_layers)
        ]
        return cls(layers=layers, max_len=max_len)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for partial rotary, precomputed once for max_seq_len positions.

    Kept in float32 whatever the model dtype (like transformers, which builds them in fp32 and
    casts at use) and rebuilt after every `.to()` / `to_empty()` so meta-device init (FSDP2)
    and dtype round trips never leave stale or garbage tables. Non-persistent: no state-dict key.
    """

    def __init__(self, config: ModelConfig, device=None):
        super().__init__()
        self.dims = config.rotary_dims
        self.base = config.rotary_base
        self.max_seq_len = config.max_seq_len
        self.register_buffer("cos", torch.empty(0, device=device), persistent=False)
        self.register_buffer("sin", torch.empty(0, device=device), persistent=False)
        self._build(self.cos.device, self.max_seq_len)

    def _build(self, device: torch.device, length: int) -> None:
        # Never inference tensors, even when first extended inside generate's inference_mode:
        # a later training step must be able to save them for backward.
        with torch.inference_mode(False):
            r = self.dims
            inv_freq = 1.0 / (self.base ** (torch.arange(0, r, 2, dtype=torch.float32, device=device) / r))  # (r/2,)
            pos = torch.arange(length, dtype=torch.float32, device=device)  # (S,)
            ang = pos[:, None] * inv_freq[None, :]  # (S, r/2)
            emb = torch.cat([ang, ang], dim=-1)  # (S, r)
            self.cos, self.sin = emb.cos(), emb.sin()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._build(self.cos.device, max(self.max_seq_len, self.cos.shape[0]))
        return self

    def get(self, start: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for positions [start, start+length), each (length, r) in `dtype`."""
        end = start + length
        if end > self.cos.shape[0]:  # longer than max_seq_len: extend (same formula, no cap)
            self._build(self.cos.device, max(end, 2 * self.cos.shape[0]))
        return self.cos[start:end].to(dtype), self.sin[start:end].to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NeoX rotate-half rotary on the first r dims of the last axis; the rest pass through.

    x: (..., T, dh) with any leading dims; cos/sin broadcastable to (..., T, r). Only r-wide
    elementwise work (r = dh/4 for Pythia), which keeps the backward cheap.
    """
    r = cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    x1, x2 = x_rot[..., : r // 2], x_rot[..., r // 2 :]
    rotated = torch.cat([-x2, x1], dim=-1)  # rotate_half(x_rot)
    return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


class Attention(nn.Module):
    """Causal self-attention with per-head interleaved fused QKV and partial rotary."""

    def __init__(self, config: ModelConfig, **factory):
        super().__init__()
        d = config.hidden_size
        self.num_heads, self.head_dim, self.rotary_dims = config.num_heads, config.head_dim, config.rotary_dims
        self.query_key_value = nn.Linear(d, 3 * d, **factory)
        self.dense = nn.Linear(d, d, **factory)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        B, T, d = x.shape
        H, dh, r = self.num_heads, self.head_dim, self.rotary_dims
        # Per-head layout [q_h | k_h | v_h] (NeoX stores [H, 3, dh]); no blocked Q;K;V split.
        qkv = self.query_key_value(x).view(B, T, H, 3, dh).transpose(1, 2)  # (B, H, T, 3, dh)
        if r > 0:
            cos, sin = rope  # (T, r) each
            # rotate q and k together: one set of kernels instead of two
            qk = apply_rotary(qkv[..., :2, :], cos[:, None, :], sin[:, None, :])  # (B, H, T, 2, dh)
            q, k = qk[..., 0, :], qk[..., 1, :]  # (B, H, T, dh) each
        else:
            q, k = qkv[..., 0, :], qkv[..., 1, :]
        v = qkv[..., 2, :]  # (B, H, T, dh)
        if kv is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, dh)
        else:
            # Generation: write the new keys/values in place into the preallocated cache, attend
            # over positions [0, start+T). A single query sees every cached key: no mask needed.
            k_cache, v_cache = kv  # (B, H, S_max, dh) each
            end = start + T
            k_cache[:, :, start:end] = k
            v_cache[:, :, start:end] = v
            k, v = k_cache[:, :, :end], v_cache[:, :, :end]
            if T == 1 or start == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
            else:  # chunk appended after a prefix: causal within the chunk, full over the prefix
                mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=start)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, d)  # (B, T, d)
        return self.dense(y)


class MLP(nn.Module):
    """d -> 4d -> d with GELU (tanh approximation as trained, or exact erf as the HF configs say)."""

    def __init__(self, config: ModelConfig, **factory):
        super().__init__()
        d = config.hidden_size
        self.approximate = "tanh" if config.gelu == "tanh" else "none"
        self.dense_h_to_4h = nn.Linear(d, 4 * d, **factory)
        self.dense_4h_to_h = nn.Linear(4 * d, d, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x), approximate=self.approximate))


class Layer(nn.Module):
    """Parallel residual (GPT-J style): x + attn(LN_in(x)) + mlp(LN_post(x)), two independent LNs."""

    def __init__(self, config: ModelConfig, **factory):
        super().__init__()
        d, eps = config.hidden_size, config.layer_norm_eps
        self.input_layernorm = nn.LayerNorm(d, eps=eps, **factory)
        self.post_attention_layernorm = nn.LayerNorm(d, eps=eps, **factory)
        self.attention = Attention(config, **factory)
        self.mlp = MLP(config, **factory)

    def forward(self, x, rope, kv=None, start=0):
        attn = self.attention(self.input_layernorm(x), rope, kv, start)  # (B, T, d)
        mlp = self.mlp(self.post_attention_layernorm(x))  # (B, T, d)
        return mlp + attn + x  # same summation order as transformers


class GPTNeoXModel(nn.Module):
    """Embedding, layers and final LayerNorm: HF's `gpt_neox` submodule."""

    def __init__(self, config: ModelConfig, **factory):
        super().__init__()
        self.embed_in = nn.Embedding(config.vocab_size, config.hidden_size, **factory)
        self.layers = nn.ModuleList(Layer(config, **factory) for _ in range(config.num_layers))
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, **factory)
        self.rotary_emb = RotaryEmbedding(config, device=factory.get("device"))


class _LinearCrossEntropy(torch.autograd.Function):
    """Cross-entropy of (h @ W^T), mean or sum over rows, without materialising the (N, V) logits.

    Works over row chunks; each chunk's softmax gradient is formed in place in its logits
    buffer and immediately contracted into dL/dh and dL/dW, so the forward already computes
    the gradients (kept for backward, which only scales them). This removes the full-size
    logits, log-softmax and grad-logits tensors (3 x N x V) of the usual head + F.cross_entropy:
    less memory traffic on CPU, gigabytes less activation memory on GPU.
    """

    @staticmethod
    def forward(ctx, h, weight, labels, ignore_index: int, chunk: int, need_grad: bool, mean: bool, rows=None):
        # h (N, d), weight (V, d), labels (N,) -> scalar mean (or sum) loss over non-ignored rows (fp32);
        # rows: an optional (N,) fp32 tensor that receives each row's loss (0 on ignored rows)
        N = h.shape[0]
        valid = labels != ignore_index  # (N,)
        count = valid.sum().clamp(min=1).to(torch.float32) if mean else torch.ones((), device=h.device)
        safe = torch.where(valid, labels, 0)[:, None]  # (N, 1)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if need_grad else None
        grad_w = None  # (V, d) fp32, created by the first chunk's matmul (no zero-fill pass)
        for s in range(0, N, chunk):
            hc, yc, vc = h[s : s + chunk], safe[s : s + chunk], valid[s : s + chunk, None]
            z = (hc @ weight.t()).float()  # (c, V)
            zmax = z.amax(dim=-1, keepdim=True)  # (c, 1)
            z_label = z.gather(1, yc)  # (c, 1)
            z.sub_(zmax).exp_()
            zsum = z.sum(dim=-1, keepdim=True)  # (c, 1)
            row_loss = (zsum.log() + zmax - z_label) * vc  # (c, 1)
            loss += row_loss.sum()
            if rows is not None:
                rows[s : s + chunk] = row_loss[:, 0]
            if need_grad:
                # d(mean CE)/dz = (softmax - onehot) / count on valid rows, 0 on ignored rows (sum: count = 1)
                z.mul_(vc / (zsum * count))
                z.scatter_add_(1, yc, -(vc / count))
                g = z.to(h.dtype)  # (c, V)
                grad_h[s : s + chunk] = g @ weight  # (c, d)
                if grad_w is None:
                    grad_w = (g.t() @ hc).float()  # (V, d)
                elif grad_w.dtype == g.dtype:
                    grad_w.addmm_(g.t(), hc)
                else:
                    grad_w += (g.t() @ hc).float()
        if need_grad:
            if grad_w is None:  # no rows at all
                grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return loss / count

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        # loss.backward() on CPU: skip two full passes (not under torch.compile, which cannot branch on a value)
        if not torch.compiler.is_compiling() and grad_out.device.type == "cpu" and grad_out.item() == 1.0:
            return grad_h, grad_w, None, None, None, None, None, None
        return (grad_h * grad_out.to(grad_h.dtype), grad_w * grad_out.to(grad_w.dtype),
                None, None, None, None, None, None)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    chunk_rows: int | None = None,
    reduction: str = "mean",
    token_losses: torch.Tensor | None = None,
) -> torch.Tensor:
    """CE(hidden @ weight^T, labels) over non-ignored rows, reduction "mean" or "sum": same
    value and gradients as F.cross_entropy on the full logits (fp32 softmax), in O(chunk x V)
    extra memory.

    hidden (..., d), labels (...) long; returns a float32 scalar. token_losses: a float32 tensor
    shaped like labels that receives each token's loss (0 where ignored) from the same pass, the
    returned reduction unchanged (per-token curves and the mean loss without a second forward).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, d)
    y = labels.reshape(-1)  # (N,)
    if h.shape[0] != y.shape[0]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match hidden states {tuple(hidden.shape[:-1])}")
    dev = h.device.type
    if torch.is_autocast_enabled(dev):  # run the head in the autocast dtype, explicitly
        dtype = torch.get_autocast_dtype(dev)
        h, weight = h.to(dtype), weight.to(dtype)
    if chunk_rows is None:  # logits chunk of ~32 MiB on CPU (stays off the mmap path), ~256 MiB on GPU
        chunk_rows = max(16, (2**23 if dev == "cpu" else 2**26) // weight.shape[0])
    need_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    rows = None
    if token_losses is not None:
        if token_losses.shape != labels.shape or token_losses.dtype != torch.float32:
            raise ValueError(f"token_losses must be float32 of the labels' shape {tuple(labels.shape)}, got "
                             f"{token_losses.dtype} {tuple(token_losses.shape)}")
        rows = token_losses.view(-1)  # a view: the kernel writes the caller's tensor
    with torch.autocast(dev, enabled=False):
        return _LinearCrossEntropy.apply(h, weight, y, ignore_index, chunk_rows, need_grad, reduction == "mean", rows)


class GPTNeoX(nn.Module):
    """Pythia's GPT-NeoX causal LM with untied input/output embeddings.

    Initialised at construction with GPT-NeoX's init from the current torch RNG (so
    `torch.manual_seed(s)` before construction fixes it); on device="meta" nothing is
    allocated and `to_empty(device=...)` + `init_weights()` finish the job.
    """

    head_chunk_rows: int | None = None
    """Rows per logits chunk of the fused head + loss; None: ~32 MiB of fp32 logits on CPU, ~256 MiB on GPU."""

    def __init__(self, config: ModelConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        device = torch.device(device) if device is not None else torch.get_default_device()
        # Build on meta and materialise once: skips nn.Linear's default init, which we overwrite.
        factory = {"device": "meta", "dtype": dtype}
        self.gpt_neox = GPTNeoXModel(config, **factory)
        self.embed_out = nn.Linear(config.hidden_size, config.vocab_size, bias=False, **factory)
        if device.type != "meta":
            self.to_empty(device=device)
            self.init_weights()

    # ---- init ----------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-NeoX init (spec section 3): input-side weights ~ init_method, output projections
        (attention.dense, dense_4h_to_h) ~ output_init_method, biases 0, LayerNorms 1/0."""
        cfg = self.config
        s_in, s_out = cfg.input_init_std, cfg.output_init_std
        trunk = self.gpt_neox
        nn.init.normal_(trunk.embed_in.weight, 0.0, s_in)
        for layer in trunk.layers:
            for ln in (layer.input_layernorm, layer.post_attention_layernorm):
                nn.init.ones_(ln.weight)
                nn.init.zeros_(ln.bias)
            for lin, std in (
                (layer.attention.query_key_value, s_in),
                (layer.attention.dense, s_out),
                (layer.mlp.dense_h_to_4h, s_in),
                (layer.mlp.dense_4h_to_h, s_out),
            ):
                nn.init.normal_(lin.weight, 0.0, std)
                nn.init.zeros_(lin.bias)
        nn.init.ones_(trunk.final_layer_norm.weight)
        nn.init.zeros_(trunk.final_layer_norm.bias)
        nn.init.normal_(self.embed_out.weight, 0.0, s_in)  # small_init, not wang (untied head)

    # ---- forward -------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        loss_reduction: str = "mean",
        token_losses: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) long -> logits (B, T, V) in the model dtype; with labels, the loss.

        labels (B, T) are already shifted (labels[:, t] is the target after input_ids[:, t];
        -100 = ignore): then the result is the cross-entropy instead (mean over tokens, or their
        sum with loss_reduction="sum"), a float32 scalar computed by `linear_cross_entropy`
        without materialising the logits: the path of training and validation (see pythia.loss;
        it stays inside forward so DDP/FSDP hooks run); a float32 (B, T) `token_losses` tensor then
        also receives each token's loss. Either way one tensor comes back.
        Intermediate states: forward hooks on `gpt_neox.layers[i]` (see tests/test_model.py).
        """
        T = input_ids.shape[1]
        x = self.gpt_neox.embed_in(input_ids)  # (B, T, d)
        rope = self.gpt_neox.rotary_emb.get(0, T, x.dtype)  # cos, sin: (T, r) each
        for layer in self.gpt_neox.layers:
            x = layer(x, rope)  # (B, T, d)
        x = self.gpt_neox.final_layer_norm(x)
        if labels is not None:
            return self.head_loss(x, labels, loss_reduction, token_losses)
        return self.embed_out(x)  # (B, T, V)

    def head_loss(self, hidden: torch.Tensor, labels: torch.Tensor, reduction: str = "mean",
                  token_losses: torch.Tensor | None = None) -> torch.Tensor:
        """The fused head + cross-entropy of the final hidden states (B, T, d): a method of its own
        so that a trainer can compile it apart from the layers (pythia.train.compile)."""
        return linear_cross_entropy(hidden, self.embed_out.weight, labels, chunk_rows=self.head_chunk_rows,
                                    reduction=reduction, token_losses=token_losses)

    def forward_cached(self, input_ids: torch.Tensor, cache: KVCache, start: int, last_only: bool = True) -> torch.Tensor:
        """Run `input_ids` (B, T) at positions [start, start+T) against a KV cache it fills.

        Returns logits (B, V) of the last position (last_only) or (B, T, V): generation only
        needs the last row, which skips most of the vocabulary matmul on the prompt.
        """
        T = input_ids.shape[1]
        x = self.gpt_neox.embed_in(input_ids)  # (B, T, d)
        rope = self.gpt_neox.rotary_emb.get(start, T, x.dtype)
        for layer, kv in zip(self.gpt_neox.layers, cache.layers):
            x = layer(x, rope, kv, start)
        if last_only:
            x = x[:, -1]  # (B, d)
        return self.embed_out(self.gpt_neox.final_layer_norm(x))

    # ---- sizes ---------------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.gpt_neox.embed_in.weight.numel() + self.embed_out.weight.numel()
        return n

    def extra_repr(self) -> str:
        c = self.config
        return f"name={c.name!r}, L={c.num_layers}, d={c.hidden_size}, H={c.num_heads}, V={c.vocab_size}"


def flops_per_token(config: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token (fwd + bwd = 3x fwd): 6N (matmul params) + attention scores.

    Used by benchmarks/gpu_bench.py for MFU; embed_in is a lookup, so only embed_out counts.
    """
    S = seq_len or config.max_seq_len
    d, L, V = config.hidden_size, config.num_layers, config.vocab_size
    matmul_params = L * 12 * d * d + V * d
    attn = L * 2 * S * d  # QK^T and AV per token, causal counted in full like PaLM's MFU
    return 6 * matmul_params + 6 * attn


__all__ = ["GPTNeoX", "KVCache", "RotaryEmbedding", "apply_rotary", "flops_per_token", "linear_cross_entropy"]
