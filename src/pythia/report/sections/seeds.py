"""Seeds (PolyPythias, van der Wal et al., ICLR 2025): analyses `seeds`, `weights`, `training_map`.

Rows it reads:
- `seeds`, spread over the seeds of a shape: member `{shape}/*`, metric
  `{analysis}:{metric}:{stat}` (stat: n, median, q25, q75, min, max, std), the source's task;
  `n_seeds` without a step for a shape with one seed.
- `seeds`, per member: `{analysis}:{metric}:outlier_z` at each flagged step (value = z);
  agreement `self_consistency` and `inter_seed` (Cohen's kappa) per task and step.
- `weights`: the 14 checkpoint statistics of Hu et al. per (member, step).
- `training_map`: `state` (and `score`) per (member, step); `detour` and `n_states` without a step.
"""
from __future__ import annotations

import re

from ..plot import Figure, base_layout, dropdown_figure, heatmap_layout, heatmap_trace, natural, rows_by, size_key
from . import ReportData, Section, Table, section
from .generic import metric_figures

SEEDS, WEIGHTS, MAP = "seeds", "weights", "training_map"
SPREAD = re.compile(r"(.+):(.+):(n|median|q25|q75|min|max|std)$")
OUTLIER = re.compile(r"(.+):(.+):outlier_z$")
AGREEMENT = ("self_consistency", "inter_seed")
MAX_SPREAD_OPTIONS = 60
SKIP_SPREAD = re.compile(r"_hist_\d+$")
"""Histogram bins are not worth a curve each; their spread stays in results.csv (so does that
of imported results, which are not seeds of this suite)."""
SKIP_ANALYSES = ("seeds", "training_map", "memorization_predictability")
"""Nor the spread of statistics about seeds or pairs of checkpoints."""
STATE_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


@section("seeds", "Seeds: spread, outliers, agreement, training maps", analyses=(SEEDS, WEIGHTS, MAP), order=40)
def render(data: ReportData, sec: Section) -> None:
    sec.intro = ("How much survives another seed: the spread of every metric over the seeds of a size "
                 "(median and quartiles), runs that go astray, how often checkpoints agree item by item, and "
                 "training maps that place every checkpoint of every seed in a few latent phases.")
    rows = data.of(SEEDS)
    if rows:
        spread_section(data, sec, rows)
        outlier_table(sec, rows)
        agreement = [r for r in rows if r["metric"] in AGREEMENT]
        sec.figures += metric_figures(data, agreement, title="Agreement (Cohen's kappa)",
                                      note="self_consistency: with the same run's final checkpoint; inter_seed: "
                                           "with the reference seed at the same step.")
        if not agreement:
            sec.notes.append("no agreement rows (they need the per-item outcomes of the eval sweep)")
    else:
        sec.notes.append("no seed statistics (run `pythia analyze RUN seeds`)")
    weights = data.of(WEIGHTS)
    sec.figures += metric_figures(data, weights, title="Checkpoint statistics (weights)", max_separate=0)
    maps = data.of(MAP)
    if maps:
        map_section(data, sec, maps)
    elif weights:
        sec.notes.append("no training map (run `pythia analyze RUN training_map`)")


def spread_section(data: ReportData, sec: Section, rows: list[dict]) -> None:
    stats: dict[tuple, dict[str, dict[str, dict[int, float]]]] = {}
    for r in rows:
        m = SPREAD.match(r["metric"])
        if (m and r.get("step") is not None and r.get("value") is not None and not SKIP_SPREAD.search(m[2])
                and not m[1].endswith("_import") and m[1] not in SKIP_ANALYSES):
            key = (m[1], r.get("task") or "", m[2])
            stats.setdefault(key, {}).setdefault(r.get("size") or r["member"], {}).setdefault(m[3], {})[r["step"]] = r["value"]
    for r in rows:
        if r["metric"] == "n_seeds" and r.get("step") is None and (r.get("value") or 0) < 2:
            sec.notes.append(f"{r.get('size') or r['member']}: {r['value']:g} seed(s): no spread to show")
    keys = sorted(stats, key=lambda k: (_priority(k[0]), natural(k[0]), natural(k[1]), natural(k[2])))
    if len(keys) > MAX_SPREAD_OPTIONS:
        sec.notes.append(f"spread shown for {MAX_SPREAD_OPTIONS} of {len(keys)} metrics; all are in results.csv")
    options, max_step = [], 0
    for key in keys[:MAX_SPREAD_OPTIONS]:
        traces = []
        for size in sorted(stats[key], key=size_key):
            traces += _spread_traces(size, stats[key][size], data)
            max_step = max([max_step] + list(stats[key][size].get("median", {})))
        label = f"{key[0]}: {key[2]}" + (f" ({key[1]})" if key[1] else "")
        options.append((label, traces))
    sec.add(dropdown_figure(options, base_layout("", max_step), title="Spread over seeds (menu: metric)",
                            note="Median over the seeds of each size, the band from the 25% to the 75% quantile "
                                 "(PolyPythias' plots); min and max dotted."),
            "no spread over seeds in the table (every size has a single seed?)")


def _priority(analysis: str) -> int:
    """Losses, benchmarks, checkpoint statistics, memorization, the rest: the menu's order."""
    return {"val_loss": 0, "train_loss": 1, "eval": 2, "weights": 3, "memorization": 4}.get(analysis, 5)


def _spread_traces(size: str, by_stat: dict[str, dict[int, float]], data: ReportData) -> list[dict]:
    median = by_stat.get("median", {})
    steps = sorted(median)
    if not steps:
        return []
    colour, xs = data.palette(size), [s + 1 for s in steps]
    head = {"legendgroup": size, "legendgrouptitle": {"text": size}}
    out = []
    q25, q75 = by_stat.get("q25", {}), by_stat.get("q75", {})
    band = [s for s in steps if s in q25 and s in q75]
    if band:
        bx = [s + 1 for s in band]
        out.append({"type": "scatter", "mode": "lines", "name": "25-75%", "x": bx + bx[::-1],
                    "y": [q75[s] for s in band] + [q25[s] for s in band][::-1], "fill": "toself",
                    "fillcolor": data.palette.fill(size), "line": {"width": 0, "color": colour}, "hoverinfo": "skip", **head})
    out.append({"type": "scatter", "mode": "lines+markers" if len(xs) <= 40 else "lines", "name": "median", "x": xs,
                "y": [median[s] for s in steps], "customdata": steps, "line": {"color": colour, "width": 2},
                "hovertemplate": f"{size} median<br>step %{{customdata}}<br>%{{y:.4~g}}<extra></extra>", **head})
    for stat in ("min", "max"):
        v = by_stat.get(stat, {})
        pts = [s for s in steps if s in v]
        if pts:
            out.append({"type": "scatter", "mode": "lines", "name": stat, "x": [s + 1 for s in pts],
                        "y": [v[s] for s in pts], "customdata": pts, "visible": "legendonly",
                        "line": {"color": colour, "width": 1, "dash": "dot"},
                        "hovertemplate": f"{size} {stat}<br>step %{{customdata}}<br>%{{y:.4~g}}<extra></extra>", **head})
    return out


def outlier_table(sec: Section, rows: list[dict]) -> None:
    flagged: dict[tuple, list[tuple[int, float]]] = {}
    for r in rows:
        m = OUTLIER.match(r["metric"])
        if m and r.get("step") is not None:
            flagged.setdefault((r["member"], m[1], m[2], r.get("task") or ""), []).append((r["step"], r.get("value")))
    if not flagged:
        sec.notes.append("no run flagged as an outlier by the seeds analysis (flags need several seeds per size)")
        return
    table = []
    for (member, analysis, metric, task), pts in sorted(flagged.items(), key=lambda kv: natural(kv[0][0])):
        zs = [abs(z) for _, z in pts if z is not None]
        table.append([member, analysis, metric, task, ", ".join(str(s) for s, _ in sorted(pts)),
                      round(max(zs), 2) if zs else ""])
    sec.tables.append(Table(["member", "analysis", "metric", "task", "flagged steps", "max |z|"], table,
                            "Outlier runs: a seed far from the other seeds of its size at consecutive checkpoints"))


def map_section(data: ReportData, sec: Section, rows: list[dict]) -> None:
    """One heatmap per size: a row per seed, a column per step, the colour the latent state."""
    detours = {r["member"] for r in rows if r["metric"] == "detour" and r.get("step") is None and r.get("value")}
    n_states = {r.get("size"): int(r["value"]) for r in rows if r["metric"] == "n_states" and r.get("value") is not None}
    states = [r for r in rows if r["metric"] == "state" and r.get("step") is not None and r.get("value") is not None]
    if not states:
        sec.notes.append("training map rows hold no state per step")
    for (size,), group in sorted(rows_by(states, "size").items(), key=lambda kv: size_key(kv[0][0])):
        members = sorted({r["member"] for r in group}, key=natural)
        steps = sorted({r["step"] for r in group})
        cell = {(r["member"], r["step"]): int(r["value"]) for r in group}
        k = max(n_states.get(size, 0), max(cell.values()) + 1)
        z = [[cell.get((m, s)) for s in steps] for m in members]
        labels = [f"{m} (detour)" if m in detours else m for m in members]
        trace = heatmap_trace(z, steps, labels, zmin=-0.5, zmax=k - 0.5, colorscale=_discrete(k), ztitle="state",
                              hover="%{y}<br>step %{x}: state %{z}")
        trace["colorbar"].update({"tickvals": list(range(k)), "ticktext": [str(i) for i in range(k)]})
        if "texttemplate" in trace:
            trace["texttemplate"] = "%{z}"
        sec.figures.append(Figure([trace], heatmap_layout(len(members), "step", "seed"),
                                  f"Training map, {size}: {k} states",
                                  f"Latent state (Gaussian HMM over the checkpoint statistics) of every checkpoint; "
                                  f"{_paths_text(members, steps, cell, detours)}.", wide=True))
    score = [r for r in rows if r["metric"] == "score"]
    sec.add(data.curve(score, title="Training map score", ytitle="score (z-scored, higher is better)"))


def _paths_text(members: list[str], steps: list, cell: dict, detours: set) -> str:
    """What the map shows about the seeds' paths: the detours from a majority path (the set of
    states most seeds visit), or, when no set is shared by more than half the seeds, that there
    is none and how the seeds split (a 2-2 split has no detour, and no majority either)."""
    visited = {m: frozenset(cell[m, s] for s in steps if (m, s) in cell) for m in members}
    groups: dict[frozenset, list[str]] = {}
    for m in members:
        groups.setdefault(visited[m], []).append(m)
    if len(members) > 1 and 2 * max(len(g) for g in groups.values()) <= len(members):
        split = " | ".join(f"{', '.join(g)} (states {', '.join(map(str, sorted(v)))})" for v, g in groups.items())
        return f"no majority path: the seeds split by the states they visit into {split}"
    return f"detours (visited states differ from the majority's): {', '.join(m for m in members if m in detours) or 'none'}"


def _discrete(k: int) -> list:
    """A colorscale with k flat bands, one colour per state."""
    scale = []
    for i in range(k):
        c = STATE_COLOURS[i % len(STATE_COLOURS)]
        scale += [[i / k, c], [(i + 1) / k, c]]
    return scale
