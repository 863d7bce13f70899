"""Tracing (OLMoTrace, Liu et al. 2025, arXiv 2504.07096, with the step each span was first seen):
analysis `trace`.

Rows it reads, per (member, step), task `memorized@{position}` or `generation{i}`: `spans`,
`covered`, `seen`, `longest`, and for memorized sequences `trained_step` and `first_seen`;
`trace_contamination`, per (member, step), task = an lm-eval task: `contaminated` (share of its
items seen by the step), `longest_seen`, `items`. The
texts and their spans are the analysis' artifacts (RESULTS/artifacts/trace/{member}/stepN/
traces.json, read through `ReportData.results_dir`): each traced text is drawn token by token,
the tokens of a span coloured by the step it was first trained on.
"""
from __future__ import annotations

import html

from ..plot import Figure, dropdown_figure, members_figure, natural, rows_by
from . import ReportData, Section, Table, section

TRACE, CONTAMINATION = "trace", "trace_contamination"
WIDTH = 12  # tokens per row of a drawn text
MAX_TEXTS = 40  # texts in the menu (the latest checkpoints first)


@section("tracing", "Tracing", analyses=(TRACE, CONTAMINATION), order=55)
def render(data: ReportData, sec: Section) -> None:
    sec.intro = ("Where a model's text comes from, and when it was learned: the longest spans of memorized "
                 "sequences and greedy generations found verbatim in the data the member trained on (OLMoTrace's "
                 "filters), each coloured by the first step at which it was trained; the table marks the spans "
                 "the checkpoint that wrote the text had not seen yet.")
    from ...analysis.trace import load_traces

    stored = load_traces(data.results_dir) if data.results_dir is not None else []
    texts = [(f"{p['member']} @ step {p['step']}: {t.get('label', '')}", p, t) for p in stored for t in p["traces"]]
    texts.sort(key=lambda x: (-x[1]["step"], natural(x[1]["member"]), x[2].get("kind") != "memorized",
                              natural(x[2].get("label", ""))))
    if data.of(TRACE) or stored:
        sec.add(text_figure(texts[:MAX_TEXTS]), "no traced texts stored (RESULTS/artifacts/trace): run "
                "`pythia analyze RUN trace`" if not stored else "the stored traces hold no text")
    table = spans_table(texts[:MAX_TEXTS])
    if table is not None:
        sec.tables.append(table)
    sec.add(memorized_figure(data, data.of(TRACE)))
    for (task,), rows in sorted(rows_by(data.of(CONTAMINATION, metric="contaminated"), "task").items()):
        sec.add(data.curve(rows, title=f"{task}: items seen in training, by step", ytitle="share of items",
                           note="Share of the task's items (prompt + answer) one of whose spans of at least "
                                "`contamination_min` tokens the checkpoint had trained on (trace_contamination)."))


def _shown(token: str) -> str:
    """A token as a cell label: newlines and leading spaces visible, HTML escaped."""
    token = token.replace("\n", "\u21b5").replace("\t", "\u21e5")
    stripped = token.lstrip(" ")
    return html.escape("\u00b7" * (len(token) - len(stripped)) + stripped, quote=False)  # plotly reads &lt; &gt; &amp;


def text_figure(texts: list[tuple[str, dict, dict]]) -> Figure | None:
    """Each text as a grid of tokens; a span's tokens coloured by the span's first step."""
    options, top, rows_max = [], 1, 1
    for label, payload, t in texts:
        tokens = t.get("token_texts") or [str(i) for i in t["tokens"]]
        n = len(tokens)
        if not n:
            continue
        top = max(top, int(t.get("trained_steps") or 1))
        first = [None] * n
        info = [""] * n
        for s in t["spans"]:
            seen = s["count_until_step"]
            for i in range(s["start"], s["end"]):
                first[i] = s["first_step"]
                info[i] = (f"span [{s['start']}:{s['end']}] {html.escape(repr(s['text'] or ''), quote=False)}<br>trained "
                           f"{s['count']}x, first at step {s['first_step']}, last {s['last_step']}<br>seen by "
                           f"step {t['until_step']}: {seen}x")
        rows = -(-n // WIDTH)
        rows_max = max(rows_max, rows)
        cell = lambda lst, r: [lst[r * WIDTH + c] if r * WIDTH + c < n else None for c in range(WIDTH)]  # noqa: E731
        z = [cell(first, r) for r in range(rows)]
        text = [[v if v is not None else "" for v in cell([_shown(x) for x in tokens], r)] for r in range(rows)]
        hover = [[v or "not in a kept span" for v in cell(info, r)] for r in range(rows)]
        trace = {"type": "heatmap", "z": z, "text": text, "customdata": hover, "texttemplate": "%{text}",
                 "x": list(range(WIDTH)), "y": [f"tokens {r * WIDTH}-" for r in range(rows)],
                 "zmin": 0, "zmax": top, "colorscale": "Viridis", "xgap": 2, "ygap": 2, "textfont": {"size": 13},
                 "colorbar": {"title": {"text": "first step seen"}},
                 "hovertemplate": "%{text}<br>%{customdata}<extra></extra>"}
        options.append((label, [trace]))
    if not options:
        return None
    layout = {"xaxis": {"visible": False}, "yaxis": {"autorange": "reversed", "type": "category"},
              "height": 90 + 46 * rows_max, "margin": {"l": 90, "r": 10, "t": 10, "b": 10},
              "template": "plotly_white", "plot_bgcolor": "#f4f4f4"}
    return dropdown_figure(options, layout, wide=True, yaxis_titles=False,
                           title="Traced texts (menu: member, checkpoint, text)",
                           note="Coloured tokens belong to a span found verbatim in the training data, coloured by "
                                "the first step it was trained at; grey ones to none kept (OLMoTrace keeps the "
                                "longest few, at most 5 per 100 tokens by default). Hover for counts.")


def spans_table(texts: list[tuple[str, dict, dict]]) -> Table | None:
    rows = []
    for label, payload, t in texts:
        for s in t["spans"]:
            doc = (s.get("documents") or [{}])[0]
            src = doc.get("source") or {}
            where = f"{src.get('file', '')}:{src.get('location', '')}".strip(":") if src else ""
            unseen = "" if s["count_until_step"] else " (not yet seen)"
            rows.append([label, repr(s["text"]) if s["text"] is not None else str(s.get("tokens")), s["count"],
                         f"{s['count_until_step']}{unseen}", s["first_step"], s["last_step"],
                         f"{doc.get('document', '')} {where}".strip()])
    if not rows:
        return None
    return Table(["text", "span", "trained", "seen by the checkpoint", "first step", "last step", "a document"],
                 rows, "Spans of the texts above (all occurrences counted over training; documents in the "
                       "artifacts)")


def memorized_figure(data: ReportData, rows: list[dict]) -> Figure | None:
    """Per memorized sequence: the step its own position was trained at against the first step any
    of its spans was seen (below the diagonal: seen before, e.g. a duplicate)."""
    cells: dict = {}
    for r in rows:
        if (r.get("task") or "").startswith("memorized@") and r["metric"] in ("trained_step", "first_seen"):
            cells.setdefault((r["member"], r["step"], r["task"]), {})[r["metric"]] = r["value"]
            cells[(r["member"], r["step"], r["task"])]["size"] = r.get("size") or r["member"]
    traces = []
    for (member,), group in sorted(rows_by([{"member": k[0], "key": k} for k in cells], "member").items(),
                                   key=lambda kv: natural(kv[0][0])):
        pts = [(cells[g["key"]], g["key"]) for g in group if "first_seen" in cells[g["key"]]]
        if not pts:
            continue
        size = pts[0][0]["size"]
        traces.append({"type": "scatter", "mode": "markers", "name": member, "legendgroup": size,
                       "x": [c["trained_step"] for c, _ in pts], "y": [c["first_seen"] for c, _ in pts],
                       "text": [f"{k[2]} @ step {k[1]}" for _, k in pts], "marker": {"color": data.palette(size)},
                       "hovertemplate": f"{member} %{{text}}<br>trained at step %{{x}}<br>a span first seen at "
                                        "step %{y}<extra></extra>"})
    if not traces:
        return None
    layout = {"xaxis": {"title": {"text": "step its position was trained"}},
              "yaxis": {"title": {"text": "first step one of its spans was seen"}}, "height": 380,
              "margin": {"l": 60, "r": 10, "t": 10, "b": 50}, "template": "plotly_white"}
    return members_figure(traces, layout, title="Memorized sequences: when trained vs when their spans were first seen",
                          note="On the diagonal: a span first met at the sequence's own position; below it: seen "
                               "earlier elsewhere (a duplicate or common phrase).")
