"""Benchmarks: lm-evaluation-harness results at every checkpoint (analysis `eval`), with
published results imported by `pythia results import` (analysis `eval_import`, their own suite
name, e.g. Pythia's) drawn dashed beside the suite's own.

Rows: task = the lm-eval task name, `task@5shot` when few-shot; metric = lm-eval's name
(acc, acc_norm, perplexity, word_perplexity, bits_per_byte, exact_match,strict-match, ...).
One figure per task, a menu for its metrics; perplexities on a log axis. When imported results
bring many tasks the suite does not have, those share one figure with a menu, and so do the
suite's own families of numbered tasks (`num_reasoning_arithmetic_addition_0..99`: the
term-frequency section draws them against counts).
"""
from __future__ import annotations

import re

from ..plot import base_layout, curve_traces, dropdown_figure, group_series, natural, rows_by, size_key
from . import ReportData, Section, Table, section

OWN, IMPORTED = "eval", "eval_import"
FIRST_METRICS = ("acc", "acc_norm", "exact_match", "perplexity")
MAX_TASK_FIGURES = 12
"""Tasks beyond this many that only imported results have (Pythia's evals hold ~150, MMLU's
subjects each a task) share one figure with a menu; the suite's own tasks always get one each."""


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
    families = numbered_families(own_tasks)
    for name, members in sorted(families.items()):
        options = [(f"{t}: {label}", traces, extra) for t in sorted(members, key=natural)
                   for label, traces, extra in metric_options(data, by_task.get((t,), []))]
        rows = [r for t in members for r in by_task.get((t,), [])]
        sec.add(dropdown_figure(options, base_layout("", _max_step(rows)),
                                title=f"{name}: {len(members)} tasks (menu: task and metric)"))
    in_family = {t for members in families.values() for t in members}
    tasks = sorted((k[0] for k in by_task if k[0] not in in_family), key=lambda t: (t not in own_tasks, natural(t)))
    alone = tasks if len(tasks) <= MAX_TASK_FIGURES else [t for t in tasks if t in own_tasks]
    for task in alone:
        sec.add(dropdown_figure(metric_options(data, by_task[(task,)]), base_layout("", _max_step(by_task[(task,)])),
                                title=task or "(no task name)"))
    rest = [t for t in tasks if t not in alone]
    if rest:
        options = [(f"{t}: {label}", traces, extra) for t in rest
                   for label, traces, extra in metric_options(data, by_task[(t,)])]
        rows = [r for t in rest for r in by_task[(t,)]]
        sec.add(dropdown_figure(options, base_layout("", _max_step(rows)),
                                title=f"{len(rest)} {'more tasks, imported results only' if alone else 'tasks'} "
                                      "(menu: task and metric)"))
    if not sec.figures:
        sec.notes.append("no benchmark row has a step and a value")
    table = final_table([r for r in own if (r.get("task") or "") not in in_family])
    if table:
        sec.tables.append(table)


FAMILY_RE = re.compile(r"^(?P<stem>.+)_(?P<n>\d+)(?P<shots>@\d+shot)?$")
MIN_FAMILY = 4
"""Tasks that differ only by a trailing number (the term-frequency study's 100 tasks per
operation, one per operand) share one figure with a menu once there are this many."""


def numbered_families(tasks) -> dict[str, list[str]]:
    """{'{stem}_N{@kshot}': [tasks]} for families of at least MIN_FAMILY numbered tasks."""
    found: dict[str, list[str]] = {}
    for t in tasks:
        m = FAMILY_RE.match(t)
        if m:
            found.setdefault(f"{m['stem']}_N{m['shots'] or ''}", []).append(t)
    return {k: v for k, v in found.items() if len(v) >= MIN_FAMILY}


def metric_options(data: ReportData, rows: list[dict]) -> list[tuple]:
    """(metric, traces, layout change) per metric of one task's rows, the usual ones first."""
    by_metric = rows_by(rows, "metric")
    return [(metric, [t for x in group_series(by_metric[(metric,)]) for t in curve_traces(x, data.palette, data.own_suites)],
             {"yaxis.type": "log" if is_perplexity(metric) else "linear"})
            for (metric,) in sorted(by_metric, key=lambda k: _metric_order(k[0]))]


def _max_step(rows: list[dict]) -> int:
    return max((r["step"] for r in rows), default=0)


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
