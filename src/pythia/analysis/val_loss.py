"""`val_loss`: mean next-token cross-entropy on the run's fixed held-out windows.

The windows are the first N (= the spec's `eval.samples`) (S+1)-token windows of the
validation set in file order (`pythia.train.suite.validation_windows`), the same for every
member and step, so the curves are comparable. The loss is averaged over every predicted token
(N x S), in float32, with the model's fused head + cross-entropy (no (N, S, V) logits). The
trainer calls this same analysis at checkpoint time.
"""
from __future__ import annotations

import contextlib

from .base import Analysis, AnalysisError, Option, Row, register


@register
class ValLoss(Analysis):
    name = "val_loss"
    summary = "mean next-token loss on the run's held-out windows (the trainer's checkpoint-time eval)"
    options = (
        Option("val_samples", int, None, "held-out windows to score (default: the spec's eval.samples)"),
        Option("val_batch", int, 8, "windows per forward pass", affects_result=False),
    )

    def check(self, run, members) -> None:
        if run.spec is None or not run.spec.data.valid:
            raise AnalysisError(f"val_loss: {run.source} has no validation data (data.valid in its suite spec)")

    def windows(self, ctx):
        from ..train.suite import validation_windows

        spec = ctx.run.spec
        n = self.opts["val_samples"] or spec.eval_samples
        key = ("val_loss.windows", spec.data.valid, spec.data.seq_len, n)
        if key not in ctx.shared:
            ctx.shared[key] = validation_windows(spec.data.valid, spec.data.seq_len, n)
        return ctx.shared[key]

    def compute(self, ctx) -> list[Row]:
        total, count = token_loss_sum(ctx.model, self.windows(ctx), ctx.device, self.opts["val_batch"], ctx.autocast)
        return [Row("val_loss", total / count)]


def token_loss_sum(model, windows, device, batch: int, autocast=None) -> tuple[float, int]:
    """(sum of next-token losses, number of tokens) over (N, S+1) windows, batch by batch."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    cast = (torch.autocast(device_type=torch.device(device).type, dtype=autocast) if autocast is not None
            else contextlib.nullcontext())
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch):
                x = torch.as_tensor(windows[start:start + batch], device=device)  # (b, S+1)
                with cast:
                    mean = model(x[:, :-1], labels=x[:, 1:])  # float32 scalar over b x S tokens
                n = x[:, 1:].numel()
                total += float(mean) * n
                count += n
    finally:
        model.train(was_training)
    return total, count
