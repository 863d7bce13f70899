"""Figures of the HTML report as plain plotly JSON (dicts), drawn in the page by the inlined
plotly.js (https://plotly.com/javascript/reference/). Plain dicts rather than
`plotly.graph_objects`: building a figure costs nothing, the page is deterministic, and the
tests validate every figure against plotly's schema instead.

Conventions shared by every section:
- Step axis: Pythia's checkpoints are log-spaced from step 0 (0, 1, 2, 4, ..., 512, then every
  1000), so steps go on a log axis, but log(0) does not exist and plotly has no symlog scale.
  Points are placed at step + 1 on a log axis and the ticks are labelled with the real steps
  (0, 1, 2, 5, 10, ...): step 0 sits at the left edge, and a step s > 100 is within 1% of
  where a plain log axis would put it. Hover shows the real step (`customdata`).
- One colour per size (viridis, smaller to larger, the same in every section); the seeds of a
  size are a min-max band around their mean, each seed a legend entry of its own (hidden until
  clicked; more than `MAX_SEED_TRACES` seeds: one entry for them all); clicking a legend
  group's title toggles the whole size. The report's own suite is
  drawn solid, other suites in the table (imported Pythia results) dashed.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from pythia.results import natural_key

__all__ = ["MAX_MEMBER_TRACES", "MAX_SEED_TRACES", "Figure", "Palette", "Series", "curve_figure", "curve_traces",
           "dropdown_figure", "group_series", "heatmap_layout", "heatmap_trace", "members_figure", "natural",
           "readable_layout", "seeds_trace", "size_key", "step_axis", "step_ticks", "thin"]


@dataclass
class Figure:
    """One plot: plotly `data` and `layout`, with a caption and a line on how to read it."""

    data: list[dict]
    layout: dict
    title: str
    note: str = ""
    wide: bool = False
    """Spans the whole width of its section (heatmaps, maps) instead of one grid cell."""
    menu: list[str] = field(default_factory=list)
    """Labels of the options a menu above the plot picks from (see `dropdown_figure`); empty: no menu."""
    owner: list[int] = field(default_factory=list)
    """Per trace, the menu option it belongs to."""
    shown: list = field(default_factory=list)
    """Per trace, its visibility while its option is chosen (True, or "legendonly" for seeds)."""
    relayout: list[dict] = field(default_factory=list)
    """Per option, the layout changes it brings (plotly relayout keys, e.g. {"yaxis.type": "log"})."""

    def visible(self, option: int) -> list:
        """Trace visibility with menu option `option` chosen."""
        return [v if o == option else False for v, o in zip(self.shown, self.owner)]


# ------------------------------------------------------------------------------ ordering
natural = natural_key  # the report's name for pythia.results.natural_key


def size_key(size: str) -> tuple:
    """Pythia sizes by parameter count (70m < 1.4b < 12b), other names naturally."""
    m = re.fullmatch(r"pythia-(\d+(?:\.\d+)?)([mb])(?:-.*)?", size or "")
    if m:
        return (0, float(m[1]) * (1000 if m[2] == "b" else 1), [])
    return (1, 0.0, natural(size or ""))


class Palette:
    """size -> colour, the same in every figure of a report. The report's own sizes go from
    dark to green on viridis (yellow left out: unreadable on white), smallest first: `order`
    (a suite spec's shapes) as given, then Pythia sizes by parameters, other names naturally.
    Sizes only other suites have (imported results) take warm colours (oranges to reds), so
    they never pass for one of the suite's own."""

    def __init__(self, sizes, order=(), others=()):
        from plotly.colors import sample_colorscale

        sizes = set(sizes)
        first = [s for s in dict.fromkeys(order) if s in sizes]
        own = first + sorted(sizes - set(first), key=size_key)
        extra = sorted(set(others) - sizes, key=size_key)
        self.sizes = own + extra
        self._colours = dict(zip(own, sample_colorscale("Viridis", _spread(len(own), 0.0, 0.85))))
        self._colours.update(zip(extra, sample_colorscale("YlOrRd", _spread(len(extra), 0.45, 0.95))))

    def __call__(self, size: str) -> str:
        return self._colours.get(size, "rgb(120, 120, 120)")

    def fill(self, size: str, alpha: float = 0.2) -> str:
        rgb = re.findall(r"[\d.]+", self(size))[:3]
        return f"rgba({', '.join(rgb)}, {alpha})"


def _spread(n: int, lo: float, hi: float) -> list[float]:
    return [lo + (hi - lo) * i / max(1, n - 1) for i in range(n)]


# ------------------------------------------------------------------------------ step axis
def step_ticks(max_step: int) -> tuple[list[int], list[str]]:
    """Tick positions (step + 1) and labels (the steps 0, 1, 2, 5, 10, 20, 50, ...; past 1000
    only the decades) up to max_step."""
    top = max(max_step, 1)
    steps, base = [0], 1
    while base <= top:
        steps += [s for s in ((base, 2 * base, 5 * base) if top <= 1000 else (base,)) if s <= top]
        base *= 10
    return [s + 1 for s in steps], [_short_number(s) for s in steps]


def _short_number(n: int) -> str:
    for div, unit in ((10 ** 9, "G"), (10 ** 6, "M"), (10 ** 3, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def step_axis(max_step: int, title: str = "step") -> dict:
    """A log axis of step + 1 labelled with real steps (see the module doc)."""
    vals, text = step_ticks(max_step)
    return {"type": "log", "tickvals": vals, "ticktext": text, "title": {"text": f"{title} (log scale, 0 at the left)"},
            "range": [-0.05, math.log10(max(max_step, 1) + 1) + 0.05]}


def thin(points: list[tuple[int, float]], max_points: int = 600) -> list[tuple[int, float]]:
    """At most ~max_points of a (step, value) curve, evenly spaced on the log-step axis (a
    training log has a row per update: 143,000 for Pythia); first and last always kept."""
    if len(points) <= max_points:
        return points
    lo, hi = math.log1p(points[0][0]), math.log1p(points[-1][0])
    keep, next_at, step = [], lo, (hi - lo) / (max_points - 1)
    for i, p in enumerate(points):
        if math.log1p(p[0]) >= next_at or i == len(points) - 1:
            keep.append(p)
            next_at = math.log1p(p[0]) + step
    return keep


# ------------------------------------------------------------------------------ curves
@dataclass
class Series:
    """The members (seeds) of one (suite, size): member -> {step: value}."""

    suite: str
    size: str
    members: dict[str, dict[int, float]] = field(default_factory=dict)

    def band(self) -> tuple[list[int], list[float], list[float], list[float]]:
        """(steps, mean, min, max) over the steps every member has (else over each step's members)."""
        common = set.intersection(*(set(v) for v in self.members.values())) if self.members else set()
        steps = sorted(common or set().union(*(set(v) for v in self.members.values())))
        values = [[v[s] for v in self.members.values() if s in v] for s in steps]
        return steps, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def group_series(rows: list[dict], x: str = "step") -> list[Series]:
    """Rows (one metric) -> a Series per (suite, size), by suite then size. Rows without a
    step or a value are left out (a run-level row has no place on a step axis)."""
    groups: dict[tuple[str, str], Series] = {}
    for r in rows:
        if r.get(x) is None or r.get("value") is None:
            continue
        suite, size = r.get("suite") or "", r.get("size") or r.get("member") or ""
        s = groups.setdefault((suite, size), Series(suite, size))
        s.members.setdefault(r.get("member") or "", {})[int(r[x])] = float(r["value"])
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], size_key(k[1])))]


def _hover(label: str, what: str) -> str:
    return f"{label}<br>step %{{customdata}}<br>{what} %{{y:.4~g}}<extra></extra>"


def curve_traces(series: Series, palette: Palette, own_suites: set[str], max_points: int = 600) -> list[dict]:
    """Traces of one Series: a single line for one member; else the seeds' min-max band, their
    mean, and each seed (hidden until clicked), all in the size's legend group."""
    colour, own = palette(series.size), series.suite in own_suites or not series.suite
    label = series.size if own or not series.suite else f"{series.suite} {series.size}"
    group = f"{series.suite}|{series.size}"
    line = {"color": colour, "dash": "solid" if own else "dash", "width": 2}
    head = {"legendgroup": group, "legendgrouptitle": {"text": label}}
    if len(series.members) == 1:
        (member, values), = series.members.items()
        pts = thin(sorted(values.items()), max_points)
        return [{"type": "scatter", "mode": "lines+markers" if len(pts) <= 40 else "lines", "name": member,
                 "x": [s + 1 for s, _ in pts], "y": [v for _, v in pts], "customdata": [s for s, _ in pts],
                 "line": line, "marker": {"size": 5}, "hovertemplate": _hover(member, "value"), **head}]
    steps, mean, lo, hi = series.band()
    keep = {s for s, _ in thin(list(zip(steps, mean)), max_points)}
    idx = [i for i, s in enumerate(steps) if s in keep]
    xs = [steps[i] + 1 for i in idx]
    traces = [
        {"type": "scatter", "mode": "lines", "name": "min-max of seeds", "x": xs + xs[::-1],
         "y": [hi[i] for i in idx] + [lo[i] for i in idx][::-1], "fill": "toself", "fillcolor": palette.fill(series.size),
         "line": {"width": 0, "color": colour}, "hoverinfo": "skip", **head},
        {"type": "scatter", "mode": "lines+markers" if len(xs) <= 40 else "lines",
         "name": f"mean of {len(series.members)} seeds", "x": xs, "y": [mean[i] for i in idx],
         "customdata": [steps[i] for i in idx], "line": line, "marker": {"size": 5},
         "hovertemplate": _hover(f"{label} (mean of {len(series.members)})", "value"), **head},
    ]
    seed_line = {"color": colour, "dash": "dot", "width": 1}
    if len(series.members) > MAX_SEED_TRACES:
        return traces + [seeds_trace(series, seed_line, head, max_points)]
    for member in sorted(series.members, key=natural):
        pts = thin(sorted(series.members[member].items()), max_points)
        traces.append({"type": "scatter", "mode": "lines", "name": member, "visible": "legendonly",
                       "x": [s + 1 for s, _ in pts], "y": [v for _, v in pts], "customdata": [s for s, _ in pts],
                       "line": seed_line, "hovertemplate": _hover(member, "value"), **head})
    return traces


MAX_SEED_TRACES = 6
"""A size with more seeds than this (PolyPythias: 10) draws them as one trace, hidden until its
legend entry is clicked, instead of a legend entry per seed (50 members made 60 entries)."""


def seeds_trace(series: Series, line: dict, head: dict, max_points: int = 600) -> dict:
    """Every seed of a size in one trace: each seed's curve, the curves apart (a gap, None,
    between two seeds), hover naming the seed."""
    x, y, steps, names = [], [], [], []
    for member in sorted(series.members, key=natural):
        pts = thin(sorted(series.members[member].items()), max_points)
        if x:
            x.append(None), y.append(None), steps.append(None), names.append(None)
        x += [s + 1 for s, _ in pts]
        y += [v for _, v in pts]
        steps += [s for s, _ in pts]
        names += [member] * len(pts)
    return {"type": "scatter", "mode": "lines", "name": f"each of {len(series.members)} seeds",
            "visible": "legendonly", "x": x, "y": y, "customdata": steps, "text": names, "line": line,
            "hovertemplate": _hover("%{text}", "value"), **head}


def base_layout(ytitle: str, max_step: int, ylog: bool = False, xtitle: str = "step") -> dict:
    y = {"title": {"text": ytitle}, "zeroline": False, "automargin": True}  # long titles and labels are not cut
    if ylog:
        y["type"] = "log"
    return {"xaxis": step_axis(max_step, xtitle), "yaxis": y, "height": 380, "margin": {"l": 60, "r": 10, "t": 30, "b": 50},
            "legend": {"groupclick": "toggleitem", "font": {"size": 10}}, "hovermode": "closest",
            "template": "plotly_white"}


def curve_figure(rows: list[dict], palette: Palette, own_suites: set[str], *, title: str, ytitle: str,
                 note: str = "", ylog: bool = False, max_points: int = 600) -> Figure | None:
    """Metric vs step for every (suite, size) in `rows` (rows of one metric); None when no row
    has a step and a value."""
    series = group_series(rows)
    if not series:
        return None
    data = [t for s in series for t in curve_traces(s, palette, own_suites, max_points)]
    max_step = max(st for s in series for v in s.members.values() for st in v)
    return Figure(data=data, layout=base_layout(ytitle, max_step, ylog), title=title, note=note)


# ------------------------------------------------------------------------------ menus, heatmaps
def dropdown_figure(options: list[tuple], layout: dict, *, title: str, note: str = "",
                    wide: bool = False, yaxis_titles: bool = True) -> Figure | None:
    """One figure showing one option at a time, picked in a menu above it: many metrics or
    members in one plot instead of dozens of plots. An option is (label, traces) or (label,
    traces, layout changes as plotly relayout keys, e.g. {"yaxis.type": "log"}). Each option's
    traces keep their own visibility (seeds stay hidden until clicked). The menu is an HTML
    <select> the page wires to `Plotly.update` (pythia.report.page): its size grows with the
    traces, where plotly's own buttons would each carry the visibility of every trace."""
    options = [(o[0], o[1], o[2] if len(o) > 2 else {}) for o in options if o[1]]
    if not options:
        return None
    fig = Figure(data=[], layout=json_copy(layout), title=title, note=note, wide=wide)
    for i, (_, traces, _) in enumerate(options):
        for t in traces:
            fig.data.append(dict(t) if i == 0 else {**t, "visible": False})
            fig.owner.append(i)
            fig.shown.append(t.get("visible", True))
    fig.relayout = [({"yaxis.title.text": label} if yaxis_titles else {}) | extra for label, _, extra in options]
    for key, value in fig.relayout[0].items():
        _set_dotted(fig.layout, key, value)
    if len(options) == 1:
        fig.owner, fig.shown, fig.relayout = [], [], []
    else:
        fig.menu = [label for label, _, _ in options]
    return fig


MAX_MEMBER_TRACES = 12
"""A figure of one trace per member draws at most this many at once: more (PolyPythias' 50
members) get a menu over sizes, each option a size's members (`members_figure`)."""


def members_figure(traces: list[dict], layout: dict, *, title: str, note: str = "") -> Figure | None:
    """A figure of one trace per member (`legendgroup`: its size): as it is up to
    `MAX_MEMBER_TRACES` traces, else one size at a time (smallest first), picked in a menu."""
    if len(traces) <= MAX_MEMBER_TRACES:
        return Figure(traces, layout, title, note) if traces else None
    sizes = sorted(dict.fromkeys(t.get("legendgroup") or "" for t in traces), key=size_key)
    options = [(size or "(no size)", [t for t in traces if (t.get("legendgroup") or "") == size]) for size in sizes]
    return dropdown_figure(options, layout, title=f"{title} (menu: size)", note=note, yaxis_titles=False)


LEGEND_ROW_PX = 20  # height of one legend entry (font size 10, group titles alike)
LEGEND_GROUP_GAP_PX = 10  # plotly's legend.tracegroupgap


def readable_layout(fig: Figure) -> dict:
    """The figure's layout with what every plot of the report needs to read well, whatever
    section drew it: a legend that fits the plot's height instead of scrolling inside it; log
    axes whose minor labels are whole values ("20", "50"), not digits that read like values of
    their own ("2", "5"); and, when every y value is >= 0 (accuracies, counts, losses), no
    negative half-axis (plotly draws an all-zero accuracy from -1 to 1)."""
    layout = json_copy(fig.layout)
    for key in [k for k in layout if k.startswith(("xaxis", "yaxis"))] or ["xaxis", "yaxis"]:
        layout.setdefault(key, {})
        layout[key].setdefault("minorloglabels", "complete")
    shown = [t for i, t in enumerate(fig.data) if not fig.owner or fig.owner[i] == 0]
    if layout.get("showlegend", True) and not fig.wide:
        entries = sum(1 for t in shown if t.get("showlegend", True) and t.get("name"))
        groups = len({t["legendgroup"] for t in shown if t.get("legendgroup") and t.get("legendgrouptitle")})
        margin = layout.get("margin", {})  # the legend fits the plot area: the height less the margins
        needed = ((entries + groups) * LEGEND_ROW_PX + groups * LEGEND_GROUP_GAP_PX
                  + margin.get("t", 100) + margin.get("b", 80))
        if needed > layout.get("height", 450):
            layout["height"] = needed
    ys = [y for t in fig.data if t.get("type", "scatter") == "scatter" and not t.get("yaxis")
          for y in t.get("y") or [] if isinstance(y, (int, float))]
    y_axis = layout.setdefault("yaxis", {})
    if ys and min(ys) >= 0 and "range" not in y_axis and "rangemode" not in y_axis and y_axis.get("type") != "log":
        y_axis["rangemode"] = "nonnegative"
    return layout


def json_copy(obj):
    """A deep copy of plain JSON data (dicts, lists, scalars)."""
    if isinstance(obj, dict):
        return {k: json_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_copy(v) for v in obj]
    return obj


def _set_dotted(layout: dict, key: str, value) -> None:
    *path, last = key.split(".")
    for part in path:
        layout = layout.setdefault(part, {})
    layout[last] = value


def heatmap_trace(z: list[list], x: list, y: list, *, zmin=None, zmax=None, colorscale="Viridis",
                  ztitle: str = "", hover: str = "%{y} / %{x}: %{z:.3g}") -> dict:
    """A labelled matrix (None = no value, drawn blank)."""
    trace = {"type": "heatmap", "z": z, "x": [str(v) for v in x], "y": [str(v) for v in y], "colorscale": colorscale,
             "hovertemplate": hover + "<extra></extra>", "colorbar": {"title": {"text": ztitle}}, "xgap": 1, "ygap": 1}
    if zmin is not None:
        trace["zmin"] = zmin
    if zmax is not None:
        trace["zmax"] = zmax
    if len(x) * len(y) <= 144:  # small matrices: the numbers in the cells
        trace["texttemplate"] = "%{z:.2f}"
    return trace


def heatmap_layout(n_rows: int, xtitle: str = "", ytitle: str = "") -> dict:
    return {"xaxis": {"title": {"text": xtitle}, "type": "category"},
            "yaxis": {"title": {"text": ytitle}, "type": "category", "autorange": "reversed"},
            "height": max(260, 110 + 26 * n_rows), "margin": {"l": 140, "r": 10, "t": 30, "b": 60},
            "template": "plotly_white"}


def rows_by(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Rows grouped by the values of `keys` (insertion order of first appearance)."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[tuple(r.get(k) or "" for k in keys)].append(r)
    return out
