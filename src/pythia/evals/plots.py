"""Benchmark curves: metric vs training step per task, one curve per (suite, size), the seeds of
a size as a min-max band around their mean; Pythia's imported results beside a suite's own.

`benchmark_series(rows, task, metric)` gives the numbers (the HTML report draws them too);
`plot_benchmarks(rows, [(task, metric), ...], path)` writes a PNG with one panel per task.
Rows are results-table rows of the `eval` analysis and of `pythia results import`
(`eval_import`): `store.rows(analysis=["eval", "eval_import"])`.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..io import save_png
from ..results import natural_key

__all__ = ["ANALYSES", "Series", "benchmark_series", "plot_benchmarks"]

ANALYSES = ("eval", "eval_import")


@dataclass
class Series:
    """One (suite, size): at each x the mean, min and max over the members (seeds) that have it."""

    suite: str
    size: str
    members: list[str]
    x: list[int]
    mean: list[float]
    lo: list[float]
    hi: list[float]
    n: list[int]
    """How many members had a value at each x."""

    @property
    def label(self) -> str:
        k = len(self.members)
        return f"{self.suite} {self.size}" + (f" ({k} seeds)" if k > 1 else "")


def _size_key(size: str) -> tuple:
    """Pythia sizes by parameters (70m < 1.4b), others naturally (d64-l2 < d128-l3)."""
    m = re.fullmatch(r"pythia-(\d+(?:\.\d+)?)([mb])", size or "")
    return (0, float(m[1]) * (1000 if m[2] == "b" else 1), "") if m else (1, 0.0, natural_key(size))


def benchmark_series(rows: list[dict], task: str, metric: str, x: str = "step") -> list[Series]:
    """Series of `metric` on `task` against x ("step" or "tokens"), sorted by suite then size."""
    points: dict[tuple, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.get("task") == task and r.get("metric") == metric and r.get(x) is not None and r.get("value") is not None:
            points[(r.get("suite") or "", r.get("size") or r.get("member") or "")][int(r[x])][r["member"]] = r["value"]
    out = []
    for (suite, size), by_x in sorted(points.items(), key=lambda kv: (kv[0][0], _size_key(kv[0][1]))):
        xs = sorted(by_x)
        vals = [list(by_x[v].values()) for v in xs]
        members = sorted({m for v in by_x.values() for m in v}, key=natural_key)
        out.append(Series(suite, size, members, xs, [sum(v) / len(v) for v in vals], [min(v) for v in vals],
                          [max(v) for v in vals], [len(v) for v in vals]))
    return out


def plot_benchmarks(rows: list[dict], panels: list[tuple[str, str]], path: str | Path, x: str = "step",
                    title: str = "") -> Path:
    """One panel per (task, metric): a colour per size, a line style per suite (the first
    solid, e.g. your suite; then dashed, dotted: imported ones), seeds as a band; symlog x so
    that step 0 sits at the left of Pythia's log-spaced checkpoints."""
    if not panels:
        raise ValueError("no (task, metric) to plot")
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    all_series = {p: benchmark_series(rows, *p, x=x) for p in panels}
    sizes = sorted({s.size for ss in all_series.values() for s in ss}, key=_size_key)
    suites = sorted({s.suite for ss in all_series.values() for s in ss})
    colours, styles = plt.get_cmap("viridis"), ["-", "--", ":", "-."]
    cols = min(3, len(panels))
    rows_n = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.6 * cols, 4.2 * rows_n), squeeze=False)
    for ax, (task, metric) in zip(axes.flat, panels):
        for s in all_series[(task, metric)]:
            colour = colours(sizes.index(s.size) / max(1, len(sizes) - 1) * 0.85)
            style = styles[suites.index(s.suite) % len(styles)]
            if len(s.members) > 1:
                ax.fill_between(s.x, s.lo, s.hi, color=colour, alpha=0.2, linewidth=0)
            ax.plot(s.x, s.mean, style, color=colour, marker="o" if len(s.x) <= 40 else None, markersize=2.5,
                    label=s.label)
        ax.set_xscale("symlog", linthresh=1, linscale=0.4)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xlabel(f"{x} (log scale, 0 at left)")
        ax.set_ylabel(metric)
        ax.set_title(task)
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = save_png(fig, path)
    plt.close(fig)
    return path
