"""Benchmarks: lm-evaluation-harness results at every checkpoint (analysis `eval`), with
published results imported by `pythia results import` (analysis `eval_import`, their own suite
name, e.g. Pythia's) drawn dashed beside the suite's own.

Rows: task = the lm-eval task name, `task@5shot` when few-shot; metric = lm-eval's name
(acc, acc_norm, perplexity, word_perplexity, bits_per_byte, exact_match,strict-match, ...).
One figure per task, a menu for its metrics; perplexities on a log axis.
"""
from __future__ import annotations

from ..plot import base_layout, curve_traces, dropdown_figure, group_series, natural, rows_by, size_key
from . import ReportData, Section, Table, section

OWN, IMPORTED = "eval", "eval_import"
FIRST_METRICS = ("acc", "acc_norm", "exact_match", "perplexity")


def _metric_order(metric: str) -> tuple:
    base = metric.partition(",")[0]
    return (FIRST_METRICS.index(base) if base in FIRST_METRICS else len(FIRST_METRICS), natural(metric))


def is_perplexity(metric: str) -> bool:
    return "perplexity" in metric.partition(",")[0]


@section("benchmarks", "Benchmarks", analyses=(OWN, IMPORTED), order=20)
def render(data: ReportData, sec: Section) -> None:
    own, imported = data.of(OWN), data.of(IMPORTED)
    sec.intro = ("Benchmark scores (lm-evaluation-harness) against training step, one figure per task "
                 "(a menu picks the metric), one colour per size, the seeds as a band; imported results "
                 "(other suites, e.g. Pythia's published evaluations) dashed beside the suite's own.")
    if not own:
        sec.notes.append("no benchmark results of this suite (run `pythia analyze RUN eval --tasks ...`); "
                         "imported results only")
    by_task = rows_by([r for r in own + imported if r.get("step") is not None and r.get("value") is not None], "task")
    own_tasks = {r.get("task") or "" for r in own}
    for (task,) in sorted(by_task, key=lambda k: (k[0] not in own_tasks, natural(k[0]))):
        by_metric = rows_by(by_task[(task,)], "metric")
        options, max_step = [], 0
        for (metric,) in sorted(by_metric, key=lambda k: _metric_order(k[0])):
            series = group_series(by_metric[(metric,)])
            max_step = max([max_step] + [s for x in series for v in x.members.values() for s in v])
            traces = [t for x in series for t in curve_traces(x, data.palette, data.own_suites)]
            options.append((metric, traces, {"yaxis.type": "log" if is_perplexity(metric) else "linear"}))
        sec.add(dropdown_figure(options, base_layout("", max_step), title=task or "(no task name)"))
    if not sec.figures:
        sec.notes.append("no benchmark row has a step and a value")
    table = final_table(own)
    if table:
        sec.tables.append(table)


def final_table(rows: list[dict]) -> Table | None:
    """Each task and metric at the last step every seed of a size reached, mean over seeds."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    sizes: set[str] = set()
    for (task, metric), group in rows_by(rows, "task", "metric").items():
        for s in group_series(group):
            steps, mean, _, _ = s.band()
            if steps:
                cells.setdefault((task, metric), {})[s.size] = f"{mean[-1]:.4g} (step {steps[-1]})"
                sizes.add(s.size)
    if not cells:
        return None
    order = sorted(sizes, key=size_key)
    return Table(["task", "metric"] + order,
                 [[t, m] + [cells[(t, m)].get(z, "") for z in order]
                  for t, m in sorted(cells, key=lambda k: (natural(k[0]), _metric_order(k[1])))],
                 "Last checkpoint, mean over seeds")
