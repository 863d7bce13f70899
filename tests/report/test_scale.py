"""The report at PolyPythias' shape (5 sizes x 10 seeds x Pythia's 154 checkpoints, synthetic
rows): a size's many seeds are one trace, figures of one trace per member get a menu over sizes,
menus carry their options as data drawn on pick, shared arrays are written once and numbers as
typed arrays (decoded, the same figures), curves of many points are thinned for drawing only
(results.csv keeps every row), and the page stays small."""
from __future__ import annotations

import json
import math
import os
import re

import pytest

from pythia.report import build_report, compact, plot
from pythia.report.header import Header
from pythia.report.page import _entries, render_page
from pythia.report.sections import ReportData, Section, render_sections
from pythia.results import ResultsStore
from tests.report import synthetic as syn

MB = 1 << 20


@pytest.fixture(scope="module")
def many():
    rows = syn.many_rows()
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    return rows, {s.key: s for s in render_sections(ReportData(rows, "synth", sizes))}


def page_blocks(page: str) -> tuple[list, list]:
    blocks = [json.loads(m) for m in re.findall(r'<script type="application/json" id="report-(?:figures|arrays)">(.*?)'
                                                r"</script>", page, re.S)]
    return blocks[0], blocks[1]


def close(got, want) -> bool:
    """float32 of the page's 7 significant digits, gaps (None) where they were."""
    if not isinstance(want, list):
        return got == want
    return len(got) == len(want) and all(
        x == y if x is None or y is None else math.isclose(x, y, rel_tol=1e-7) for x, y in zip(got, want))


def test_many_seeds_of_a_size_are_one_trace(many):
    rows, sections = many
    fig = next(f for f in sections["learning-curves"].figures if f.title == "Validation loss")
    groups = {}
    for t in fig.data:
        groups.setdefault(t["legendgroup"], []).append(t)
    assert len(groups) == 5 and all(len(g) == 3 for g in groups.values())  # band, mean, the seeds: not 12 traces
    band, mean, seeds = groups["synth|pythia-140m"]
    assert seeds["name"] == "each of 10 seeds" and seeds["visible"] == "legendonly"
    # the seeds' curves one after another, None between two: each seed's values, its name on each point
    want = {r["member"]: {} for r in rows if r["size"] == "pythia-140m"}
    for r in rows:
        if r["analysis"] == "val_loss" and r["size"] == "pythia-140m":
            want[r["member"]][r["step"]] = r["value"]
    cuts = [i for i, v in enumerate(seeds["y"]) if v is None]
    assert len(cuts) == 9 and all(seeds["x"][i] is None and seeds["text"][i] is None for i in cuts)
    for k, (lo, hi) in enumerate(zip([-1] + cuts, cuts + [len(seeds["y"])])):
        name = syn.member("pythia-140m", k + 1)
        assert set(seeds["text"][lo + 1:hi]) == {name}
        assert seeds["customdata"][lo + 1:hi] == list(syn.PYTHIA_STEPS)
        assert seeds["y"][lo + 1:hi] == [want[name][s] for s in syn.PYTHIA_STEPS]
    assert mean["y"] == pytest.approx([sum(v[s] for v in want.values()) / 10 for s in syn.PYTHIA_STEPS])


def test_few_seeds_keep_a_trace_each():
    rows = [r for r in syn.many_rows(sizes=1, seeds=plot.MAX_SEED_TRACES, tasks=1) if r["analysis"] == "val_loss"]
    fig = ReportData(rows).curve(rows, title="t", ytitle="y")
    names = [t["name"] for t in fig.data[2:]]
    assert names == [syn.member("pythia-70m", k) for k in range(1, plot.MAX_SEED_TRACES + 1)]


def test_a_figure_of_one_trace_per_member_gets_a_size_menu(many):
    _, sections = many
    fig = next(f for f in sections["memorization"].figures if f.title.startswith("Memorized vs when trained"))
    assert fig.title.endswith("(menu: size)")
    assert fig.menu == [f"pythia-{70 * 2 ** i}m" for i in range(5)]  # smallest first
    for i, size in enumerate(fig.menu):
        shown = [t for t, v in zip(fig.data, fig.visible(i)) if v is not False]
        assert [t["name"].split(" @")[0] for t in shown] == [syn.member(size, k) for k in range(1, 11)]
    # the demo's few members: one figure, every member in it
    few = render_sections(ReportData(syn.memorization_rows(), "synth", syn.SIZES))[0]
    fig = next(f for f in few.figures if f.title.startswith("Memorized vs when trained"))
    assert fig.menu == [] and len(fig.data) == len(syn.SIZES) * len(syn.SEEDS)


def test_menus_carry_their_options_as_data_drawn_on_pick(many):
    _, sections = many
    fig = next(f for f in sections["seeds"].figures if f.menu)  # the weights statistics: 14 options
    entry = _entries([Section("k", "K", figures=[fig])])[0]
    assert len(entry["menu"]["options"]) == len(fig.menu) - 1 == 13
    assert entry["menu"]["relayout"] == fig.relayout
    for i, traces in enumerate([entry["data"]] + entry["menu"]["options"]):
        mine = [(t, v) for t, o, v in zip(fig.data, fig.owner, fig.shown) if o == i]
        assert len(traces) == len(mine)
        for drawn, (t, v) in zip(traces, mine):
            assert drawn.get("visible", True) == v and drawn["y"] == t["y"]


def test_compact_round_trip_pools_shared_arrays_and_types_numbers():
    steps = list(range(0, 2000, 100))
    traces = [{"type": "scatter", "x": [s + 1 for s in steps], "y": [math.sin(s) * 1e3 + 0.123456789 for s in steps],
               "customdata": steps, "text": ["a"] * len(steps)},
              {"type": "scatter", "x": [s + 1 for s in steps], "y": [None] + [1e40] * (len(steps) - 1),
               "customdata": [s / 3 for s in steps], "text": ["a"] * len(steps)},
              {"type": "bar", "x": [1, 2], "y": [0.5, 0.25]}]
    figs = [{"id": "fig-0", "data": traces[:1], "layout": {}, "menu": {"options": [traces[1:]], "relayout": [{}, {}]}}]
    out, pool = compact.compact(figs)
    assert len(pool) == 2  # the x (steps + 1, as i4) and the hover text both traces hold, once each
    first, second = out[0]["data"][0], out[0]["menu"]["options"][0][0]
    assert first["x"] == second["x"] == {"@": 0} and first["text"] == second["text"] == {"@": 1}
    assert pool[0]["dtype"] == first["customdata"]["dtype"] == "i4" and first["y"]["dtype"] == "f4"
    assert isinstance(second["y"], list)  # beyond float32's range: a JSON list
    assert isinstance(second["customdata"], list)  # floats shown as they are: decimal
    assert out[0]["menu"]["options"][0][1] == traces[2]  # short arrays: as they were
    back = compact.expand(out, pool)
    want = compact.short_floats(figs)
    assert back[0]["data"][0]["x"] == want[0]["data"][0]["x"] and back[0]["data"][0]["customdata"] == steps
    assert back[0]["data"][0]["y"] == pytest.approx(want[0]["data"][0]["y"], rel=1e-7)
    assert back[0]["menu"]["options"] == want[0]["menu"]["options"]
    f4 = compact.typed([None, 1.5, None, 2.5, 0.0, -3.25, 7.0, 8.0], floats=True)
    assert compact.decode(f4) == [None, 1.5, None, 2.5, 0.0, -3.25, 7.0, 8.0]  # None: a gap, kept


def test_many_member_page_stays_small_and_draws_the_same_figures(many, tmp_path):
    from plotly.offline import get_plotlyjs

    rows, sections = many
    page = render_page(Header("many", "test"), list(sections.values()), get_plotlyjs())
    figs, pool = page_blocks(page)
    entries = json.loads(json.dumps(compact.short_floats(_entries(list(sections.values())))))
    drawn = compact.expand(figs, pool)
    assert [f["id"] for f in drawn] == [f["id"] for f in entries]
    for got, want in zip(drawn, entries):
        assert got["layout"] == want["layout"]
        for a, b in zip([got["data"]] + got.get("menu", {}).get("options", []),
                        [want["data"]] + want.get("menu", {}).get("options", []), strict=True):
            assert [{k: v for k, v in t.items() if k != "y"} for t in a] == [{k: v for k, v in t.items() if k != "y"}
                                                                            for t in b]
            assert all(close(s.get("y"), t.get("y")) for s, t in zip(a, b))
    values = len(rows)  # every row drawn in a trace (and in a band and a mean)
    data = len(page) - len(get_plotlyjs())
    inline = len(json.dumps(entries, separators=(",", ":")))
    assert data < inline / 2  # the same figures written as plain JSON lists take more than twice the bytes
    assert data < 12 * values  # bytes per row of the table (~50 as plain JSON)
    assert len(page) < 15 * MB


def test_thinned_curves_keep_their_ends_and_the_table_keeps_every_row(tmp_path):
    steps = list(range(1, 3001))
    rows = [syn._row("train_loss", size, seed, s, "train_loss", 7 - math.log(s) / 2 + seed / 100)
            for size in syn.SIZES for seed in (1, 2) for s in steps]
    rows += [syn._row("val_loss", size, seed, s, "val_loss", 7 - math.log1p(s) / 2) for size in syn.SIZES
             for seed in (1, 2) for s in (0, 1000, 3000)]
    root = syn.write_store(tmp_path / "store", rows)
    store = ResultsStore(root)
    store.compact(min_units=0)  # folded: the page reads train_loss at the steps it draws only
    store.write_csv()
    rep = build_report(root, tmp_path / "out")
    fig = next(f for s in rep.sections for f in s.figures if f.title == "Training loss")
    for t in fig.data:
        if t.get("customdata") and None not in t["customdata"]:
            assert len(t["customdata"]) <= 600 and t["customdata"][0] == 1 and t["customdata"][-1] == 3000
    table = rep.table.read_text()
    assert table.count("\n") == len(rows) + 1 and table == (root / "results.csv").read_text()
    assert os.path.samefile(rep.table, root / "results.csv")  # the run's fresh export, linked: not exported again
    store.put("val_loss", [syn._row("val_loss", "small", 3, 0, "val_loss", 7.0)], key={}, member="small-seed3")
    rep = build_report(root, tmp_path / "out")  # the export is stale now: the report writes its own
    assert not os.path.samefile(rep.table, root / "results.csv")
    assert rep.table.read_text().count("\n") == len(rows) + 2


def test_accuracy_vs_frequency_menu_keeps_24_checkpoints_with_both_ends():
    from pythia.report.sections.terms import MAX_SCATTER_STEPS, menu_steps

    picked = menu_steps(list(syn.PYTHIA_STEPS))
    assert len(picked) == MAX_SCATTER_STEPS and picked[0] == 143000 and picked[-1] == 0
    assert picked == sorted(set(picked), reverse=True) and set(picked) <= set(syn.PYTHIA_STEPS)
    assert menu_steps([8, 0, 64]) == [64, 8, 0]  # the demo's few: all, latest first


def test_a_dense_analysis_read_by_members_gives_the_rows_read_at_once(tmp_path, monkeypatch):
    from pythia.report import source
    from tests.test_report import make_run

    run = make_run(tmp_path, seeds=(1, 2, 3))
    store = ResultsStore(run / "results")
    store.compact(min_units=0)
    at_once, counts = source.report_rows(store)
    assert counts == {"train_loss": 6 * 20} and {r["analysis"] for r in at_once} == {"val_loss", "train_loss"}
    monkeypatch.setattr(source, "MEMBERS_PER_READ", 4)  # 6 members: two reads
    src = source.open_source(run)
    assert src.rows == at_once and src.thinned == ("train_loss",) and src.counts == counts
    assert src.rows[0]["member"] is src.rows[1]["member"]  # one string per distinct name
