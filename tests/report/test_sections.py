"""The report's sections, from synthetic results-table rows in the shapes the analyses write:
which sections the table calls for, what each figure holds (recomputed from the rows'
generating functions), and that odd or missing rows give notes, never a broken report."""
from __future__ import annotations

import math
import statistics

import pytest

from pythia.report import plot
from pythia.report.sections import REGISTRY, ReportData, render_sections, section
from tests.report import synthetic as syn

ALL_KEYS = {"learning-curves", "benchmarks", "memorization", "seeds", "term-frequency", "interventions",
            "mechanisms", "analysis-my_probe"}


@pytest.fixture(scope="module")
def sections():
    return {s.key: s for s in render_sections(ReportData(syn.all_rows(), "synth", ("small", "large")))}


def figure(sec, title_part):
    found = [f for f in sec.figures if f.title == title_part] or [f for f in sec.figures if title_part in f.title]
    assert len(found) == 1, [f.title for f in sec.figures]
    return found[0]


def traces(fig, **match):
    return [t for t in fig.data if all(t.get(k) == v for k, v in match.items())]


def test_every_section_the_table_calls_for_draws_cleanly(sections):
    import plotly.graph_objects as go

    assert set(sections) == ALL_KEYS
    for sec in sections.values():
        assert sec.errors == [] and sec.notes == [], (sec.key, sec.errors, sec.notes)
        assert sec.figures, sec.key
        for fig in sec.figures:  # plotly's schema: a misspelt property raises here
            go.Figure(data=fig.data, layout=fig.layout)


def test_sections_follow_the_analyses_present():
    only_val = [r for r in syn.learning_rows() if r["analysis"] == "val_loss"]
    secs = render_sections(ReportData(only_val))
    assert [s.key for s in secs] == ["learning-curves"]
    assert len(secs[0].figures) == 1
    assert any("training loss" in n for n in secs[0].notes)
    assert render_sections(ReportData([])) == []


def test_learning_curve_is_seed_band_mean_and_each_seed(sections):
    fig = figure(sections["learning-curves"], "Validation loss")
    group = [t for t in fig.data if t["legendgroup"] == "synth|large"]
    band, mean, seeds = group[0], group[1], group[2:]
    si = syn.SIZES.index("large")
    per_step = [[syn.val_loss(si, seed, s) for seed in syn.SEEDS] for s in syn.STEPS]
    assert mean["customdata"] == list(syn.STEPS) and mean["x"] == [s + 1 for s in syn.STEPS]
    assert mean["y"] == pytest.approx([statistics.fmean(v) for v in per_step])
    n = len(syn.STEPS)
    assert band["fill"] == "toself" and band["x"] == mean["x"] + mean["x"][::-1]
    assert band["y"][:n] == pytest.approx([max(v) for v in per_step])
    assert band["y"][n:] == pytest.approx([min(v) for v in per_step][::-1])
    assert [t["name"] for t in seeds] == [syn.member("large", s) for s in syn.SEEDS]
    assert all(t["visible"] == "legendonly" for t in seeds)
    colours = {t["legendgroup"]: t["line"]["color"] for t in fig.data}
    assert colours["synth|large"] != colours["synth|small"]
    # one colour per size in every section
    bench = figure(sections["benchmarks"], "demo_mc@5shot")
    assert {t["legendgroup"]: t["line"]["color"] for t in bench.data} == colours


def test_imported_sizes_take_other_colours_unless_alone():
    rows = syn.eval_rows()
    data = ReportData(rows, "synth", ("small", "large"))
    own = [data.palette(s) for s in ("small", "large")]
    imported = [data.palette(s) for s in ("pythia-70m", "pythia-160m")]
    assert len(set(own + imported)) == 4
    assert data.palette.sizes == ["small", "large", "pythia-70m", "pythia-160m"]
    alone = ReportData([r for r in rows if r["analysis"] == "eval_import"])
    assert alone.own_suites == {"pythia"}
    fig = render_sections(alone)[0].figures[0]
    assert {t["line"]["dash"] for t in fig.data} == {"solid"}


def test_step_axis_keeps_step_zero_on_a_log_scale():
    vals, text = plot.step_ticks(64)
    assert (vals[0], text[0]) == (1, "0")
    assert text == ["0", "1", "2", "5", "10", "20", "50"] and vals == [1, 2, 3, 6, 11, 21, 51]
    vals, text = plot.step_ticks(143000)
    assert text == ["0", "1", "10", "100", "1k", "10k", "100k"]
    axis = plot.step_axis(64)
    assert axis["type"] == "log" and axis["range"][0] < 0 < math.log10(65) < axis["range"][1]


def test_thin_is_even_on_the_log_axis_and_keeps_the_ends():
    points = [(s, float(s)) for s in range(0, 143001)]
    kept = plot.thin(points, 300)
    assert kept[0] == points[0] and kept[-1] == points[-1] and len(kept) <= 301
    gaps = [math.log1p(b[0]) - math.log1p(a[0]) for a, b in zip(kept[100:-1], kept[101:-1])]  # the last is forced
    assert max(gaps) < 2.5 * min(gaps)  # past the first integers, evenly spaced in log(step+1)
    assert plot.thin(points[:50], 300) == points[:50]


def test_benchmarks_put_imported_results_dashed_beside_the_suite(sections):
    fig = figure(sections["benchmarks"], "demo_mc")
    imported = [t for t in fig.data if t["legendgroup"].startswith("pythia|")]
    assert {t["name"] for t in imported} == {"pythia-70m-deduped", "pythia-160m-deduped"}
    assert all(t["line"]["dash"] == "dash" for t in imported)
    assert all(t["line"]["dash"] == "solid" for t in fig.data if t.get("legendgroup", "").startswith("synth|")
               and t["name"].startswith("mean"))
    assert fig.menu == ["acc", "acc_norm"]
    shown = fig.visible(1)  # acc_norm: only its traces (seeds stay hidden until clicked)
    assert shown.count(True) > 0 and all(v is False for v, t in zip(shown, fig.data) if t in imported)
    assert shown.count("legendonly") == 2 * len(syn.SEEDS)
    assert fig.visible(0) == [t.get("visible", True) for t in fig.data]  # the first option is drawn first
    ppl = figure(sections["benchmarks"], "demo_lastword")
    assert ppl.layout["yaxis"]["type"] == "log"
    assert [r[0] for r in sections["benchmarks"].tables[0].rows] == ["demo_lastword", "demo_mc", "demo_mc",
                                                                     "demo_mc@5shot"]


def test_many_imported_tasks_share_one_figure():
    from pythia.report.sections.benchmarks import MAX_TASK_FIGURES

    imported = [{**r, "task": f"mmlu_{k}"} for r in syn.eval_rows() if r["analysis"] == "eval_import"
                for k in range(MAX_TASK_FIGURES + 3)]
    own = [r for r in syn.eval_rows() if r["analysis"] == "eval" and r["task"] == "demo_mc@5shot"]
    sec = render_sections(ReportData(own + imported))[0]
    assert [f.title for f in sec.figures] == ["demo_mc@5shot",
                                              f"{MAX_TASK_FIGURES + 3} more tasks, imported results only "
                                              "(menu: task and metric)"]
    labels = sec.figures[1].menu
    assert labels == [f"mmlu_{k}: acc" for k in range(MAX_TASK_FIGURES + 3)]
    alone = render_sections(ReportData(imported))[0]
    assert [f.title for f in alone.figures] == [f"{MAX_TASK_FIGURES + 3} tasks (menu: task and metric)"]
    few = render_sections(ReportData(own + [r for r in imported if r["task"] in ("mmlu_0", "mmlu_1")]))[0]
    assert [f.title for f in few.figures] == ["demo_mc@5shot", "mmlu_0", "mmlu_1"]


def test_memorization_curves_histogram_and_when(sections):
    sec = sections["memorization"]
    frac = figure(sec, "Memorized fraction")  # positions=0:{4 step} at each step: one curve
    mean = traces(frac, legendgroup="synth|small", name="mean of 4 seeds")[0]
    assert mean["customdata"] == list(syn.STEPS[1:])
    assert mean["y"] == pytest.approx([0.01 * math.log1p(s) for s in syn.STEPS[1:]])
    hist = figure(sec, "Score histogram")
    latest = [t for t in hist.data if t.get("visible", True) is True]
    large = next(t for t in latest if t["name"] == "large")
    n = syn.STEPS[-1] * 4
    assert large["x"] == list(range(syn.CONT + 1))
    assert large["y"] == pytest.approx([c / n for c in [n - 4, 1, 1, 0, 2]])
    assert hist.menu[0] == f"step {syn.STEPS[-1]}"
    when = figure(sec, "when trained")
    t = next(t for t in when.data if t["name"].startswith("small-seed2"))
    assert t["y"] == pytest.approx([0.01 * math.log1p(64) * (b + 1) / 2 for b in range(2)])


def test_memorization_vs_duplicates(sections):
    sec = sections["memorization"]
    fig = figure(sec, "Memorized vs duplicates")
    t = next(t for t in fig.data if t["name"].startswith("large-seed3"))
    last = syn.STEPS[-1]
    assert t["name"] == f"large-seed3 @ step {last}"
    assert t["x"] == ["1", "2", "3-4", "5-8"]  # log2 bins, the uncountable left out
    assert t["y"] == pytest.approx([syn.dup_frac(1, last, b) for b in range(4)])
    assert t["text"] == [last * 4 // 8 + b for b in range(4)]
    assert fig.layout["xaxis"]["categoryarray"] == ["1", "2", "3-4", "5-8"]
    assert len(fig.data) == len(syn.SIZES) * len(syn.SEEDS)
    rho = figure(sec, "Rank correlation of duplicate count")
    small = traces(rho, legendgroup="synth|small", name="mean of 4 seeds")[0]
    assert small["y"] == pytest.approx([0.1 * math.log1p(s) / 5 for s in syn.STEPS[1:]])
    assert not [f.title for f in sec.figures if f.title.startswith("memorization:")]  # none drawn generically


def test_memorization_fixed_ranges_stay_apart():
    rows = [r for r in syn.memorization_rows() if r["analysis"] == "memorization" and r["metric"] == "memorized_frac"
            and r["task"].startswith("positions=")]
    fixed = [dict(r, task=task) for r in rows for task in ("positions=0:100", "positions=100:200")]
    secs = render_sections(ReportData(fixed))
    titles = [f.title for f in secs[0].figures]
    assert sum("Memorized fraction" in t for t in titles) == 2
    assert any("positions=0:100" in t for t in titles) and any("positions=100:200" in t for t in titles)


def test_predictability_heatmaps_hold_the_rows(sections):
    fig = figure(sections["memorization"], "Across members")
    first = fig.data[0]  # latest step, precision
    assert first["x"] == first["y"] == ["large-seed1", "small-seed1"]
    assert first["z"][0][1] == syn.precision("large-seed1", 64, "small-seed1", 64)
    assert first["z"][1][0] == syn.precision("small-seed1", 64, "large-seed1", 64)
    assert first["z"][0][0] is None  # a member does not predict itself
    steps = figure(sections["memorization"], "Across checkpoints")
    z = steps.data[0]["z"]
    assert z[0][1] == syn.precision("large-seed1", 8, "large-seed1", 64)


def test_seeds_spread_outliers_agreement_and_map(sections):
    sec = sections["seeds"]
    spread = figure(sec, "Spread over seeds")
    assert spread.menu == []  # one metric (histogram bins are left out): no menu
    assert spread.layout["yaxis"]["title"]["text"] == "val_loss: val_loss"
    median = traces(spread, legendgroup="small", name="median")[0]
    assert median["y"] == pytest.approx([statistics.median(syn.val_loss(0, d, s) for d in syn.SEEDS) for s in syn.STEPS])
    table = sec.tables[0]
    assert table.rows == [["large-seed4", "val_loss", "val_loss", "", "32, 64", 4.84]]
    inter = figure(sec, "inter_seed")
    assert {t["name"] for t in inter.data if t["name"].startswith("small-")} == {"small-seed2", "small-seed3",
                                                                                 "small-seed4"}
    large_map = figure(sec, "Training map, large")
    heat = large_map.data[0]
    assert heat["x"] == [str(s) for s in syn.STEPS]
    assert heat["y"] == ["large-seed1", "large-seed2", "large-seed3 (detour)", "large-seed4"]
    assert heat["z"] == [[syn.map_state(d, s) for s in syn.STEPS] for d in syn.SEEDS]
    assert "3 states" in large_map.title
    weights = figure(sec, "Checkpoint statistics")
    assert weights.menu == ["l1", "l2", "trace"]


def test_term_frequency_scatter_and_counts(sections):
    sec = sections["term-frequency"]
    fig = figure(sec, "accuracy vs term frequency")
    assert fig.menu == ["step 64", "step 8", "step 0"]
    t = next(t for t in fig.data if t["name"] == "large-seed2" and t.get("visible", True) is True)
    assert t["x"] == [syn.term_count(x, 64) + 1 for x in range(10)]
    assert t["y"] == pytest.approx([syn.term_acc(x, 64) for x in range(10)])
    assert {f.title for f in sec.figures} >= {"Frequency effect: gap (num_reasoning_arithmetic_addition)",
                                              "Frequency effect: spearman (num_reasoning_arithmetic_addition)"}
    counts = figure(sec, "Term counts")
    first = [t for t in counts.data if t.get("visible", True) is True]
    assert sorted(t["name"] for t in first) == ['" def"', '" return"', '" self"']  # quoted: leading spaces show
    ret = next(t for t in first if t["name"] == '" return"')
    assert ret["y"] == [syn.term_count(2, s) for s in syn.STEPS]


def test_interventions_base_fork_and_difference(sections):
    fig = figure(sections["interventions"], "Base vs fork")
    labels = fig.menu
    assert labels == ["small-seed1+swap: val_loss:val_loss", "small-seed1+swap: eval:acc (demo_mc)"]
    shown = [t for t in fig.data if t.get("visible", True) is True]
    by_role = {t["name"]: t for t in shown}
    assert set(by_role) == {"base", "fork", "diff"} and by_role["diff"]["yaxis"] == "y2"
    assert by_role["fork"]["y"] == pytest.approx([syn.val_loss(0, 1, s) + 0.05 for s in (32, 64)])
    assert by_role["diff"]["y"] == pytest.approx([0.05, 0.05])


def test_unknown_analysis_gets_a_generic_section(sections):
    sec = sections["analysis-my_probe"]
    assert [f.title for f in sec.figures] == ["my_probe: probe_acc"]
    assert sec.tables[0].rows == [["small-seed1", "", "final_score", 0.75]]


@pytest.mark.parametrize("rows, expect", [
    ([{"analysis": "memorization", "metric": "sequences", "value": 5, "task": "positions=0:8"}], "memorized_frac"),
    ([{"analysis": "seeds", "metric": "n_seeds", "value": 1, "step": None, "size": "small", "member": "small/*"}],
     "1 seed"),
    ([{"analysis": "training_map", "metric": "detour", "value": 0, "step": None}], "no state"),
    ([{"analysis": "term_frequency", "metric": "gap", "value": 1.0, "task": "x"}], "per-item"),
    ([{"analysis": "compare", "metric": "val_loss", "value": 1.0}], "without a base/fork/diff role"),
    ([{"analysis": "compare", "metric": "val_loss:val_loss:fork", "value": 1.0}], "no base, diff"),
    ([{"analysis": "eval", "metric": "acc", "value": None, "task": "t"}], ""),
    ([{"analysis": "weights", "metric": "l1", "value": 1.0}], "no training map"),
])
def test_sections_say_what_is_missing_and_never_fail(rows, expect):
    base = {"suite": "s", "member": "m-seed1", "size": "m", "seed": 1, "step": 4, "task": ""}
    secs = render_sections(ReportData([{**base, **r} for r in rows]))
    assert len(secs) == 1 and secs[0].errors == []
    assert any(expect in n for n in secs[0].notes), secs[0].notes


def test_a_failing_renderer_is_contained(monkeypatch):
    monkeypatch.setattr("pythia.report.sections.REGISTRY", dict(REGISTRY))

    @section("broken", "Broken", analyses=("brokenness",), order=99)
    def boom(data, sec):
        raise KeyError("metric")

    rows = [{"suite": "s", "member": "m", "size": "m", "seed": 1, "step": 1, "analysis": a, "task": "",
             "metric": a, "value": 1.0} for a in ("brokenness", "val_loss")]
    secs = {s.key: s for s in render_sections(ReportData(rows))}
    assert secs["broken"].errors == ["KeyError: 'metric'"] and secs["learning-curves"].figures
    with pytest.raises(ValueError, match="already drawn"):
        section("other", "Other", analyses=("val_loss",), order=1)(lambda d, s: None)


def test_mechanisms_section_draws_icl_induction_lens_and_head_maps(sections):
    sec = sections["mechanisms"]
    icl = figure(sec, "In-context learning score")
    large = [t for t in icl.data if t.get("legendgroup") == "synth|large"]
    mean = large[1]
    assert mean["y"] == pytest.approx([statistics.mean(syn.icl_score(1, seed, s) for seed in syn.SEEDS)
                                       for s in syn.STEPS])
    best = figure(sec, "Largest induction score")
    assert max(t for tr in best.data for t in tr["y"]) == pytest.approx(0.9)
    heads = figure(sec, "Induction score of every head")
    assert heads.menu[0] == "large-seed1"  # the largest size's first seed is shown first
    z = heads.data[0]["z"]
    assert heads.data[0]["y"] == ["L0.H0", "L0.H1", "L1.H0", "L1.H1"]
    assert z[3] == [syn.induction(1, 1, s, 1, 1) for s in syn.STEPS]
    lens = figure(sec, "Logit lens")
    assert lens.data[0]["y"] == ["layer0", "layer1", "layer2"] and lens.data[0]["z"][2] == [0.0] * len(syn.STEPS)
    assert figure(sec, "Loss by position").menu
    captions = [t.caption for t in sec.tables]
    assert any(c.startswith("Tuned lens") for c in captions) and any(c.startswith("Phase change") for c in captions)
