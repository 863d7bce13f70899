"""Loss by position and lenses on held-out windows, in one pass per batch.

For windows x = (x_1 .. x_T) (the model reads x_1..x_{T-1}), CE_k = -ln p(x_k | x_<k), k = 2..T.

- Loss by position L(k): CE_k averaged over windows (Olsson et al. 2022); the in-context
  learning score is L(k_late) - L(k_early).
- Logit lens (nostalgebraist 2020): p_l = softmax(W_U LN_f(h_l)), h_l the residual stream after
  block l (l = 0: the embeddings), h_L giving the model's own output p_L. Per layer, summed over
  positions: KL(p_L || p_l) and the CE of the true next token; and the prediction depth of each
  position: the first layer from which the lens' top-1 token equals the model's at every later
  layer.
- Tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions with the Tuned Lens"):
  p_l = softmax(W_U LN_f(h_l + A_l h_l + b_l)), one affine translator per layer l < L,
  A_l = 0 and b_l = 0 at the start, trained to minimise KL(p_L || p_l) on training windows with
  Adam (Belrose et al. use SGD with Nesterov momentum over far more tokens).

Everything after the model's forward runs in float32, over row chunks of ~32 MiB of logits, so
no (B, T, V) tensor per layer is ever built.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .internals import run_internals

__all__ = ["HeldOutSums", "TunedLens", "held_out_sums", "train_tuned_lens"]


@dataclass
class HeldOutSums:
    """Sums over the held-out windows; divide by the counts for means."""

    windows: int
    ce_by_position: np.ndarray
    """(T-1,) float64: sum over windows of CE_k for k = 2..T (index i is k = i + 2)."""
    kl: np.ndarray | None = None
    """(L+1,) float64 sums over every scored position of KL(p_L || p_l) (logit lens)."""
    ce: np.ndarray | None = None
    """(L+1,) float64 sums of the lens' CE of the true next token."""
    depth: float = 0.0
    """Sum of the prediction depths."""
    tuned_kl: np.ndarray | None = None
    """(L,) float64, tuned lens (layers 0..L-1)."""
    tuned_ce: np.ndarray | None = None

    @property
    def positions(self) -> int:
        return self.windows * len(self.ce_by_position)


class _Readout:
    """LN_f and W_U in float32, applied to row chunks."""

    def __init__(self, model):
        inner = getattr(model, "module", model)
        ln = inner.gpt_neox.final_layer_norm
        self.ln = (ln.normalized_shape, ln.weight.detach().float(), ln.bias.detach().float(), ln.eps)
        self.w_u = inner.embed_out.weight.detach().float()  # (V, d)
        self.rows = max(16, 2**23 // self.w_u.shape[0])

    def logprobs(self, h: torch.Tensor) -> torch.Tensor:
        """(N, d) residuals -> (N, V) float32 log-probabilities of the lens."""
        shape, w, b, eps = self.ln
        return torch.log_softmax(F.layer_norm(h.float(), shape, w, b, eps) @ self.w_u.t(), dim=-1)


def _kl(logp_ref: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p) per row."""
    return (logp_ref.exp() * (logp_ref - logp)).sum(dim=-1)


@torch.no_grad()
def held_out_sums(model, windows, *, lens: bool = False, tuned: "TunedLens | None" = None, batch: int = 4,
                  device=None, autocast=None) -> HeldOutSums:
    """One forward pass per batch of `windows` (n, T) int: the loss by position, and with `lens`
    the logit-lens sums (and the tuned lens' when `tuned` is given). See the module doc."""
    inner = getattr(model, "module", model)
    device = device or next(inner.parameters()).device
    windows = torch.as_tensor(np.asarray(windows), dtype=torch.long)
    n, T = windows.shape
    L = len(inner.gpt_neox.layers)
    read = _Readout(inner)
    out = HeldOutSums(windows=n, ce_by_position=np.zeros(T - 1))
    ce_pos = torch.zeros(T - 1, dtype=torch.float64)
    if lens:
        kl, ce = torch.zeros(L + 1, dtype=torch.float64), torch.zeros(L + 1, dtype=torch.float64)
        depth = torch.zeros((), dtype=torch.float64)
    if tuned is not None:
        tkl, tce = torch.zeros(L, dtype=torch.float64), torch.zeros(L, dtype=torch.float64)
    for start in range(0, n, batch):
        w = windows[start:start + batch].to(device)
        got = run_internals(model, w[:, :-1], autocast=autocast, layers=lens)
        target = w[:, 1:].reshape(-1)  # (N,)
        last = (got.resid[-1] if lens else got.final).reshape(-1, got.final.shape[-1])
        final_normed = not lens  # got.final is LN_f(h_L) already
        pos = torch.arange(T - 1, device=device).repeat(w.shape[0])  # (N,)
        for s in range(0, target.numel(), read.rows):
            rows = slice(s, s + read.rows)
            y = target[rows, None]
            if final_normed:
                logp_final = torch.log_softmax(last[rows].float() @ read.w_u.t(), dim=-1)
            else:
                logp_final = read.logprobs(last[rows])
            ce_final = -logp_final.gather(1, y)[:, 0]
            ce_pos.index_add_(0, pos[rows].cpu(), ce_final.double().cpu())
            if not lens:
                continue
            top_final = logp_final.argmax(dim=-1)
            agree = []
            for l in range(L + 1):
                h = got.resid[l].reshape(-1, last.shape[-1])[rows]
                logp = logp_final if l == L else read.logprobs(h)
                kl[l] += _kl(logp_final, logp).sum().double().cpu()
                ce[l] += -logp.gather(1, y).sum().double().cpu()
                agree.append(logp.argmax(dim=-1) == top_final)
                if tuned is not None and l < L:
                    logp_t = read.logprobs(tuned(l, h.float()))
                    tkl[l] += _kl(logp_final, logp_t).sum().double().cpu()
                    tce[l] += -logp_t.gather(1, y).sum().double().cpu()
            trailing = torch.stack(agree).flip(0).long().cumprod(dim=0).sum(dim=0)  # layers agreeing from L down
            depth += (L + 1 - trailing).sum().double().cpu()
    out.ce_by_position = ce_pos.numpy()
    if lens:
        out.kl, out.ce, out.depth = kl.numpy(), ce.numpy(), float(depth)
    if tuned is not None:
        out.tuned_kl, out.tuned_ce = tkl.numpy(), tce.numpy()
    return out


class TunedLens(nn.Module):
    """One affine translator per layer l < L: h -> h + A_l h + b_l, A_l and b_l zero at the start."""

    def __init__(self, num_layers: int, hidden_size: int):
        super().__init__()
        self.translators = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(num_layers))
        for t in self.translators:
            nn.init.zeros_(t.weight)
            nn.init.zeros_(t.bias)

    def forward(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        return h + self.translators[layer](h)

    def save(self, path, metadata: dict | None = None) -> None:
        """safetensors file with keys translators.{l}.weight / .bias (and string metadata)."""
        from safetensors.torch import save_file

        from ..io import atomic_path

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})

    @classmethod
    def load(cls, path) -> "TunedLens":
        from safetensors.torch import load_file

        state = load_file(str(path))
        n = len({k.split(".")[1] for k in state})
        lens = cls(n, state["translators.0.weight"].shape[0])
        lens.load_state_dict(state)
        return lens


def _residuals(model, windows, batch, device, autocast) -> torch.Tensor:
    """(L+1, N, d) float32 residual stream of every position of `windows` (n, T)."""
    windows = torch.as_tensor(np.asarray(windows), dtype=torch.long)
    parts = []
    for start in range(0, len(windows), batch):
        got = run_internals(model, windows[start:start + batch, :-1].to(device), autocast=autocast)
        parts.append(torch.stack([h.reshape(-1, h.shape[-1]).float() for h in got.resid]))
    return torch.cat(parts, dim=1)


def train_tuned_lens(model, windows, *, steps: int, lr: float, rows: int = 512, seed: int = 0, batch: int = 4,
                     device=None, autocast=None) -> TunedLens:
    """Fit a TunedLens to `model` on the positions of `windows` (n, T): `steps` Adam updates,
    each on `rows` positions drawn with a generator seeded by `seed`; the loss is the mean over
    the layers and positions of KL(p_L || p_l)."""
    inner = getattr(model, "module", model)
    device = device or next(inner.parameters()).device
    with torch.no_grad():
        resid = _residuals(model, windows, batch, device, autocast)  # (L+1, N, d)
    L, N = resid.shape[0] - 1, resid.shape[1]
    read = _Readout(inner)
    torch.manual_seed(seed)
    lens = TunedLens(L, resid.shape[-1]).to(device)
    opt = torch.optim.Adam(lens.parameters(), lr=lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, N, (min(rows, N),), generator=gen).to(device)
        with torch.no_grad():
            logp_final = read.logprobs(resid[L, idx])
        loss = sum(_kl(logp_final, read.logprobs(lens(l, resid[l, idx]))).mean() for l in range(L)) / L
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return lens.eval()
