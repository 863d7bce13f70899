"""Scaling laws (Hoffmann et al. 2022; Kaplan et al. 2020; OLMo's ladder): analysis `scaling`.

Rows it reads (see `pythia.analysis.scaling`), per suite (member `{suite}/*`) and task
`chinchilla`, `kaplan` or `sigmoid:{task}`: the parameters with their bootstrap stderr,
`n_points`, `n_steps`, and the check `predicted_largest` / `measured_largest` /
`relative_error_largest` (with the size and step it is at); per size (member `{shape}/*`) the
curve `fit`, `fit_lo`, `fit_hi` at each step and `N`; per member and step the fitted point (the
metric `observed:{quantity}`; a sigmoid's `task_loss` and `accuracy` with `fit*` there).
"""
from __future__ import annotations

import math
from collections import defaultdict

from pythia.analysis.scaling import OBSERVED
from pythia.scaling import ChinchillaFit

from ..plot import Figure, natural, size_key
from . import ReportData, Section, Table, section

SCALING = "scaling"
CURVE = ("fit", "fit_lo", "fit_hi", "N")
CHECK = ("predicted_largest", "measured_largest", "relative_error_largest")
COUNTS = ("n_points", "n_sizes", "n_steps", "n_bootstrap")
PARAMS = {"chinchilla": ("E", "A", "B", "alpha", "beta"), "kaplan": ("alpha", "N_c"), "sigmoid": ("a", "k", "L0", "b")}
FRONTIER_DECADES = 2
"""The frontier runs from the suite's smallest compute to this many decades past its largest."""


@section("scaling", "Scaling laws", analyses=(SCALING,), order=25)
def render(data: ReportData, sec: Section) -> None:
    sec.intro = ("How the loss falls with model size N (non-embedding parameters) and tokens D: Chinchilla's "
                 "L(N, D) = E + A/N^alpha + B/D^beta over sizes and checkpoints, Kaplan's L(N) = (N_c/N)^alpha at "
                 "the last checkpoint, and accuracy against a task's loss (OLMo's ladder). Points are the mean over "
                 "seeds with their standard deviation as error bars; the shaded band is the fit's 95% bootstrap "
                 "interval; the law fitted without the largest size predicts it (open diamond, bootstrap "
                 "stderr) beside its measured value (star).")
    rows = data.of(SCALING)
    fits = defaultdict(list)
    for r in rows:
        fits[(r.get("suite") or "", r.get("task") or "")].append(r)
    table = []
    for (suite, task), group in sorted(fits.items(), key=lambda kv: (natural(kv[0][0]), _law(kv[0][1]), kv[0][1])):
        law = _law(task)
        summary = _summary(group)
        if not summary.get("n_points"):
            continue
        table.append(_table_row(suite, task, law, summary))
        if law == "chinchilla":
            if summary.get("n_steps", 0) > 1:
                sec.notes.append(f"{suite}: D comes from intermediate checkpoints of one learning-rate schedule, "
                                 "which biases beta (Hoffmann et al.'s own warning): read beta as a property of this "
                                 "schedule, not a data-scaling exponent.")
            sec.add(loss_figure(data, suite, group, x="tokens", title=f"{suite}: Chinchilla fit, loss vs tokens"))
            sec.add(frontier_figure(data, suite, group, summary))
        elif law == "kaplan":
            sec.add(loss_figure(data, suite, group, x="N", title=f"{suite}: Kaplan fit, loss vs parameters"))
        else:
            sec.add(sigmoid_figure(data, suite, task, group))
    if table:
        sec.tables.append(Table(["suite", "law", "parameters (bootstrap stderr)", "points", "largest: predicted",
                                 "measured", "relative error"], table,
                                "Fits and the fit-small-predict-large check (all numbers in results.csv)"))
    else:
        sec.notes.append("no fitted law in the scaling rows")


def _law(task: str) -> str:
    return "sigmoid" if task.startswith("sigmoid:") else task


def _summary(group: list[dict]) -> dict:
    return {r["metric"]: r["value"] for r in group if r["member"].endswith("/*") and r.get("value") is not None
            and r["metric"] not in CURVE}


def _stderr(group: list[dict], metric: str):
    for r in group:
        if r["metric"] == metric and r["member"].endswith("/*") and r["metric"] not in CURVE:
            return r.get("stderr")
    return None


def _table_row(suite, task, law, summary) -> list:
    params = []
    for name in PARAMS[law]:
        if name in summary:
            params.append(f"{name} = {summary[name]:.4g}")
    check = [summary.get(k) for k in CHECK]
    return [suite, task, ", ".join(params), int(summary["n_points"]),
            *[("" if v is None else (f"{v:+.2%}" if k == "relative_error_largest" else f"{v:.4g}"))
              for k, v in zip(CHECK, check)]]


def _points(group: list[dict], x: str) -> tuple[dict, str]:
    """{(size, x value): [values over seeds]} of the fitted points, and the quantity's name."""
    out, name = defaultdict(list), ""
    n_of = {r.get("size"): r["value"] for r in group if r["metric"] == "N"}
    for r in group:
        if r["member"].endswith("/*") or r.get("value") is None or r.get("step") is None:
            continue
        if not r["metric"].startswith(OBSERVED):
            continue
        name = r["metric"][len(OBSERVED):]
        xv = r.get("tokens") if x == "tokens" else n_of.get(r.get("size"))
        if xv:
            out[(r.get("size") or r["member"], float(xv))].append(float(r["value"]))
    return out, name


def _mean_sd(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def loss_figure(data: ReportData, suite: str, group: list[dict], *, x: str, title: str) -> Figure | None:
    """Loss vs tokens (one curve per size) or vs N (one curve): points, fit, band, check."""
    points, name = _points(group, x)
    if not points:
        return None
    n_of = {r.get("size"): r["value"] for r in group if r["metric"] == "N"}
    curves = defaultdict(dict)
    for r in group:
        if r["metric"] in ("fit", "fit_lo", "fit_hi") and r["member"].endswith("/*") and r.get("value") is not None:
            xv = r.get("tokens") if x == "tokens" else n_of.get(r.get("size"))
            if xv:
                curves[r.get("size") if x == "tokens" else ""].setdefault(float(xv), {})[r["metric"]] = r["value"]
    traces = []
    for key in sorted(curves, key=size_key):
        pts = sorted(curves[key].items())
        colour = data.palette(key) if key else "rgb(60, 60, 60)"
        xs = [p for p, _ in pts]
        traces.append({"type": "scatter", "mode": "lines", "name": "95% band", "x": xs + xs[::-1],
                       "y": [v.get("fit_hi") for _, v in pts] + [v.get("fit_lo") for _, v in pts][::-1],
                       "fill": "toself", "fillcolor": data.palette.fill(key, 0.15) if key else "rgba(60, 60, 60, 0.15)",
                       "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False,
                       "legendgroup": key or "fit"})
        traces.append({"type": "scatter", "mode": "lines", "name": f"fit {key}".strip(), "x": xs,
                       "y": [v.get("fit") for _, v in pts], "line": {"color": colour, "width": 2},
                       "legendgroup": key or "fit", "hovertemplate": "fit %{y:.4g} at %{x:.3~s}<extra></extra>"})
    by_size = defaultdict(list)
    for (size, xv), values in points.items():
        by_size[size].append((xv, *_mean_sd(values), len(values)))
    for size in sorted(by_size, key=size_key):
        pts = sorted(by_size[size])
        traces.append({"type": "scatter", "mode": "markers", "name": size, "legendgroup": size,
                       "x": [p[0] for p in pts], "y": [p[1] for p in pts],
                       "error_y": {"type": "data", "array": [p[2] for p in pts], "visible": True, "thickness": 1},
                       "customdata": [p[3] for p in pts], "marker": {"color": data.palette(size), "size": 6},
                       "hovertemplate": f"{size}<br>%{{x:.3~s}}: %{{y:.4g}} (mean of %{{customdata}} seeds)"
                                        "<extra></extra>"})
    traces += _check_traces(group, x, n_of)
    xtitle = "tokens D (log)" if x == "tokens" else "non-embedding parameters N (log)"
    layout = {"xaxis": {"type": "log", "title": {"text": xtitle}}, "yaxis": {"type": "log", "title": {"text": name}},
              "height": 400, "margin": {"l": 60, "r": 10, "t": 30, "b": 50}, "hovermode": "closest",
              "template": "plotly_white", "legend": {"font": {"size": 10}}}
    return Figure(data=traces, layout=layout, title=title, note=_params_note(group))


def _check_traces(group: list[dict], x: str, n_of: dict) -> list[dict]:
    check = {r["metric"]: r for r in group if r["metric"] in CHECK and r.get("value") is not None}
    if "predicted_largest" not in check or "measured_largest" not in check:
        return []
    p, m = check["predicted_largest"], check["measured_largest"]
    xv = p.get("tokens") if x == "tokens" else n_of.get(p.get("size"))
    if not xv:
        return []
    return _check_pair(p, m, xv, check.get("relative_error_largest", {}).get("value"))


def _check_pair(p: dict, m: dict, xv: float, rel) -> list[dict]:
    label = f"{p.get('size')} at step {p.get('step')}"
    err = f" ({rel:+.1%})" if rel is not None else ""
    return [
        {"type": "scatter", "mode": "markers", "name": "predicted from smaller sizes", "x": [xv], "y": [p["value"]],
         "error_y": {"type": "data", "array": [p.get("stderr") or 0.0], "visible": True},
         "marker": {"symbol": "diamond-open", "size": 12, "color": "black", "line": {"width": 2}},
         "hovertemplate": f"{label}: predicted %{{y:.4g}}{err}<extra></extra>"},
        {"type": "scatter", "mode": "markers", "name": "measured (largest)", "x": [xv], "y": [m["value"]],
         "marker": {"symbol": "star", "size": 13, "color": "crimson"},
         "hovertemplate": f"{label}: measured %{{y:.4g}}<extra></extra>"},
    ]


def _params_note(group: list[dict]) -> str:
    summary = _summary(group)
    law = _law(next((r.get("task") or "" for r in group), ""))
    parts = []
    for name in PARAMS.get(law, ()):
        if name in summary:
            se = _stderr(group, name)
            parts.append(f"{name} = {summary[name]:.4g}" + (f" ± {se:.2g}" if se is not None else ""))
    return ", ".join(parts) + f" ({int(summary.get('n_points', 0))} points; ± bootstrap stderr)."


def frontier_figure(data: ReportData, suite: str, group: list[dict], summary: dict) -> Figure | None:
    """N_opt(C) of the Chinchilla fit, with the suite's last checkpoints (N, C = 6ND) for scale."""
    if not all(k in summary for k in PARAMS["chinchilla"]):
        return None
    fit = ChinchillaFit(**{k: summary[k] for k in PARAMS["chinchilla"]}, n_points=int(summary["n_points"]),
                        objective=math.nan)
    n_of = {r.get("size"): r["value"] for r in group if r["metric"] == "N"}
    last = {}
    for r in group:
        if r["metric"] in ("fit",) and r.get("tokens") and r.get("size") in n_of:
            last[r["size"]] = max(last.get(r["size"], 0.0), float(r["tokens"]))
    if not last:
        return None
    compute = {s: 6.0 * n_of[s] * d for s, d in last.items()}
    lo, hi = math.log10(min(compute.values())), math.log10(max(compute.values())) + FRONTIER_DECADES
    cs = [10 ** (lo + (hi - lo) * i / 60) for i in range(61)]
    n_opt, d_opt = fit.compute_optimal(cs)
    traces = [{"type": "scatter", "mode": "lines", "name": "compute-optimal N", "x": cs, "y": list(map(float, n_opt)),
               "customdata": list(map(float, d_opt)), "line": {"color": "black", "width": 2},
               "hovertemplate": "C %{x:.3~s}: N_opt %{y:.3~s}, D_opt %{customdata:.3~s}<extra></extra>"}]
    for size in sorted(compute, key=size_key):
        traces.append({"type": "scatter", "mode": "markers", "name": size, "x": [compute[size]], "y": [n_of[size]],
                       "marker": {"color": data.palette(size), "size": 10},
                       "hovertemplate": f"{size}: C = 6ND %{{x:.3~s}}, N %{{y:.3~s}}<extra></extra>"})
    layout = {"xaxis": {"type": "log", "title": {"text": "compute C = 6ND (FLOPs, log)"}},
              "yaxis": {"type": "log", "title": {"text": "parameters N (log)"}}, "height": 400,
              "margin": {"l": 60, "r": 10, "t": 30, "b": 50}, "template": "plotly_white", "hovermode": "closest"}
    exponent = fit.beta / (fit.alpha + fit.beta)
    return Figure(data=traces, layout=layout, title=f"{suite}: compute-optimal frontier of the Chinchilla fit",
                  note=f"N_opt = G (C/6)^{exponent:.3f}, G = {fit.G:.3g}; each size at its last checkpoint for scale "
                       "(below the line: more tokens per parameter than compute-optimal).")


def sigmoid_figure(data: ReportData, suite: str, task: str, group: list[dict]) -> Figure | None:
    """Accuracy vs the task's loss: points per size, the fitted sigmoid and its band, the check."""
    cells = defaultdict(dict)
    for r in group:
        if not r["member"].endswith("/*") and r.get("value") is not None and r.get("step") is not None:
            cells[(r["member"], r["step"])][r["metric"]] = r["value"]
            cells[(r["member"], r["step"])].update(size=r.get("size") or r["member"], step=r["step"])
    cells = [c for c in cells.values() if "task_loss" in c and "accuracy" in c]
    if not cells:
        return None
    line = sorted((c["task_loss"], c.get("fit"), c.get("fit_lo"), c.get("fit_hi")) for c in cells if "fit" in c)
    xs = [p[0] for p in line]
    traces = [{"type": "scatter", "mode": "lines", "name": "95% band", "x": xs + xs[::-1],
               "y": [p[3] for p in line] + [p[2] for p in line][::-1], "fill": "toself",
               "fillcolor": "rgba(60, 60, 60, 0.15)", "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False},
              {"type": "scatter", "mode": "lines", "name": "fit", "x": xs, "y": [p[1] for p in line],
               "line": {"color": "rgb(60, 60, 60)", "width": 2}}]
    by_size = defaultdict(list)
    for c in cells:
        by_size[c["size"]].append(c)
    for size in sorted(by_size, key=size_key):
        pts = by_size[size]
        traces.append({"type": "scatter", "mode": "markers", "name": size, "x": [c["task_loss"] for c in pts],
                       "y": [c["accuracy"] for c in pts], "marker": {"color": data.palette(size), "size": 7},
                       "hovertemplate": f"{size}<br>loss %{{x:.4g}}: accuracy %{{y:.4g}}<extra></extra>"})
    check = {r["metric"]: r for r in group if r["metric"] in CHECK and r.get("value") is not None}
    if "predicted_largest" in check and "measured_largest" in check:
        p = check["predicted_largest"]
        at = [c["task_loss"] for c in cells if c["size"] == p.get("size") and c["step"] == p.get("step")]
        if at:
            traces += _check_pair(p, check["measured_largest"], sum(at) / len(at),
                                  check.get("relative_error_largest", {}).get("value"))
    layout = {"xaxis": {"title": {"text": f"{task.partition(':')[2]} loss: ln(perplexity)"}},
              "yaxis": {"title": {"text": "accuracy"}}, "height": 400, "margin": {"l": 60, "r": 10, "t": 30, "b": 50},
              "template": "plotly_white", "hovermode": "closest", "legend": {"font": {"size": 10}}}
    return Figure(data=traces, layout=layout, title=f"{suite}: accuracy vs task loss ({task.partition(':')[2]})",
                  note=_params_note(group))
