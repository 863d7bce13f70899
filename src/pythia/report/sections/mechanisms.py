"""Mechanisms (Olsson et al. 2022; nostalgebraist 2020; Belrose et al. 2023): analyses `icl`,
`heads`, `lens`, `phase_change`.

Rows it reads:
- `icl`: `icl_score` per (member, step); `loss_at_position` with task = the position k;
- `heads`: per head (task `L{l}.H{h}`) and for the largest head (task `max`) the scores
  `prev_token`, `duplicate`, `induction`, `copying`;
- `lens`: per layer (task `layer{l}`) `kl_to_final`, `ce` and, with a tuned lens,
  `tuned_kl_to_final`, `tuned_ce`; `prediction_depth`;
- `phase_change`: per member without a step `induction_phase_step`, `induction_rise`,
  `icl_drop_step`, `icl_drop`; per shape (`{shape}/*`) `{metric}:{stat}`.
"""
from __future__ import annotations

import re

from ..plot import Figure, base_layout, dropdown_figure, heatmap_layout, heatmap_trace, natural, rows_by
from . import ReportData, Section, Table, section

ICL, HEADS, LENS, PHASE = "icl", "heads", "lens", "phase_change"
HEAD = re.compile(r"L(\d+)\.H(\d+)$")
LAYER = re.compile(r"layer(\d+)$")
MAX_POSITION_CURVES = 8


@section("mechanisms", "Mechanisms: in-context learning, induction heads, lenses", analyses=(ICL, HEADS, LENS, PHASE),
         order=45)
def render(data: ReportData, sec: Section) -> None:
    sec.intro = ("When does a model start to use its context, and which heads do it? The in-context learning score "
                 "(loss late in a window minus loss early on: negative once the context helps), the strongest "
                 "induction head (attention to the token after an earlier copy of the current one), and what each "
                 "layer already predicts (the logit lens: KL from the model's output). Olsson et al. see all three "
                 "change together early in training: a phase change.")
    sec.add(data.curve(data.of(ICL, metric="icl_score"), title="In-context learning score",
                       ytitle="L(late) - L(early), nats",
                       note="Mean loss at a late position of held-out windows minus at an early one; seeds as a band."),
            "no icl rows (run `pythia analyze RUN icl`)")
    sec.add(data.curve(data.of(HEADS, metric="induction", task="max"), title="Largest induction score",
                       ytitle="induction score",
                       note="Per checkpoint, the head attending most to the token after an earlier copy of the current "
                            "token, on repeated random tokens."),
            "no heads rows (run `pythia analyze RUN heads`)")
    sec.add(position_figure(data.of(ICL, metric="loss_at_position")))
    members = _member_order(data)
    sec.add(layer_step_figure(data.of(LENS, metric="kl_to_final"), members))
    sec.add(head_step_figure(data.of(HEADS, metric="induction"), members))
    tuned = data.of(LENS, metric="tuned_kl_to_final")
    if tuned:
        sec.tables.append(tuned_table(data.of(LENS, metric="kl_to_final"), tuned))
    phase = data.of(PHASE)
    if phase:
        sec.tables.append(phase_table(phase))
    elif data.of(HEADS):
        sec.notes.append("no phase-change step per member (run `pythia analyze RUN phase_change`)")


def _member_order(data: ReportData) -> list[str]:
    """Members with mechanism rows, the largest size's first seed first (the most to see)."""
    sizes = {r["member"]: r.get("size") or r["member"] for r in data.of((HEADS, LENS)) if r.get("step") is not None}
    known = data.palette.sizes  # the report's size order, smallest first
    rank = {s: -(known.index(s) if s in known else -1) for s in sizes.values()}
    return sorted(sizes, key=lambda m: (rank[sizes[m]], natural(m)))


def _grid(rows: list[dict], pattern: re.Pattern) -> tuple[list, list[int], dict]:
    """(labels sorted naturally, steps, {(label, step): value}) of rows whose task matches."""
    cells = {(r["task"], r["step"]): r["value"] for r in rows
             if r.get("step") is not None and r.get("value") is not None and pattern.match(r.get("task") or "")}
    labels = sorted({t for t, _ in cells}, key=lambda t: tuple(int(x) for x in pattern.match(t).groups()))
    return labels, sorted({s for _, s in cells}), cells


def grid_figure(rows: list[dict], members: list[str], pattern: re.Pattern, ytitle: str, *, title: str, note: str,
                **trace) -> Figure | None:
    """A (task x step) heat map per member, a menu over members; tasks matching `pattern`."""
    by_member = rows_by(rows, "member")
    options, most = [], 1
    for m in members:
        labels, steps, cells = _grid(by_member.get((m,), []), pattern)
        if labels:
            most = max(most, len(labels))
            options.append((m, [heatmap_trace([[cells.get((t, s)) for s in steps] for t in labels], steps, labels,
                                              **trace)]))
    return dropdown_figure(options, heatmap_layout(most, "step", ytitle), title=title, note=note, wide=True,
                           yaxis_titles=False)


def layer_step_figure(rows: list[dict], members: list[str]) -> Figure | None:
    """Logit-lens KL to the output, layer x step, a menu over members."""
    return grid_figure(rows, members, LAYER, "layer (0 = embeddings)",
                       title="Logit lens: KL(model output || layer's prediction) (menu: member)",
                       note="Each layer's residual stream read through the final LayerNorm and the unembedding; 0 at "
                            "the last layer by definition. Dark: the layer already predicts what the model outputs.",
                       zmin=0, colorscale="Magma", ztitle="KL (nats)", hover="%{y}, step %{x}: KL %{z:.3g}")


def head_step_figure(rows: list[dict], members: list[str]) -> Figure | None:
    """Induction score of every head, head x step, a menu over members."""
    return grid_figure(rows, members, HEAD, "head (layer.head)", title="Induction score of every head (menu: member)",
                       note="Attention from a repeated token to the token after its earlier copy, averaged over the "
                            "probe's repeats; an induction head lights up from its formation on.",
                       zmin=0, zmax=1, ztitle="induction", hover="%{y}, step %{x}: %{z:.3f}")


def position_figure(rows: list[dict]) -> Figure | None:
    """Loss by position (log x), one curve per checkpoint, a menu over members."""
    options, top = [], 2
    for (member,), group in sorted(rows_by(rows, "member").items(), key=lambda kv: natural(kv[0][0])):
        by_step: dict[int, list[dict]] = {}
        for r in group:
            if r.get("step") is not None and r.get("value") is not None:
                by_step.setdefault(r["step"], []).append(r)
        steps = sorted(by_step)
        if len(steps) > MAX_POSITION_CURVES:  # the first, the last and evenly spaced ones between
            pick = {round(i * (len(steps) - 1) / (MAX_POSITION_CURVES - 1)) for i in range(MAX_POSITION_CURVES)}
            steps = [steps[i] for i in sorted(pick)]
        traces = []
        for i, s in enumerate(steps):
            pts = sorted((int(r["task"]), r["value"]) for r in by_step[s] if (r.get("task") or "").isdigit())
            top = max([top] + [k for k, _ in pts])
            shade = int(40 + 180 * i / max(1, len(steps) - 1))
            traces.append({"type": "scatter", "mode": "lines+markers", "name": f"step {s}",
                           "x": [k for k, _ in pts], "y": [v for _, v in pts],
                           "line": {"color": f"rgb({255 - shade}, {80}, {shade})"},
                           "hovertemplate": f"step {s}<br>position %{{x}}: %{{y:.3f}} nats<extra></extra>"})
        options.append((member, traces))
    layout = base_layout("loss (nats)", top)
    layout["xaxis"] = {"title": {"text": "position k in the window"}, "type": "log"}
    return dropdown_figure(options, layout, title="Loss by position (menu: member)", yaxis_titles=False,
                           note="Mean next-token loss at each position of the held-out windows; a curve that falls "
                                "with k uses its context.")


def tuned_table(logit: list[dict], tuned: list[dict]) -> Table:
    plain = {(r["member"], r["step"], r["task"]): r["value"] for r in logit}
    rows = sorted(tuned, key=lambda r: (natural(r["member"]), r["step"] or 0, natural(r.get("task") or "")))
    return Table(["member", "step", "layer", "logit lens KL", "tuned lens KL"],
                 [[r["member"], r["step"], r["task"], _round(plain.get((r["member"], r["step"], r["task"]))),
                   _round(r["value"])] for r in rows],
                 "Tuned lens (an affine translator per layer, trained on the checkpoint) against the logit lens: "
                 "KL from the model's output, nats, on the held-out windows")


def phase_table(rows: list[dict]) -> Table:
    metrics = ("induction_phase_step", "induction_rise", "icl_drop_step", "icl_drop")
    cells: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("step") is None and r["metric"] in metrics:
            cells.setdefault(r["member"], {})[r["metric"]] = r["value"]
    table = [[m] + [_round(cells[m].get(k)) for k in metrics] for m in sorted(cells, key=natural)]
    spread = {}
    for r in rows:
        name, _, stat = r["metric"].partition(":")
        if stat and name == "induction_phase_step":
            spread.setdefault(r["member"], {})[stat] = r["value"]
    table += [[f"{shape} (seeds: median, min-max)", f"{s.get('median', 0):g} ({s.get('min', 0):g}-{s.get('max', 0):g})",
               "", "", ""] for shape, s in sorted(spread.items(), key=lambda kv: natural(kv[0]))]
    return Table(["member", "induction phase step", "induction rise", "ICL drop step", "ICL drop"], table,
                 "Phase change: the step where the largest induction score rises most between checkpoints, and where "
                 "the ICL score falls most")


def _round(v):
    return "" if v is None else round(float(v), 4)
