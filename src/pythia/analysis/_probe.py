"""The probe: fixed held-out windows read by `val_loss`, `token_curves` and `seed_convergence`,
and the one forward pass that scores every token of them at a checkpoint.

The windows are the first N (S+1)-token windows of a tokenized dataset in file order (the
validation split by default; `pythia.data.indexed.validation_windows`), the same for every
member and step. `score` keeps the pass of the current checkpoint in `ctx.shared`: `val_loss`
and `token_curves` asked together on the same windows run one forward pass (`pythia.loss.
token_losses`: per-token losses and, bit for bit, the sums validation accumulates).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .base import AnalysisError, Option

HUB_WINDOWS = 32
"""Default probe of a Hub run (no spec): 32 windows of 2049 tokens, ~64k tokens."""

PROBE_OPTIONS = (
    Option("probe_windows", int, None, "probe size in windows of seq_len+1 tokens (default: the spec's "
           f"eval.samples, val_loss's windows; {HUB_WINDOWS} for a Hub run)"),
    Option("probe_data", str, None, "PREFIX of a tokenized .bin/.idx whose first windows are the probe "
           "(default: the run's validation split; needed for a Hub run)"),
)


@dataclass(frozen=True)
class Probe:
    prefix: str
    seq_len: int
    windows: np.ndarray = field(repr=False)
    """(W, S+1) int64 token ids."""

    @property
    def key(self) -> tuple:
        return ("probe", self.prefix, self.seq_len, int(self.windows.shape[0]))

    @property
    def digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.windows, np.int64).tobytes()).hexdigest()[:16]


def probe_seq_len(run) -> int:
    seq = run.spec.data.seq_len if run.spec is not None else run.hub_seq_len
    if not seq:
        raise AnalysisError(f"{run.source}: no sequence length known for the probe windows")
    return int(seq)


def probe_source(run, probe_data: str | None) -> str:
    if probe_data:
        return str(probe_data)
    if run.spec is not None and run.spec.data.valid:
        return run.spec.data.valid
    raise AnalysisError(f"{run.source} has no validation split to probe (data.valid in its suite spec); pass "
                        "--probe-data PREFIX, a tokenized .bin/.idx (e.g. the Pile's validation set made with "
                        "`pythia data tokenize`)")


def probe_size(run, probe_windows: int | None) -> int:
    if probe_windows is not None:
        if probe_windows < 1:
            raise AnalysisError(f"--probe-windows must be >= 1, got {probe_windows}")
        return int(probe_windows)
    return int(run.spec.eval_samples) if run.spec is not None else HUB_WINDOWS


def windows(shared: dict, prefix: str, seq_len: int, n: int) -> np.ndarray:
    """The first n windows of `prefix` (fewer when it is shorter), read once per process."""
    from ..data.indexed import validation_windows

    key = ("probe", prefix, seq_len, n)
    if key not in shared:
        try:
            shared[key] = validation_windows(prefix, seq_len, n)
        except (OSError, ValueError) as exc:
            raise AnalysisError(f"probe data {prefix}: {exc}") from None
    return shared[key]


def read_probe(run, opts: dict, shared: dict) -> Probe:
    """The probe an analysis' options ask for; an error when the data holds fewer windows."""
    prefix, seq_len, n = probe_source(run, opts.get("probe_data")), probe_seq_len(run), probe_size(
        run, opts.get("probe_windows"))
    w = windows(shared, prefix, seq_len, n)
    if w.shape[0] < n:
        raise AnalysisError(f"a probe of {n} windows needs {n * seq_len + 1} tokens, but {prefix} holds only "
                            f"{w.shape[0]} windows of {seq_len + 1} tokens; lower --probe-windows to at most "
                            f"{w.shape[0]}")
    return Probe(prefix, seq_len, w)


def score(ctx, key: tuple, windows: np.ndarray, batch: int) -> tuple[np.ndarray, list[float]]:
    """Per-token losses (W, S) float32 of `windows` at ctx's checkpoint and the float32 loss sum
    of each batch of `batch` windows (what validation accumulates); computed once per checkpoint
    for every analysis that asks with the same key and batch."""
    import torch

    from ..loss import token_losses

    ident = (ctx.member.name, ctx.step, key, int(batch), str(ctx.autocast))
    held = ctx.shared.get("probe.pass")
    if held is not None and held[0] == ident:
        return held[1]
    model = ctx.model
    was_training = model.training
    model.eval()
    parts, sums = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch):
                per_token, total, _ = token_losses(model, windows[start:start + batch], ctx.autocast, ctx.device)
                parts.append(per_token.cpu().numpy())
                sums.append(float(total))
    finally:
        model.train(was_training)
    value = (np.concatenate(parts) if parts else np.zeros((0, windows.shape[1] - 1), np.float32), sums)
    ctx.shared["probe.pass"] = (ident, value)  # one checkpoint's pass at a time
    return value


__all__ = ["HUB_WINDOWS", "PROBE_OPTIONS", "Probe", "probe_seq_len", "probe_size", "probe_source", "read_probe",
           "score", "windows"]
