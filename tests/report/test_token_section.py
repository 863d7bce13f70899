"""The Token dynamics section from synthetic rows in the shapes token_curves and seed_convergence
write: what each figure and the table hold, and notes (never errors) for what is missing."""
from __future__ import annotations

import pytest

from pythia.report.sections import ReportData, render_sections

STEPS = (0, 1, 2, 4, 8, 16, 32, 64)
MEMBERS = {"small-seed1": ("small", 1), "small-seed2": ("small", 2), "large-seed1": ("large", 1)}


def row(analysis, member, size, seed, step, metric, value, task=""):
    return {"suite": "synth", "member": member, "size": size, "seed": seed, "step": step, "tokens": None,
            "analysis": analysis, "task": task, "metric": metric, "value": value, "stderr": None}


def curve_rows() -> list[dict]:
    rows = []
    for i, (m, (size, seed)) in enumerate(MEMBERS.items()):
        for s in STEPS:
            rows += [row("token_curves", m, size, seed, s, "mean_surprisal", 7.0 / (1 + s) + i),
                     row("token_curves", m, size, seed, s, "acquired_frac", s / 64),
                     row("token_curves", m, size, seed, s, "r2_unigram", 0.3 * s / 64),
                     row("token_curves", m, size, seed, s, "r2_bigram", 0.5 * s / 64)]
        for k in range(5):
            task = f"freq=2^{k}:2^{k + 1}"
            rows += [row("token_curves", m, size, seed, None, "aoa_median", 64 / 2 ** k + i, task),
                     row("token_curves", m, size, seed, None, "n_tokens", 10 * (k + 1), task)]
        rows += [row("token_curves", m, size, seed, None, "aoa_median", 9.0),  # all tokens: not a bucket
                 row("token_curves", m, size, seed, None, "forgotten", 2.5 - i, f"1. def f(self⟦)⟧"),
                 row("token_curves", m, size, seed, None, "forgotten", 1.5 - i, f"2. x = 1\\n  ⟦ return⟧")]
    for size in ("small", "large"):
        rows += [row("seed_convergence", "", size, None, s, "symmetric_kl", 1.0 / (1 + s), size) for s in STEPS]
    return rows


def render(rows):
    return {s.key: s for s in render_sections(ReportData(rows, "synth", ("small", "large")))}["token-dynamics"]


def test_token_dynamics_draws_every_figure_and_the_table():
    import plotly.graph_objects as go

    sec = render(curve_rows())
    assert sec.errors == [] and sec.notes == []
    titles = [f.title for f in sec.figures]
    assert titles == ["Mean surprisal of the probe", "Share of probe tokens acquired", "Age of acquisition vs frequency",
                      "R² of the unigram fit", "R² of the unigram + bigram fit", "Cross-seed symmetric KL"]
    for fig in sec.figures:
        go.Figure(data=fig.data, layout=fig.layout)
    aoa = sec.figures[2]
    by_name = {t["name"]: t for t in aoa.data}
    assert set(by_name) == set(MEMBERS)
    assert by_name["large-seed1"]["x"] == [1, 2, 4, 8, 16]
    assert by_name["large-seed1"]["y"] == pytest.approx([64 / 2 ** k + 2 + 1 for k in range(5)])  # step + 1
    assert by_name["small-seed2"]["customdata"][0] == ["2^0..2^1", 65.0, 10.0]
    kl = sec.figures[-1]
    assert sorted(t["name"] for t in kl.data) == ["large", "small"]  # one line per size, named by it
    assert all(t["y"] == pytest.approx([1.0 / (1 + s) for s in STEPS]) for t in kl.data)
    (table,) = sec.tables
    assert table.rows[0] == ["large-seed1", 1, "def f(self", ")", 0.5]
    assert table.rows[1] == ["large-seed1", 2, "x = 1\\n  ", " return", -0.5]
    assert len(table.rows) == 6


def test_missing_parts_are_notes():
    only_kl = [r for r in curve_rows() if r["analysis"] == "seed_convergence"]
    sec = render(only_kl)
    assert sec.errors == [] and len(sec.figures) == 1
    assert any("no token curves" in n for n in sec.notes)
    no_fits = [r for r in curve_rows() if r["analysis"] == "token_curves" and not r["metric"].startswith("r2")]
    sec = render(no_fits)
    assert sec.errors == []
    assert any("no n-gram fits" in n for n in sec.notes) and any("no cross-seed divergence" in n for n in sec.notes)
