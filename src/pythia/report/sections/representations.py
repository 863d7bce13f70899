"""Representations (pico-analyze's learning dynamics; Kornblith et al. 2019): analyses
`representations` and `optimizer_state`.

Rows it reads:
- `representations`, per (member, step): task `layer{l}`, metrics `cka_final`, `cka_previous`,
  `cka_seeds`; task = a weight matrix's name, metrics `per`, `condition`, `hoyer`, `gini`,
  `grad_per`, `grad_hoyer`, `grad_norm` (and `train_grad_*` when the trainer kept gradients).
- `optimizer_state`, per (member, step): task = a weight matrix's name or `all` (the mean over
  matrices), metrics `update_ratio`, `grad_snr`, `outlier_frac`.
"""
from __future__ import annotations

import re

from . import ReportData, Section, section
from .generic import metric_figures

REPS, OPT = "representations", "optimizer_state"
CKA = (("cka_final", "CKA with the final checkpoint", "linear CKA of each layer's representations of the probe "
        "with the same run's last checkpoint (1 there)."),
       ("cka_seeds", "CKA across seeds", "mean linear CKA with the other seeds of the size at the same step."),
       ("cka_previous", "CKA with the previous checkpoint", "linear CKA with the previous checkpoint analysed."))
MATRIX_METRICS = ("per", "hoyer", "grad_per", "grad_hoyer")
OPT_METRICS = ("update_ratio", "outlier_frac", "grad_snr")
LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@section("representations", "Representations", analyses=(REPS, OPT), order=45)
def render(data: ReportData, sec: Section) -> None:
    sec.intro = ("How each layer's representations settle over training, how alike seeds become, and what "
                 "the weights, their gradients and the optimizer's own state look like on the way: linear CKA "
                 "of the probe's representations, proportional effective rank (PER) and Hoyer sparsity of chosen "
                 "weight matrices and their gradients, and, from the saved AdamW moments, the size of the next "
                 "update relative to the weights and the share of outlier moments.")
    rows = data.of(REPS)
    for metric, title, note in CKA:
        sec.figures += metric_figures(data, [r for r in rows if r["metric"] == metric], title=title, note=note,
                                      max_separate=0)
    if rows and not any(r["metric"].startswith("cka_") for r in rows):
        sec.notes.append("no CKA rows (they need at least two analysed checkpoints of a member)")
    chosen = chosen_matrices(rows)
    picked = [dict(r, task=short_name(r["task"])) for r in rows if r["metric"] in MATRIX_METRICS and r["task"] in chosen]
    sec.figures += metric_figures(data, picked, title="Weights and probe gradients", max_separate=0,
                                  note="PER: proportional effective rank of the singular values; Hoyer: sparsity "
                                       "(0 dense, 1 one entry); grad_*: of the probe batch's gradient. Every "
                                       "matrix is in results.csv.")
    if not rows:
        sec.notes.append("no representation statistics (run `pythia analyze RUN representations`)")
    opt = data.of(OPT)
    mean = [r for r in opt if r.get("task") == "all" and r["metric"] in OPT_METRICS]
    sec.figures += metric_figures(data, mean, title="Optimizer state (mean over matrices)", max_separate=len(OPT_METRICS),
                                  ylog=lambda m: m in ("update_ratio", "grad_snr"),
                                  note="update_ratio: ||lr m^/(sqrt(v^)+eps)|| / ||theta||; outlier_frac: share of "
                                       "entries with |m^| > 4 sqrt(v^ - m^2); grad_snr: mean m^2/v^.")
    per_matrix = [dict(r, task=short_name(r["task"])) for r in opt
                  if r["task"] in chosen_matrices(opt) and r["metric"] in OPT_METRICS[:2]]
    sec.figures += metric_figures(data, per_matrix, title="Optimizer state per matrix", max_separate=0,
                                  ylog=lambda m: m == "update_ratio")
    if not opt:
        sec.notes.append("no optimizer-state statistics (run `pythia analyze RUN optimizer_state` on a run that "
                         "keeps optimizer state)")


def short_name(task: str) -> str:
    """gpt_neox.layers.1.mlp.dense_4h_to_h.weight -> layers.1.mlp.dense_4h_to_h."""
    return task.removeprefix("gpt_neox.").removesuffix(".weight")


def chosen_matrices(rows: list[dict]) -> set[str]:
    """The matrices drawn: those of the middle block of the shallowest size that every size has,
    and the two embeddings (the figures' menus stay short; results.csv has every matrix)."""
    tasks = {r.get("task") or "" for r in rows if (r.get("task") or "").endswith(".weight")}
    depth_by_size: dict[str, int] = {}
    for r in rows:
        m = LAYER.search(r.get("task") or "")
        if m:
            size = r.get("size") or r.get("member") or ""
            depth_by_size[size] = max(depth_by_size.get(size, 0), int(m[1]) + 1)
    middle = min(depth_by_size.values()) // 2 if depth_by_size else None
    return {t for t in tasks if (m := LAYER.search(t)) is None or int(m[1]) == middle}


__all__ = ["chosen_matrices", "render", "short_name"]
