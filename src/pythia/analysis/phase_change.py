"""`phase_change`: when induction heads form, per member, and how much that moment varies over seeds.

Olsson et al. (2022) see a phase change early in training: induction heads appear, the
in-context learning score drops and the loss bumps, all at once. From the results table:

- `induction_phase_step`: the step at which the largest head's induction score (`heads`, task
  `max`) rises most between consecutive checkpoints (the later of the two); `induction_rise`:
  that rise;
- `icl_drop_step` and `icl_drop`: the same for the largest fall of the `icl` score (when `icl`
  rows exist), to see whether the two coincide;

as rows of each member without a step, and over the seeds of each shape (forks left out), rows
of member `{shape}/*` named `{metric}:{stat}` for stat in n, median, min, max, std (population
standard deviation). A member needs two checkpoints with the score.
"""
from __future__ import annotations

import statistics

from .base import Analysis, register
from .seeds import shapes_of, summary_label

SERIES = (
    # (analysis, task, metric, sign: +1 the largest rise, -1 the largest fall, step metric, change metric)
    ("heads", "max", "induction", 1, "induction_phase_step", "induction_rise"),
    ("icl", "", "icl_score", -1, "icl_drop_step", "icl_drop"),
)
STATS = ("n", "median", "min", "max", "std")


def largest_change(points: dict[int, float], sign: int) -> tuple[int, float] | None:
    """(step, change) of the largest sign * change between consecutive steps; None below 2 points."""
    steps = sorted(points)
    if len(steps) < 2:
        return None
    best = max(range(1, len(steps)), key=lambda i: (sign * (points[steps[i]] - points[steps[i - 1]]), -i))
    return steps[best], points[steps[best]] - points[steps[best - 1]]


@register
class PhaseChange(Analysis):
    name = "phase_change"
    summary = "per member: the step where the largest induction score rises most (and the ICL score falls most); spread over seeds"
    scope = "run"
    version = 1

    def reads(self, analysis: str) -> bool:
        return analysis in ("heads", "icl")

    def compute_run(self, run, store, members) -> list[dict]:
        series: dict[tuple, dict[int, float]] = {}
        wanted = {(a, t, m): i for i, (a, t, m, *_) in enumerate(SERIES)}
        for r in store.rows(analysis=["heads", "icl"], metric=["induction", "icl_score"]):
            i = wanted.get((r["analysis"], r.get("task") or "", r["metric"]))
            if i is not None and r.get("step") is not None and r.get("value") is not None:
                series.setdefault((r["member"], i), {})[r["step"]] = r["value"]
        out, steps = [], {}
        for m in members:
            for i, (*_, sign, step_metric, change_metric) in enumerate(SERIES):
                hit = largest_change(series.get((m.name, i), {}), sign)
                if hit is not None:
                    out.append({"member": m.name, "step": None, "metric": step_metric, "value": float(hit[0])})
                    out.append({"member": m.name, "step": None, "metric": change_metric, "value": float(hit[1])})
                    steps.setdefault(step_metric, {})[m.name] = float(hit[0])
        for shape, ms in shapes_of([m for m in members if m.base is None]).items():
            for metric, by_member in sorted(steps.items()):
                values = [by_member[m.name] for m in ms if m.name in by_member]
                if not values:
                    continue
                stats = {"n": float(len(values)), "median": statistics.median(values), "min": min(values),
                         "max": max(values), "std": statistics.pstdev(values)}
                out += [{"member": summary_label(shape), "size": shape, "seed": None, "step": None,
                         "metric": f"{metric}:{s}", "value": float(stats[s])} for s in STATS]
        return out
