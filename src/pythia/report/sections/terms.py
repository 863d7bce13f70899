"""Term frequency (Pythia paper §5, Biderman et al. 2023; after Razeghi et al. 2022): analyses
`term_frequency` and `term_counts`.

Rows it reads:
- `term_frequency`, per (member, step): for each item family member (task
  `{family}_{x1}[@Nshot]`, e.g. num_reasoning_arithmetic_addition_12) metrics `acc` and
  `frequency` (occurrences of x1 seen in training by the step); per family (task
  `{family}[@Nshot]`) `gap` (accuracy of the most minus the least frequent) and `spearman`.
- `term_counts`, per (member, step): task = the term, metric `count` (occurrences trained on).
"""
from __future__ import annotations

import json
import re

from ..plot import base_layout, dropdown_figure, natural, rows_by, step_axis
from . import ReportData, Section, section
from .generic import metric_figures

TF, COUNTS = "term_frequency", "term_counts"
ITEM = re.compile(r"(.+)_(\d+)(@\d+shot)?$")
MAX_TERMS = 20
MAX_SCATTER_STEPS = 24
"""Checkpoints in the accuracy-vs-frequency menu (Pythia's 154 x 50 members x 100 items would be
770,000 points)."""


@section("term-frequency", "Term frequency", analyses=(TF, COUNTS), order=50)
def render(data: ReportData, sec: Section) -> None:
    sec.intro = ("Does a checkpoint answer better about what it has seen more often? Accuracy on each "
                 "item against how often its term occurred in the training data up to that checkpoint.")
    rows = data.of(TF)
    items = _items(rows)
    for family in sorted(items, key=natural):
        sec.add(scatter_figure(data, family, items[family]))
    if rows and not items:
        sec.notes.append("no per-item acc and frequency rows (tasks FAMILY_X with both metrics)")
    aggregate = [r for r in rows if r["metric"] in ("gap", "spearman")]
    sec.figures += metric_figures(data, aggregate, title="Frequency effect",
                                  note="gap: accuracy of the most frequent terms minus the least frequent (x 100); "
                                       "spearman: rank correlation of frequency and accuracy.")
    if rows and not aggregate:
        sec.notes.append("no gap or spearman rows")
    counts = data.of(COUNTS, metric="count")
    sec.add(counts_figure(data, counts), "" if counts or not data.of(COUNTS) else "term_counts: no count rows")
    if not rows:
        sec.notes.append("no term-frequency study (run `pythia analyze RUN term_frequency`)")


def _items(rows: list[dict]) -> dict[str, dict[tuple[str, int], dict[str, dict]]]:
    """{family: {(member, step): {x1: {acc, frequency, size}}}} for items with both metrics."""
    out: dict = {}
    for r in rows:
        m = ITEM.match(r.get("task") or "")
        if not m or r["metric"] not in ("acc", "frequency") or r.get("step") is None or r.get("value") is None:
            continue
        family = m[1] + (m[3] or "")
        cell = out.setdefault(family, {}).setdefault((r["member"], r["step"]), {}).setdefault(int(m[2]), {})
        cell[r["metric"]], cell["size"] = float(r["value"]), r.get("size") or r["member"]
    return {f: {k: {x: c for x, c in v.items() if "acc" in c and "frequency" in c} for k, v in by.items()}
            for f, by in out.items() if any("acc" in c and "frequency" in c for v in by.values() for c in v.values())}


def menu_steps(steps: list[int], most: int = MAX_SCATTER_STEPS) -> list[int]:
    """At most `most` of `steps`, latest first: the last, the first and evenly spaced between."""
    steps = sorted(steps)
    if len(steps) > most:
        steps = [steps[i] for i in sorted({round(k * (len(steps) - 1) / (most - 1)) for k in range(most)})]
    return steps[::-1]


def scatter_figure(data: ReportData, family: str, cells: dict):
    """Accuracy vs frequency, one point per term, a menu over checkpoints (latest first; at most
    `MAX_SCATTER_STEPS` of them: each holds every member's items)."""
    options, top = [], 0.0
    every = {s for _, s in cells}
    shown = menu_steps(list(every))
    for step in shown:
        traces = []
        for member in sorted({m for m, s in cells if s == step}, key=natural):
            pts = sorted(cells[(member, step)].items())
            if not pts:
                continue
            size = pts[0][1]["size"]
            top = max([top] + [c["frequency"] for _, c in pts])
            traces.append({"type": "scatter", "mode": "markers", "name": member, "legendgroup": size,
                           "x": [c["frequency"] + 1 for _, c in pts], "y": [c["acc"] for _, c in pts],
                           "customdata": [[x, c["frequency"]] for x, c in pts],
                           "marker": {"color": data.palette(size), "size": 6, "opacity": 0.7},
                           "hovertemplate": f"{member}<br>term %{{customdata[0]}}: seen %{{customdata[1]}} times"
                                            "<br>accuracy %{y:.3f}<extra></extra>"})
        options.append((f"step {step}", traces))
    layout = base_layout("accuracy", int(top))
    layout["xaxis"] = step_axis(int(top), "occurrences in training so far")
    cut = f" {len(shown)} of the {len(every)} checkpoints (all in results.csv)." if len(shown) < len(every) else ""
    return dropdown_figure(options, layout, title=f"{family}: accuracy vs term frequency (menu: checkpoint)",
                           yaxis_titles=False, note=f"Counts + 1 on a log axis so that unseen terms (0) show.{cut}")


def counts_figure(data: ReportData, rows: list[dict]):
    """Occurrences of each term trained on up to each step; a menu picks the member."""
    options, max_step, cut = [], 0, False
    for (member,), group in sorted(rows_by(rows, "member").items(), key=lambda kv: natural(kv[0][0])):
        terms = {k[0]: sorted((r["step"], r["value"]) for r in g if r.get("step") is not None and r.get("value") is not None)
                 for k, g in rows_by(group, "task").items()}
        top = sorted((t for t in terms if terms[t]), key=lambda t: -terms[t][-1][1])[:MAX_TERMS]
        cut |= len(terms) > len(top)
        traces = []
        for term in sorted(top, key=natural):
            pts = terms[term]
            max_step = max(max_step, pts[-1][0])
            traces.append({"type": "scatter", "mode": "lines+markers" if len(pts) <= 40 else "lines",
                           "name": json.dumps(term, ensure_ascii=False),  # quoted: " None" is not "None"
                           "x": [s + 1 for s, _ in pts], "y": [v for _, v in pts], "customdata": [s for s, _ in pts],
                           "hovertemplate": "%{fullData.name}<br>step %{customdata}: %{y} occurrences<extra></extra>"})
        options.append((member, traces))
    note = f"The {MAX_TERMS} most frequent terms of each member." if cut else ""
    return dropdown_figure(options, base_layout("occurrences trained on", max_step),
                           title="Term counts over training (menu: member)", note=note, yaxis_titles=False)
