"""`val_loss`: mean next-token cross-entropy on the run's fixed held-out windows.

The windows are the first N (= the spec's `eval.samples`) (S+1)-token windows of the
validation set in file order (`pythia.data.indexed.validation_windows`), the same for every
member and step, so the curves are comparable. The loss is averaged over every predicted token
(N x S), with the one loss function training uses (`pythia.loss`: fused head + cross-entropy,
no (N, S, V) logits, float32 sums). The trainer calls this same analysis at checkpoint time.
Its pass keeps every token's loss (`_probe.score`): `token_curves` on the same windows reuses it.
"""
from __future__ import annotations

from ._probe import score as score_probe, windows as probe_windows
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
        spec = ctx.run.spec
        n = self.opts["val_samples"] or spec.eval_samples
        return probe_windows(ctx.shared, spec.data.valid, spec.data.seq_len, n)

    def compute(self, ctx) -> list[Row]:
        windows = self.windows(ctx)
        key = ("probe", ctx.run.spec.data.valid, ctx.run.spec.data.seq_len, int(windows.shape[0]))
        _, sums = score_probe(ctx, key, windows, self.opts["val_batch"])
        total = 0.0
        for s in sums:  # float32 batch sums added in order, as training's validation does
            total += s
        return [Row("val_loss", total / (windows.shape[0] * (windows.shape[1] - 1)))]
