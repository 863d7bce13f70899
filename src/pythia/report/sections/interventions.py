"""Interventions (Pythia paper §6: a member forked at step S and trained on transformed batches,
compared with its base): analysis `compare`.

Rows it reads, per (fork, step) at the steps base and fork share: member = the fork, task = the
compared task (empty for a loss), metric `{analysis}:{metric}:{role}` with role `base`, `fork`
or `diff` (fork - base), e.g. `val_loss:val_loss:fork`, `eval:acc:diff`. (`{metric}:{role}`
without the analysis is read too.) A compared metric lacking a role is named in a note.
"""
from __future__ import annotations

from ..plot import base_layout, dropdown_figure, natural
from . import ReportData, Section, section
from .generic import label as task_label

COMPARE = "compare"
ROLES = ("base", "fork", "diff")
FORK_COLOUR = "rgb(230, 120, 20)"  # orange: no size colour of the palette, so base and fork never look alike


def parse(metric: str) -> tuple[str, str] | None:
    """`val_loss:val_loss:fork` -> ("val_loss:val_loss", "fork"); None when there is no role."""
    head, sep, role = metric.rpartition(":")
    return (head, role) if sep and head and role in ROLES else None


@section("interventions", "Interventions: base vs fork", analyses=(COMPARE,), order=60)
def render(data: ReportData, sec: Section) -> None:
    sec.intro = ("A member forked at step S and trained on transformed batches from then on, against its base "
                 "at the steps both have: both values (base solid in its size's colour, fork dashed in "
                 "orange) and their difference (grey, right axis).")
    pairs: dict[tuple[str, str, str], dict[str, dict[int, float]]] = {}
    sizes, unparsed = {}, set()
    for r in data.of(COMPARE):
        parsed = parse(r["metric"])
        if parsed is None:
            unparsed.add(r["metric"])
            continue
        if r.get("step") is None or r.get("value") is None:
            continue
        what, role = parsed
        pairs.setdefault((r["member"], what, r.get("task") or ""), {}).setdefault(role, {})[r["step"]] = r["value"]
        sizes[r["member"]] = r.get("size") or r["member"]
    if unparsed:
        sec.notes.append(f"compare rows without a base/fork/diff role not drawn: {', '.join(sorted(unparsed)[:8])}")
    options, max_step = [], 0
    first = ("val_loss", "val_loss:val_loss")  # the menu opens on the validation loss (compare names it either way)
    for key in sorted(pairs, key=lambda k: (natural(k[0]), k[1] not in first, natural(k[1]), natural(k[2]))):
        fork, what, task = key
        roles = pairs[key]
        missing = [r for r in ROLES if r not in roles]
        if missing:
            sec.notes.append(f"{fork} {task_label(task, what)}: no {', '.join(missing)} values")
        traces = [_trace(role, roles[role], data.palette(sizes[fork])) for role in ROLES if role in roles]
        max_step = max([max_step] + [s for v in roles.values() for s in v])
        options.append((f"{fork}: {task_label(task, what)}", traces))
    layout = base_layout("", max_step)
    layout["yaxis2"] = {"overlaying": "y", "side": "right", "title": {"text": "fork - base"}, "zeroline": True,
                        "showgrid": False, "automargin": True}
    layout["margin"] = {**layout["margin"], "r": 70}  # room for the right axis' labels (e.g. -0.0014)
    sec.add(dropdown_figure(options, layout, title="Base vs fork (menu: fork and metric)"),
            "no comparison rows with base/fork/diff values (run `pythia compare RUN BASE FORK`)")


def _trace(role: str, values: dict[int, float], colour: str) -> dict:
    steps = sorted(values)
    style = {"base": {"color": colour, "width": 2}, "fork": {"color": FORK_COLOUR, "width": 2, "dash": "dash"},
             "diff": {"color": "rgb(110, 110, 110)", "width": 1}}[role]
    trace = {"type": "scatter", "mode": "lines+markers", "name": role, "x": [s + 1 for s in steps],
             "y": [values[s] for s in steps], "customdata": steps, "line": style, "marker": {"size": 5},
             "hovertemplate": f"{role}<br>step %{{customdata}}: %{{y:.4~g}}<extra></extra>"}
    if role == "diff":
        trace["yaxis"] = "y2"
    return trace
