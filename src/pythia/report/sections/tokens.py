"""Token dynamics (Chang, Tu and Bergen, TACL 2024; Michaelov et al. 2025; Fehlauer, Mahowald
and Pimentel 2025): analyses `token_curves` and `seed_convergence`.

Rows it reads:
- `token_curves` per (member, step): `mean_surprisal`, `acquired_frac`, `r2_unigram`,
  `r2_bigram`, `coef_unigram`, `coef_bigram`; per member (no step): `aoa_median`,
  `forgettability_mean`, `variability_mean`, `n_tokens` over all tokens (task "") and per
  frequency bucket (task `freq=2^k:2^(k+1)`), and `forgotten` (task "rank. context⟦token⟧").
- `seed_convergence` per (size, step), member empty, task = the size: `symmetric_kl`.
"""
from __future__ import annotations

import re

from ..plot import Figure, base_layout, members_figure, natural, rows_by, size_key
from . import ReportData, Section, Table, section

CURVES, KL = "token_curves", "seed_convergence"
BUCKET = re.compile(r"freq=2\^(\d+):2\^(\d+)$")
FORGOTTEN = re.compile(r"(\d+)\. (.*)⟦(.*)⟧$", re.S)
MAX_FORGOTTEN_ROWS = 30


@section("token-dynamics", "Token dynamics", analyses=(CURVES, KL), order=55)
def render(data: ReportData, sec: Section) -> None:
    sec.intro = ("The surprisal of every token of a fixed held-out probe at every checkpoint: when each token is "
                 "learned (its age of acquisition: the step where its surprisal has come half-way from its first "
                 "value to its minimum), how much is forgotten again, how far the model tracks the unigram and "
                 "bigram statistics of what it had seen by each step, and how alike the seeds of a size predict.")
    rows = data.of(CURVES)
    for metric, title, ytitle, note in (
            ("mean_surprisal", "Mean surprisal of the probe", "nats", ""),
            ("acquired_frac", "Share of probe tokens acquired", "share of tokens",
             "A token counts from its age of acquisition on.")):
        sec.add(data.curve(data.of(CURVES, metric=metric), title=title, ytitle=ytitle, note=note),
                f"token_curves: no {metric} rows" if rows else "")
    sec.add(aoa_figure(data), "token_curves: no age of acquisition by frequency (the members' training data is "
                              "unknown, or the member stage has not run)" if rows else "")
    for metric, title in (("r2_unigram", "R² of the unigram fit"), ("r2_bigram", "R² of the unigram + bigram fit")):
        sec.add(data.curve(data.of(CURVES, metric=metric), title=title, ytitle="R²",
                           note="Least squares of each token's surprisal on the n-gram surprisals of what the "
                                "member had trained on by that step."), "")
    if rows and not data.of(CURVES, metric="r2_unigram"):
        sec.notes.append("no n-gram fits: the members' training order is unknown (a Hub run opened without data=)")
    kl = [dict(r, member=r.get("size") or "") for r in data.of(KL, metric="symmetric_kl")]  # one line per size
    sec.add(data.curve(kl, title="Cross-seed symmetric KL", ytitle="nats per token",
                       note="½[KL(a‖b) + KL(b‖a)] between the next-token distributions of two seeds of a size, "
                            "averaged over the probe's tokens and over every pair of seeds."),
            "" if kl or not data.of(KL) else "seed_convergence: no symmetric_kl rows")
    if not kl:
        sec.notes.append("no cross-seed divergence (run `pythia analyze RUN seed_convergence` on a run with "
                         "several seeds per size)")
    table = forgotten_table(data)
    if table:
        sec.tables.append(table)
    if not rows:
        sec.notes.append("no token curves (run `pythia analyze RUN token_curves`)")


def aoa_figure(data: ReportData) -> Figure | None:
    """Median age of acquisition per frequency bucket, one line per member, on log-log axes."""
    traces, top = [], 1
    for (member,), group in sorted(rows_by(data.of(CURVES, metric="aoa_median"), "member").items(),
                                   key=lambda kv: natural(kv[0][0])):
        counts = {r["task"]: r["value"] for r in data.of(CURVES, metric="n_tokens") if r["member"] == member}
        pts = sorted((int(m[1]), r["value"], counts.get(r["task"])) for r in group
                     if r.get("value") is not None and (m := BUCKET.match(r.get("task") or "")))
        if not pts:
            continue
        size = group[0].get("size") or member
        top = max([top] + [2 ** k for k, _, _ in pts])
        traces.append({"type": "scatter", "mode": "lines+markers", "name": member, "legendgroup": size,
                       "x": [2 ** k for k, _, _ in pts], "y": [v + 1 for _, v, _ in pts],
                       "customdata": [[f"2^{k}..2^{k + 1}", v, n] for k, v, n in pts],
                       "marker": {"color": data.palette(size), "size": 6},
                       "line": {"color": data.palette(size), "width": 1},
                       "hovertemplate": f"{member}<br>seen %{{customdata[0]}} times<br>median age of acquisition: "
                                        "step %{customdata[1]}<br>%{customdata[2]} tokens<extra></extra>"})
    if not traces:
        return None
    layout = base_layout("median age of acquisition (step)", 0)
    layout["xaxis"] = {"type": "log", "title": {"text": "occurrences in the data seen by the last checkpoint"}}
    layout["yaxis"] = {"type": "log", "title": {"text": "median age of acquisition (step + 1)"}}
    traces.sort(key=lambda t: (size_key(t["legendgroup"]), natural(t["name"])))
    return members_figure(traces, layout, title="Age of acquisition vs frequency",
                          note="Probe tokens binned by log2 of how often the member had seen them; steps + 1 on a "
                               "log axis.")


def forgotten_table(data: ReportData) -> Table | None:
    found = []
    for r in data.of(CURVES, metric="forgotten"):
        m = FORGOTTEN.match(r.get("task") or "")
        if m and r.get("value") is not None:
            found.append((natural(r["member"]), int(m[1]), r["member"], m[2], m[3], r["value"]))
    if not found:
        return None
    found.sort()
    shown = found[:MAX_FORGOTTEN_ROWS]
    more = f" (first {len(shown)} of {len(found)}; all in results.csv)" if len(found) > len(shown) else ""
    return Table(["member", "rank", "context", "token", "forgettability (nats)"],
                 [[member, rank, context, token, round(value, 3)] for _, rank, member, context, token, value in shown],
                 "Most-forgotten probe tokens: surprisal at the last checkpoint minus its minimum over training"
                 + more)
