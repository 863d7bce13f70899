"""Pythia's optimizer pieces: weight-decay groups, AdamW, global-norm clipping, loss scaling.

gpt-neox v1.0 used apex FusedAdam in AdamW mode (decoupled decay), which torch.optim.AdamW
reproduces; DeepSpeed's fp16 optimizer did dynamic loss scaling with Pythia's settings
(initial 2^12, window 1000, hysteresis 2, min 1). Spec pythia-model.md section 5.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

_NORM_TYPES = (torch.nn.LayerNorm, torch.nn.GroupNorm)


def _is_norm(module: torch.nn.Module) -> bool:
    # RMSNorm exists from torch 2.4; class-name check keeps custom norms (e.g. a hand-written
    # LayerNorm) in the no-decay group as gpt-neox's `get_params_for_weight_decay_optimization` did.
    return isinstance(module, _NORM_TYPES) or type(module).__name__.lower().endswith(("layernorm", "rmsnorm", "scalenorm"))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """[decay, no_decay] groups: every norm parameter and every `*.bias` gets weight decay 0.

    Embeddings (embed_in, embed_out) ARE decayed, as in gpt-neox. Each group also carries
    "names" (parameter names) so checkpoints can store optimizer state by name.
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if _is_norm(module):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = ([], []), ([], [])
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        target = no_decay if (id(p) in no_decay_ids or name.endswith("bias")) else decay
        target[0].append(name)
        target[1].append(p)
    return [
        {"params": decay[1], "names": decay[0], "weight_decay": weight_decay},
        {"params": no_decay[1], "names": no_decay[0], "weight_decay": 0.0},
    ]


def build_optimizer(
    model: torch.nn.Module,
    *,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over Pythia's two groups; the lr is set per step by the trainer (starts at 0)."""
    groups = param_groups(model, weight_decay)
    # fused=None: CUDA with plain (unsharded) parameters gets the fused kernel, one launch per
    # step instead of ~10 per parameter; elementwise, so as deterministic across resumes as the
    # single-tensor path (foreach=False) used everywhere else (CPU, FSDP2's DTensor shards).
    params = [p for g in groups for p in g["params"]]
    if fused is None:
        fused = bool(params) and all(p.is_cuda and type(p.data) is torch.Tensor for p in params)
    if fused:
        return torch.optim.AdamW(groups, lr=0.0, betas=tuple(betas), eps=eps, fused=True)
    return torch.optim.AdamW(groups, lr=0.0, betas=tuple(betas), eps=eps, foreach=False)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor | None:
    """Global L2 norm over all gradients (before clipping), as a 0-d tensor on their device
    (reading it is the caller's choice: no host sync here); clips in place. None: no gradients.

    Works for DTensor (FSDP2) parameters: clip_grad_norm_ reduces the norm over the shards.
    clip_grad_norm_ multiplies by max_norm/(total+1e-6) clamped at 1, which is a no-op for
    finite norms <= max_norm and harmless garbage for inf/nan (the step is skipped then).
    """
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return None
    if max_norm and max_norm > 0:
        total = torch.nn.utils.clip_grad_norm_(grads, max_norm, error_if_nonfinite=False)
    else:
        total = torch.nn.utils.get_total_norm([p.grad for p in grads])
    if hasattr(total, "full_tensor"):  # DTensor under FSDP2
        total = total.full_tensor()
    return total


def step_unless_nonfinite(optimizer: torch.optim.Optimizer, norm: torch.Tensor) -> torch.Tensor:
    """A fused AdamW step that the kernel itself skips when `norm` is not finite (the `found_inf`
    input torch.amp.GradScaler feeds it; the step counts are restored too), so the host never
    waits for the norm. Returns the 0-d float32 flag on the device: 1.0 = skipped."""
    if not optimizer.defaults.get("fused"):
        raise ValueError("step_unless_nonfinite needs a fused optimizer (build_optimizer(..., fused=True))")
    found_inf = (~torch.isfinite(norm)).to(torch.float32)
    optimizer.found_inf = found_inf
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf
    return found_inf


@dataclass
class DynamicLossScaler:
    """DeepSpeed's DynamicLossScaler (deepspeed/runtime/fp16/loss_scaler.py), Pythia's settings.

    * overflow with hysteresis left > 1: keep the scale, spend one unit of hysteresis;
    * overflow with hysteresis 1: halve the scale (not below min_scale);
    * growth: double the scale after `window` overflow-free iterations since the last
      overflow, and refill the hysteresis then (DeepSpeed's consecutive_hysteresis=False).
    The step is skipped on every overflow (the caller does that). `enabled=False` is a
    scale of 1 that never changes (fp32 / bf16).
    """

    scale: float = 2.0**12
    window: int = 1000
    hysteresis: int = 2
    min_scale: float = 1.0
    factor: float = 2.0
    enabled: bool = True
    hysteresis_left: int = -1
    iteration: int = 0
    last_overflow_iteration: int = -1

    def __post_init__(self) -> None:
        if not self.enabled:
            self.scale = 1.0
        if self.hysteresis_left < 0:
            self.hysteresis_left = self.hysteresis

    @property
    def loss_scale(self) -> float:
        return self.scale if self.enabled else 1.0

    def update(self, overflow: bool) -> None:
        if not self.enabled:
            self.iteration += 1
            return
        if overflow:
            if self.hysteresis == 1 or self.hysteresis_left == 1:
                self.scale = max(self.scale / self.factor, self.min_scale)
            else:
                self.hysteresis_left -= 1
            self.last_overflow_iteration = self.iteration
        else:
            stable = self.iteration - self.last_overflow_iteration - 1
            if stable > 0 and stable % self.window == 0:
                self.hysteresis_left = self.hysteresis
                self.scale *= self.factor
        self.iteration += 1

    def state_dict(self) -> dict:
        return {
            "scale": self.scale,
            "window": self.window,
            "hysteresis": self.hysteresis,
            "min_scale": self.min_scale,
            "factor": self.factor,
            "enabled": self.enabled,
            "hysteresis_left": self.hysteresis_left,
            "iteration": self.iteration,
            "last_overflow_iteration": self.last_overflow_iteration,
        }

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
