"""Memorization (Biderman et al. 2023, "Emergent and Predictable Memorization in Large Language
Models", arXiv 2304.11158): analyses `memorization` and `memorization_predictability`.

Rows it reads:
- `memorization`, per (member, step), task `positions=A:B[,...]` (the positions scored):
  `memorized_frac` (+ stderr), `mean_score` (or `mean_prefix`), `sequences`, and the score
  histogram `score_hist_K` (or `prefix_hist_K`): how many sequences matched K of the target's
  tokens; task `trained_step=A:B`: the same by the step each sequence was trained at; with
  duplicates=True, task `duplicates=A:B` (B exclusive, log2 bins 1:2, 2:3, 3:5, 5:9, ...;
  `duplicates=uncountable`): the same by how many times the scored window occurs in the training
  data up to the step, and task `duplicates`: `spearman` (count vs score) and `countable`.
- `memorization_predictability`, per target (member B, step t), task `predictor=A@stepS`:
  `precision` and `recall` of predicting B@t's memorized set from A@S's (y_true = B@t).
Any other memorization metric (e.g. against duplicate counts) is drawn generically below.
"""
from __future__ import annotations

import re

from ..plot import (Figure, dropdown_figure, heatmap_layout, heatmap_trace, members_figure, natural, rows_by,
                    size_key)
from . import ReportData, Section, section
from .generic import metric_figures

MEM, PRED = "memorization", "memorization_predictability"
HIST = re.compile(r"(score|prefix)_hist_(\d+)$")
RANGE = re.compile(r"positions=\d+:\d+")
PREDICTOR = re.compile(r"predictor=(.+)@step(\d+)$")
DUP_BIN = re.compile(r"duplicates=(\d+):(\d+)$")
KNOWN = {"memorized_frac", "mean_score", "mean_prefix", "sequences", "memorized"}


@section("memorization", "Memorization", analyses=(MEM, PRED, "memorization_export"), order=30)
def render(data: ReportData, sec: Section) -> None:
    sec.intro = ("Which training sequences a checkpoint reproduces verbatim: prompted with the first 32 "
                 "tokens of a training sequence, does greedy decoding give the next 32 exactly (memorized), "
                 "and how many of them (the score)?")
    rows = data.of(MEM)
    summary = [r for r in rows if (r.get("task") or "").startswith("positions=")]
    if not rows:
        sec.notes.append("no memorization scores (run `pythia analyze RUN memorization`)")
    for label, family in families(summary).items():
        for metric, what in (("memorized_frac", "memorized fraction"), ("mean_score", "mean score"),
                             ("mean_prefix", "mean matched prefix (tokens)")):
            sec.add(data.curve([r for r in family if r["metric"] == metric],
                               title=f"{what.capitalize()} over training ({label})", ytitle=what))
        sec.add(histogram_figure(data, family, label), "no score histogram (score_hist_K rows)")
    if rows and not any(r["metric"] == "memorized_frac" for r in summary):
        sec.notes.append("no memorized_frac rows over a positions=... range")
    sec.add(when_figure(data, rows))
    sec.add(duplicates_figure(data, rows))
    sec.add(data.curve([r for r in rows if r.get("task") == "duplicates" and r["metric"] == "spearman"],
                       title="Rank correlation of duplicate count and score over training", ytitle="Spearman rho",
                       note="Spearman correlation, over the scored sequences, of how many times a sequence's "
                            "tokens occur in the data trained on so far and how many of its tokens are reproduced."))
    other = [r for r in rows if r["metric"] not in KNOWN and not HIST.match(r["metric"])
             and not (r.get("task") or "").startswith(("trained_step=", "duplicates"))]
    sec.figures += metric_figures(data, other, title="memorization")
    pred = data.of(PRED)
    if pred:
        figs = predictability_figures(pred)
        sec.figures += figs
        if not figs:
            sec.notes.append("predictability: precision and recall are undefined at every pair (no checkpoint "
                             "memorized a sequence, or none was predicted)")
    elif rows:
        sec.notes.append("no predictability matrices (run `pythia analyze RUN memorization_predictability`)")


def families(rows: list[dict]) -> dict[str, list[dict]]:
    """Summary rows as curves over steps. By default a checkpoint scores the positions it was
    trained on, so the task (`positions=0:{step x batch}`) differs at every step: tasks that
    differ only in their range are one family, unless two of them score the same (member,
    step), which makes them separate ranges (`--positions A:B`), drawn separately."""
    by_family: dict[str, list[dict]] = {}
    for r in rows:
        family = RANGE.sub("positions=A:B", r["task"], count=1)
        by_family.setdefault(family, []).append(r)
    out: dict[str, list[dict]] = {}
    for family, group in sorted(by_family.items()):
        tasks = sorted({r["task"] for r in group}, key=natural)
        seen: dict[tuple, str] = {}
        clash = False
        for r in group:
            key = (r["member"], r["step"], r["metric"])
            clash |= seen.setdefault(key, r["task"]) != r["task"]
        if clash or len(tasks) == 1:
            for (task,), exact in sorted(rows_by(group, "task").items(), key=lambda kv: natural(kv[0][0])):
                out[task] = exact
        else:
            out[f"positions {tasks[0].partition('=')[2]} to {tasks[-1].partition('=')[2]}, growing with the step"] = group
    return out


def histogram_figure(data: ReportData, rows: list[dict], label: str) -> Figure | None:
    """Share of sequences per score, summed over the seeds of a size; a menu picks the step."""
    hist: dict[int, dict[str, dict[int, float]]] = {}
    for r in rows:
        m = HIST.match(r["metric"])
        if m and r.get("step") is not None and r.get("value") is not None:
            bins = hist.setdefault(r["step"], {}).setdefault(r.get("size") or r["member"], {})
            bins[int(m[2])] = bins.get(int(m[2]), 0.0) + float(r["value"])
    options = []
    for step in sorted(hist, reverse=True):
        traces = []
        for size in sorted(hist[step], key=size_key):
            bins = hist[step][size]
            total = sum(bins.values()) or 1.0
            ks = sorted(bins)
            traces.append({"type": "bar", "name": size, "x": ks, "y": [bins[k] / total for k in ks],
                           "marker": {"color": data.palette(size)},
                           "hovertemplate": f"{size}<br>%{{x}} tokens matched: %{{y:.3%}}<extra></extra>"})
        options.append((f"step {step}", traces))
    layout = {"barmode": "group", "xaxis": {"title": {"text": "target tokens matched by greedy decoding"}},
              "yaxis": {"type": "log", "title": {"text": "share of sequences"}}, "height": 380,
              "margin": {"l": 60, "r": 10, "t": 10, "b": 50}, "template": "plotly_white"}
    return dropdown_figure(options, layout, title=f"Score histogram ({label}; menu: step, latest first)",
                           note="Log scale: most sequences match few tokens; the right-most bar is the memorized.",
                           yaxis_titles=False)


def when_figure(data: ReportData, rows: list[dict]) -> Figure | None:
    """At each member's last scored step: memorized fraction by the step a sequence was trained at."""
    when = [r for r in rows if r["metric"] == "memorized_frac" and (r.get("task") or "").startswith("trained_step=")
            and r.get("step") is not None and r.get("value") is not None]
    traces = []
    for (member,), group in sorted(rows_by(when, "member").items(), key=lambda kv: natural(kv[0][0])):
        last = max(r["step"] for r in group)
        pts = []
        for r in group:
            m = re.match(r"trained_step=(\d+):(\d+)", r["task"])
            if m and r["step"] == last:
                pts.append(((int(m[1]) + int(m[2])) / 2, float(r["value"]), r["task"][len("trained_step="):]))
        pts.sort()
        size = group[0].get("size") or member
        traces.append({"type": "scatter", "mode": "lines+markers", "name": f"{member} @ step {last}",
                       "x": [p[0] for p in pts], "y": [p[1] for p in pts], "text": [p[2] for p in pts],
                       "line": {"color": data.palette(size)}, "legendgroup": size,
                       "hovertemplate": f"{member}<br>trained at steps %{{text}}<br>memorized %{{y:.3%}}<extra></extra>"})
    if not traces:
        return None
    layout = {"xaxis": {"title": {"text": "step at which the sequence was trained"}},
              "yaxis": {"title": {"text": "memorized fraction"}}, "height": 380,
              "margin": {"l": 60, "r": 10, "t": 10, "b": 50}, "template": "plotly_white"}
    return members_figure(traces, layout, title="Memorized vs when trained (each member's last checkpoint)",
                          note="Recently trained sequences are memorized more often than early ones.")


def _bin_label(lo: int, hi: int) -> str:
    return str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}"


def duplicates_figure(data: ReportData, rows: list[dict]) -> Figure | None:
    """At each member's last step with duplicate counts: memorized fraction per log2 bin of how
    many times the scored window occurs in the data trained on up to that step."""
    frac = [r for r in rows if r["metric"] == "memorized_frac" and DUP_BIN.match(r.get("task") or "")
            and r.get("step") is not None and r.get("value") is not None]
    seqs = {(r["member"], r["step"], r["task"]): r["value"] for r in rows if r["metric"] == "sequences"}
    bins = sorted({tuple(map(int, DUP_BIN.match(r["task"]).groups())) for r in frac})
    traces = []
    for (member,), group in sorted(rows_by(frac, "member").items(), key=lambda kv: natural(kv[0][0])):
        last = max(r["step"] for r in group)
        at = {tuple(map(int, DUP_BIN.match(r["task"]).groups())): r for r in group if r["step"] == last}
        keys = [b for b in bins if b in at]
        size = group[0].get("size") or member
        traces.append({"type": "scatter", "mode": "lines+markers", "name": f"{member} @ step {last}",
                       "x": [_bin_label(*b) for b in keys], "y": [float(at[b]["value"]) for b in keys],
                       "text": [seqs.get((member, last, at[b]["task"])) for b in keys],
                       "line": {"color": data.palette(size)}, "legendgroup": size,
                       "hovertemplate": f"{member}<br>occurs %{{x}} times<br>memorized %{{y:.3%}} of "
                                        "%{text} sequences<extra></extra>"})
    if not traces:
        return None
    layout = {"xaxis": {"title": {"text": "occurrences of the sequence in the data trained on so far (log2 bins)"},
                        "type": "category", "categoryorder": "array",
                        "categoryarray": [_bin_label(*b) for b in bins]},
              "yaxis": {"title": {"text": "memorized fraction"}}, "height": 380,
              "margin": {"l": 60, "r": 10, "t": 10, "b": 50}, "template": "plotly_white"}
    return members_figure(traces, layout, title="Memorized vs duplicates (each member's last checkpoint)",
                          note="Sequences seen more often are memorized more often (Biderman et al. 2023). Sequences "
                               "spanning two documents cannot be counted and are left out (task "
                               "duplicates=uncountable).")


def predictability_figures(rows: list[dict]) -> list[Figure]:
    """Precision and recall matrices: across sizes at one step, across checkpoints of one member."""
    cells: dict[tuple, dict[str, float]] = {}
    for r in rows:
        m = PREDICTOR.match(r.get("task") or "")
        if m and r.get("step") is not None and r["metric"] in ("precision", "recall"):
            cells.setdefault((m[1], int(m[2]), r["member"], int(r["step"])), {})[r["metric"]] = r.get("value")
    figs = []
    across_sizes = {}
    for (a, s, b, t), v in cells.items():
        if s == t:
            across_sizes.setdefault(t, {})[(a, b)] = v
    options = []
    for t in sorted(across_sizes, reverse=True):
        names = sorted({n for ab in across_sizes[t] for n in ab}, key=natural)
        for metric in ("precision", "recall"):
            z = [[across_sizes[t].get((a, b), {}).get(metric) for b in names] for a in names]
            if any(v is not None for row in z for v in row):
                options.append((f"{metric}, step {t}", [_heat(z, names, names, metric)]))
    if options:
        figs.append(_heat_menu(options, "Across members, same step: predictor (rows) vs target (columns)",
                               "predictor member", "target member"))
    options = []
    for member in sorted({b for (_, _, b, _) in cells}, key=natural):
        same = {(s, t): v for (a, s, b, t), v in cells.items() if a == b == member}
        steps = sorted({x for st in same for x in st})
        for metric in ("precision", "recall"):
            z = [[same.get((s, t), {}).get(metric) for t in steps] for s in steps]
            if any(v is not None for row in z for v in row):
                options.append((f"{member}: {metric}", [_heat(z, steps, steps, metric)]))
    if options:
        figs.append(_heat_menu(options, "Across checkpoints of one member: predictor step (rows) vs target step "
                                        "(columns)", "predictor step", "target step"))
    return figs


def _heat(z, x, y, metric):
    return heatmap_trace(z, x, y, zmin=0, zmax=1, ztitle=metric,
                         hover=f"predictor %{{y}}, target %{{x}}: {metric} %{{z:.3f}}")


def _heat_menu(options, title, ytitle, xtitle) -> Figure:
    layout = heatmap_layout(max(len(t[0]["y"]) for _, t in options), xtitle, ytitle)
    return dropdown_figure(options, layout, title=title, yaxis_titles=False, wide=True,
                           note="Precision: of the predicted sequences, the share the target memorized; recall: of "
                                "the target's memorized sequences, the share predicted. Blank: undefined (nothing "
                                "predicted or memorized).")
