"""Compare two members of a results table step by step: a fork with its base, or any pair.

For every (analysis, task, metric) both members have, at every step both have it:

    analysis "compare", member FORK, task TASK (the source row's), step N, metrics
      METRIC:base   the base's value (its stderr)
      METRIC:fork   the fork's value (its stderr)
      METRIC:diff   fork - base (stderr sqrt(se_base^2 + se_fork^2) when both have one)

When two source analyses share a (task, metric), METRIC is written `ANALYSIS/METRIC` for both, so
no key collides. The rows go into the same results table as one unit per fork
(`units/compare/{fork}/_member.json`, keyed by the base): comparing the fork with another base
replaces them. It works on any ResultsStore: a run's (`RUN/results`) or a standalone one, such as
Pythia's own evaluation JSONs imported side by side (a baseline and its intervention model).
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .io import save_png
from .results import ResultsStore

ANALYSIS = "compare"
PARTS = ("base", "fork", "diff")
_SKIP = (ANALYSIS,)


class CompareError(ValueError):
    """The two members cannot be compared (no rows, nothing in common): says what each has."""


@dataclass
class Series:
    """One source metric of both members at their common steps."""

    analysis: str
    task: str
    metric: str
    label: str
    """METRIC, or ANALYSIS/METRIC when another analysis has the same (task, metric)."""
    steps: list[int] = field(default_factory=list)
    base: list[float | None] = field(default_factory=list)
    fork: list[float | None] = field(default_factory=list)

    @property
    def diff(self) -> list[float | None]:
        return [None if a is None or b is None else b - a for a, b in zip(self.base, self.fork)]


def _index(rows: list[dict]) -> dict[tuple, dict[int, dict]]:
    out: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        if r.get("analysis") not in _SKIP and r.get("step") is not None:
            out[(r["analysis"], r.get("task") or "", r["metric"])][int(r["step"])] = r
    return out


def _members_with_rows(store: ResultsStore) -> list[str]:
    return sorted({r["member"] for r in store.rows() if r.get("member") and r.get("analysis") not in _SKIP})


def compare_series(store: ResultsStore, base: str, fork: str, *, analysis=None, metric=None,
                   task=None) -> tuple[list[Series], list[dict]]:
    """(the common series, the comparison rows) of `fork` against `base`; filters as in
    ResultsStore.rows. Raises CompareError when a member has no rows or nothing is in common."""
    if base == fork:
        raise CompareError(f"compare needs two different members, got {base!r} twice")
    a = _index(store.rows(member=base, analysis=analysis, metric=metric, task=task))
    b = _index(store.rows(member=fork, analysis=analysis, metric=metric, task=task))
    for name, idx in ((base, a), (fork, b)):
        if not idx:
            have = _members_with_rows(store)
            raise CompareError(f"no results for member {name!r} in {store.root}"
                               + (" with these filters" if analysis or metric or task else "")
                               + f"; members with results: {', '.join(have) or 'none'}")
    common = sorted(k for k in set(a) & set(b) if set(a[k]) & set(b[k]))
    if not common:
        raise CompareError(f"{base} and {fork} have no metric at a common step: {base} has "
                           f"{_names(a)}; {fork} has {_names(b)}")
    clash = defaultdict(set)
    for k in common:
        clash[k[1:]].add(k[0])
    series, rows = [], []
    for k in common:
        label = f"{k[0]}/{k[2]}" if len(clash[k[1:]]) > 1 else k[2]
        s = Series(analysis=k[0], task=k[1], metric=k[2], label=label)
        for step in sorted(set(a[k]) & set(b[k])):
            ra, rb = a[k][step], b[k][step]
            s.steps.append(step)
            s.base.append(ra["value"])
            s.fork.append(rb["value"])
            rows += _rows(s, step, ra, rb)
        series.append(s)
    return series, rows


def _names(idx: dict) -> str:
    names = sorted({f"{an}:{t}:{m}" if t else f"{an}:{m}" for an, t, m in idx})
    return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")


def _rows(s: Series, step: int, ra: dict, rb: dict) -> list[dict]:
    va, vb, ea, eb = ra["value"], rb["value"], ra.get("stderr"), rb.get("stderr")
    diff = None if va is None or vb is None else vb - va
    se = (ea**2 + eb**2) ** 0.5 if ea is not None and eb is not None else None
    who = {c: rb.get(c) for c in ("suite", "member", "size", "seed", "tokens")}
    return [{**who, "step": step, "analysis": ANALYSIS, "task": s.task, "metric": f"{s.label}:{part}",
             "value": value, "stderr": err}
            for part, value, err in (("base", va, ea), ("fork", vb, eb), ("diff", diff, se))]


def compare(store: ResultsStore, base: str, fork: str, *, analysis=None, metric=None, task=None,
            plot: str | Path | None = None, from_step: int | None = None, write: bool = True) -> "Comparison":
    """Compare, store the rows in `store` (unit compare/{fork}; not with write=False), and draw
    them into `plot` (PNG)."""
    series, rows = compare_series(store, base, fork, analysis=analysis, metric=metric, task=task)
    key = {"analysis": ANALYSIS, "base": base, "fork": fork, "filters": [analysis, metric, task],
           "rows": hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]}
    if write:
        store.put(ANALYSIS, rows, key=key, member=fork)
    path = plot_comparison(series, plot, base, fork, from_step) if plot is not None else None
    return Comparison(base=base, fork=fork, series=series, rows=rows, plot=path, from_step=from_step)


@dataclass
class Comparison:
    base: str
    fork: str
    series: list[Series]
    rows: list[dict]
    plot: Path | None = None
    from_step: int | None = None

    def summary(self) -> str:
        """One line per metric: common steps, and both values and the difference at the last."""
        head = ("task", "metric", "steps", "last", "base", "fork", "fork-base")
        lines = [head]
        for s in self.series:
            d = s.diff
            lines.append((s.task or "-", s.label, str(len(s.steps)), str(s.steps[-1]), _num(s.base[-1]),
                          _num(s.fork[-1]), _num(d[-1])))
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


MAX_PANELS = 12


def plot_comparison(series: list[Series], path: str | Path, base: str, fork: str,
                    from_step: int | None = None) -> Path:
    """One column per metric (at most MAX_PANELS): both members' values above, fork - base below."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    shown = series[:MAX_PANELS]
    fig, axes = plt.subplots(2, len(shown), figsize=(4.2 * len(shown), 6.2), squeeze=False, sharex="col")
    for col, s in enumerate(shown):
        top, bottom = axes[0][col], axes[1][col]
        marker = "o" if len(s.steps) <= 40 else None
        top.plot(s.steps, s.base, marker=marker, markersize=3, label=base)
        top.plot(s.steps, s.fork, marker=marker, markersize=3, linestyle="--", label=fork)
        bottom.plot(s.steps, s.diff, marker=marker, markersize=3, color="C3")
        bottom.axhline(0.0, color="grey", linewidth=0.8)
        for ax in (top, bottom):
            if from_step is not None:
                ax.axvline(from_step, color="grey", linestyle=":", linewidth=1)
            ax.grid(True, alpha=0.3)
        top.set_title(f"{s.analysis}: {s.task + ' ' if s.task else ''}{s.metric}", fontsize=9)
        bottom.set_xlabel("step")
        bottom.set_ylabel("fork - base" if col == 0 else "")
        top.legend(fontsize=7)
    more = f" (first {MAX_PANELS} of {len(series)} metrics)" if len(series) > MAX_PANELS else ""
    fig.suptitle(f"{fork} vs {base}{more}" + (f"; dotted: from step {from_step}" if from_step is not None else ""),
                 fontsize=10)
    fig.tight_layout()
    path = save_png(fig, path)
    plt.close(fig)
    return path


def default_plot_path(store: ResultsStore, base: str, fork: str) -> Path:
    return store.root / "plots" / f"compare_{fork}_vs_{base}.png"


__all__ = ["ANALYSIS", "CompareError", "Comparison", "Series", "compare", "compare_series", "default_plot_path",
           "plot_comparison"]
