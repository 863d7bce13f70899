"""`val_loss`: mean next-token cross-entropy on the run's fixed held-out windows.

The windows are the first N (= the spec's `eval.samples`) (S+1)-token windows of the
validation set in file order (`pythia.data.indexed.validation_windows`), the same for every
member and step, so the curves are comparable. The loss is averaged over every predicted token
(N x S), with the one loss function training uses (`pythia.loss`: fused head + cross-entropy,
no (N, S, V) logits, float32 sums). The trainer calls this same analysis at checkpoint time.
"""
from __future__ import annotations

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
        from ..data.indexed import validation_windows

        spec = ctx.run.spec
        n = self.opts["val_samples"] or spec.eval_samples
        key = ("val_loss.windows", spec.data.valid, spec.data.seq_len, n)
        if key not in ctx.shared:
            ctx.shared[key] = validation_windows(spec.data.valid, spec.data.seq_len, n)
        return ctx.shared[key]

    def compute(self, ctx) -> list[Row]:
        import torch

        from ..loss import token_loss_sum

        model, windows, batch = ctx.model, self.windows(ctx), self.opts["val_batch"]
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            with torch.no_grad():
                for start in range(0, len(windows), batch):
                    loss, n = token_loss_sum(model, windows[start:start + batch], ctx.autocast, ctx.device)
                    total += float(loss)
                    count += n
        finally:
            model.train(was_training)
        return [Row("val_loss", total / count)]
