"""Next-token loss of a batch of (b, S+1) token windows: the one loss path of training and
validation.

Window row i holds S+1 tokens; the model reads tokens [0, S) and is scored on predicting
tokens [1, S+1) (GPT-NeoX's samples, where neighbours share one token). The loss goes through
the model's fused head + cross-entropy (`pythia.model.linear_cross_entropy`), which never
builds the (b, S, V) logits: at Pythia scale (32 x 2048 x 50304) those are 6.6 GB in fp16,
plus as much again for their log-softmax and gradient. The model is called through its
wrapper (DDP / FSDP2), so sharded parameters are gathered as in any forward.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch


def _as_windows(windows, device: torch.device | None, model: torch.nn.Module) -> torch.Tensor:
    if not torch.is_tensor(windows):
        windows = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.int64))
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be (batch, S+1) with S >= 1, got shape {tuple(windows.shape)}")
    if device is None:
        device = next(model.parameters()).device
    return windows.to(device=device, dtype=torch.long)


def token_loss(
    model: torch.nn.Module,
    windows,
    *,
    autocast_dtype: torch.dtype | None = None,
    reduction: str = "mean",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Cross-entropy of the next-token predictions in `windows` (b, S+1), as a float32 scalar:
    the mean over the b x S predicted tokens, or their sum (reduction="sum").

    windows: int tensor or numpy array (moved to `device`, default the model's). autocast_dtype:
    torch.bfloat16 / torch.float16 to run under torch.autocast (fp32 master weights), None for
    plain fp32. Differentiable: training calls backward() on it.
    """
    x = _as_windows(windows, device, model)
    amp = (torch.autocast(device_type=x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with amp:
        return model(x[:, :-1], labels=x[:, 1:], loss_reduction=reduction)


def token_loss_sum(
    model: torch.nn.Module,
    windows,
    autocast_dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, int]:
    """(sum of the token losses as a float32 scalar tensor, number of tokens scored = b x S):
    what validation accumulates over batches before dividing once."""
    total = token_loss(model, windows, autocast_dtype=autocast_dtype, reduction="sum", device=device)
    return total, int(windows.shape[0]) * (int(windows.shape[1]) - 1)


def token_losses(
    model: torch.nn.Module,
    windows,
    autocast_dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The loss of every predicted token of `windows` (b, S+1) from one forward pass:
    (per-token losses (b, S) float32 -- column k-1 holds -ln p(token k | tokens < k) --, their
    sum and count exactly as `token_loss_sum` returns them). Same kernel, same chunks: the sum is
    bit for bit the one validation accumulates."""
    x = _as_windows(windows, device, model)
    per_token = torch.empty(x.shape[0], x.shape[1] - 1, dtype=torch.float32, device=x.device)
    amp = (torch.autocast(device_type=x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with amp:
        total = model(x[:, :-1], labels=x[:, 1:], loss_reduction="sum", token_losses=per_token)
    return per_token, total, int(x.shape[0]) * (int(x.shape[1]) - 1)


__all__ = ["token_loss", "token_loss_sum", "token_losses"]
