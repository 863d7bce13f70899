"""The section of an analysis no renderer knows: each (task, metric) against step, one colour
per size with the seeds as a band; run-level rows (no step) as a table. Also the helpers the
other sections use for the same kind of plot."""
from __future__ import annotations

from ..plot import Figure, base_layout, curve_traces, dropdown_figure, group_series, natural, rows_by
from . import ReportData, Section, Table

MAX_SEPARATE = 6
"""More (task, metric) pairs than this share one figure with a menu."""
MAX_TABLE_ROWS = 200


def label(task: str, metric: str) -> str:
    return f"{metric} ({task})" if task else metric


def metric_figures(data: ReportData, rows: list[dict], *, title: str, note: str = "",
                   max_separate: int = MAX_SEPARATE, ylog=None) -> list[Figure]:
    """Metric vs step per (task, metric) of `rows`: one figure each, or one figure with a menu
    when there are more than `max_separate`. `ylog(metric) -> bool` picks log y axes."""
    groups = rows_by([r for r in rows if r.get("step") is not None and r.get("value") is not None], "task", "metric")
    keys = sorted(groups, key=lambda k: (natural(k[0]), natural(k[1])))
    if not keys:
        return []
    if len(keys) <= max_separate:
        figs = [data.curve(groups[k], title=f"{title}: {label(*k)}", ytitle=k[1], note=note,
                           ylog=bool(ylog and ylog(k[1]))) for k in keys]
        return [f for f in figs if f is not None]
    options, max_step = [], 0
    for k in keys:
        series = group_series(groups[k])
        max_step = max([max_step] + [st for s in series for v in s.members.values() for st in v])
        options.append((label(*k), [t for s in series for t in curve_traces(s, data.palette, data.own_suites)]))
    fig = dropdown_figure(options, base_layout("", max_step),
                          title=f"{title}: {len(keys)} metrics (pick one in the menu)", note=note)
    return [fig] if fig else []


def run_level_table(rows: list[dict], caption: str) -> Table | None:
    """Rows without a step (whole-run results) as a table."""
    flat = [r for r in rows if r.get("step") is None]
    if not flat:
        return None
    flat.sort(key=lambda r: (natural(r.get("member") or ""), r.get("task") or "", r.get("metric") or ""))
    cut = flat[:MAX_TABLE_ROWS]
    extra = f" (first {MAX_TABLE_ROWS} of {len(flat)}; all in results.csv)" if len(flat) > len(cut) else ""
    return Table(["member", "task", "metric", "value"],
                 [[r.get("member"), r.get("task") or "", r.get("metric"), r.get("value")] for r in cut], caption + extra)


def render_generic(analysis: str):
    def render(data: ReportData, sec: Section) -> None:
        rows = data.of(analysis)
        sec.intro = (f"Rows of the {analysis} analysis, drawn generically: each task and metric against "
                     "the training step, one colour per size, the seeds as a band.")
        sec.figures += metric_figures(data, rows, title=analysis)
        table = run_level_table(rows, f"{analysis}: results without a step")
        if table:
            sec.tables.append(table)
        if not sec.figures and not table:
            sec.notes.append(f"{analysis}: no row has a value")
    return render
