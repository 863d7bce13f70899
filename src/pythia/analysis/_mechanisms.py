"""What the mechanism analyses (`icl`, `lens`) share: the held-out windows, read once per sweep,
and the one forward pass per batch that serves both on a checkpoint.

Windows: the first N (S+1)-token windows of a held-out token dataset in file order (window j =
tokens [j*S, j*S + S + 1) of its documents concatenated, as `val_loss` reads them), where S is the
run's sequence length; by default the suite's validation set and N its `eval.samples`. A Hub
run has no validation set of its own: `--held-out-data PREFIX` names one.

The pass: when `icl` and `lens` run on the same checkpoint (`ctx.analyses`), whichever comes
first computes the loss by position and the logit-lens sums together; the other reads them back
from `ctx.shared` (the tuned lens makes its own pass: it needs its translators first).
"""
from __future__ import annotations

from pathlib import Path

from ..io import write_json_atomic
from .base import AnalysisError, Option

HELD_OUT_OPTIONS = (
    Option("held_out_windows", int, None, "held-out windows to read (default: the spec's eval.samples; 16 for a Hub run)"),
    Option("held_out_data", str, None, "token dataset PREFIX (.bin/.idx) of the held-out windows (default: the suite's "
           "validation set; needed for a Hub run)"),
    Option("mech_batch", int, 4, "windows per forward pass", affects_result=False),
)
HUB_WINDOWS = 16

__all__ = ["HELD_OUT_OPTIONS", "check_held_out", "held_out", "held_out_pass", "write_windows"]


def _source(run, opts) -> tuple[str, int]:
    prefix = opts.get("held_out_data") or (run.spec.data.valid if run.spec is not None else None)
    n = opts.get("held_out_windows") or (run.spec.eval_samples if run.spec is not None else HUB_WINDOWS)
    return prefix, n


def check_held_out(name: str, run, members, opts) -> None:
    """Refuse a run without held-out data, or a window count below 1, before any work."""
    prefix, n = _source(run, opts)
    if not prefix:
        raise AnalysisError(f"{name}: {run.source} has no validation data (data.valid in its suite spec); "
                            "name a held-out token dataset with --held-out-data PREFIX")
    if not (Path(prefix + ".bin").is_file() and Path(prefix + ".idx").is_file()):
        raise AnalysisError(f"{name}: --held-out-data {prefix}: no {prefix}.bin/.idx")
    if n < 1:
        raise AnalysisError(f"{name}: --held-out-windows must be >= 1, got {n}")
    for m in members:
        if not m.seq_len:
            raise AnalysisError(f"{name}: member {m.name} has no known sequence length")


def held_out(ctx, opts):
    """(windows (n, S+1) int64, prefix): the held-out windows of this member's context, read once."""
    from ..data.indexed import validation_windows

    prefix, n = _source(ctx.run, opts)
    seq_len = ctx.member.seq_len
    key = ("mechanisms.windows", prefix, seq_len, n)
    if key not in ctx.shared:
        try:
            ctx.shared[key] = validation_windows(prefix, seq_len, n)
        except ValueError as exc:
            raise AnalysisError(f"--held-out-data {prefix}: {exc}") from None
    return ctx.shared[key], prefix


def held_out_pass(ctx, opts, *, lens: bool):
    """The loss by position (and, with `lens` or when `lens` also runs on this checkpoint, the
    logit-lens sums) on the held-out windows, computed once per checkpoint."""
    from ..mechanisms.lens import held_out_sums

    windows, prefix = held_out(ctx, opts)
    key = (ctx.member.name, ctx.step, prefix, windows.shape)
    cached = ctx.shared.get("mechanisms.pass")
    if cached is not None and cached[0] == key and (cached[1].kl is not None or not lens):
        return cached[1], windows, prefix
    want_lens = lens or "lens" in ctx.analyses
    model = ctx.model
    was_training = model.training
    model.eval()
    try:
        sums = held_out_sums(model, windows, lens=want_lens, batch=opts["mech_batch"], device=ctx.device,
                             autocast=ctx.autocast)
    finally:
        model.train(was_training)
    ctx.shared["mechanisms.pass"] = (key, sums)  # the latest checkpoint only
    return sums, windows, prefix


def write_windows(folder: Path, prefix: str, windows) -> None:
    """windows.json: which held-out windows the numbers beside it were computed on."""
    n, T = windows.shape
    write_json_atomic(folder / "windows.json", {
        "data": str(prefix), "seq_len": T - 1, "indices": list(range(n)),
        "window": "window j = tokens [j*seq_len, j*seq_len + seq_len + 1) of the dataset's documents concatenated "
                  "in file order; the model reads its first seq_len tokens and is scored on its last seq_len"})
