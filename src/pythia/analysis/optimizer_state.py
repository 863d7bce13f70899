"""`optimizer_state`: what the saved AdamW moments say about training at a checkpoint.

Pythia released optimizer states only for its final checkpoints (EleutherAI/pythia issue #101); a
suite trained here keeps them at its checkpoints (every k-th with `train.optimizer_state_every`).
Per weight matrix (`task` = the parameter's name) and as the mean over matrices (`task` = `all`):
`update_ratio`, `grad_snr`, `outlier_frac`, with the checkpoint's own lr, betas, eps and AdamW
step (definitions: `pythia.train.optimizer_state`). Single-file and FSDP-sharded (DCP) states
are both read, the latter in one process whatever number of ranks wrote it. Checkpoints without
moments (step 0, `omitted` by optimizer_state_every, Hub snapshots) are skipped: one warning
names them all, and they are remembered as done for their weights.
"""
from __future__ import annotations

from ..matrix_stats import is_weight_matrix
from .base import Analysis, Row, SkipCheckpoint, register

METRICS = ("update_ratio", "grad_snr", "outlier_frac")


@register
class OptimizerState(Analysis):
    name = "optimizer_state"
    summary = "update/weight ratio, gradient signal-to-noise and outlier share from the saved AdamW moments"
    scope = "checkpoint"
    version = 1

    def compute(self, ctx) -> list[Row]:
        import torch

        from ..train.optimizer_state import SavedOptimizer, adam_statistics, has_moments

        path = ctx.checkpoint.path
        why = has_moments(path)
        if why is not None:
            raise SkipCheckpoint(f"no optimizer state ({why})")
        saved = SavedOptimizer(path)
        rows: list[Row] = []
        sums = dict.fromkeys(METRICS, 0.0)
        counted = 0
        for name, w in sorted(_weight_matrices(ctx), key=lambda nw: nw[0]):  # one order, however read
            moments = saved.moments([name])[name]
            hyper = saved.groups[name]
            with torch.no_grad():
                stats = adam_statistics(w.float().cpu(), moments["exp_avg"], moments["exp_avg_sq"], moments["step"],
                                        lr=hyper["lr"], betas=hyper["betas"], eps=hyper["eps"])
            if not stats:
                continue
            rows += [Row(k, stats[k], name) for k in METRICS]
            counted += 1
            for k in METRICS:
                sums[k] += stats[k]
        if counted:
            rows += [Row(k, sums[k] / counted, "all") for k in METRICS]
        return rows


def _weight_matrices(ctx) -> list:
    """(name, tensor) of the checkpoint's weight matrices: from the model when another analysis
    already loaded it, else straight from its safetensors files (no model to build)."""
    if "model" in ctx.__dict__:
        return [(n, p.detach()) for n, p in ctx.model.named_parameters() if is_weight_matrix(n, p)]
    from safetensors import safe_open

    from ..train.checkpoint import model_files

    out = []
    for path in model_files(ctx.checkpoint.path):
        with safe_open(str(path), framework="pt") as f:
            out += [(n, f.get_tensor(n)) for n in f.keys() if is_weight_matrix(n, f.get_slice(n))]
    return out
