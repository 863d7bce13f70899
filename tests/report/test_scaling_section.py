"""The report's Scaling section, drawn from the rows the `scaling` analysis wrote: what each figure
holds (recomputed here from the rows), its notes, and the page in headless Chromium."""
from __future__ import annotations

import statistics

import plotly.graph_objects as go
import pytest

from pythia.analysis.runner import run_analyses
from pythia.report import build_report
from pythia.report.sections import ReportData, render_sections
from pythia.results import ResultsStore
from pythia.run import open_run
from pythia.scaling import ChinchillaFit
from tests.analysis.test_scaling import synthetic_store
from tests.report.browser import find_chromium, open_page


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaling") / "store"
    synthetic_store(root)
    run_analyses(open_run(root), "scaling", options={"bootstrap": 20, "min_step": 1000}, progress=False)
    return root


@pytest.fixture(scope="module")
def section(store):
    rows = ResultsStore(store).rows()
    sections = {s.key: s for s in render_sections(ReportData(rows, "synth"))}
    return sections["scaling"], [r for r in rows if r["analysis"] == "scaling"]


def figure(sec, part):
    found = [f for f in sec.figures if part in f.title]
    assert len(found) == 1, [f.title for f in sec.figures]
    return found[0]


def test_the_section_draws_points_fits_bands_checks_and_the_frontier(section):
    sec, rows = section
    assert sec.errors == []
    for fig in sec.figures:  # plotly's schema: a misspelt property raises here
        go.Figure(data=fig.data, layout=fig.layout)
    assert [f.title for f in sec.figures] == ["synth: Chinchilla fit, loss vs tokens",
                                              "synth: compute-optimal frontier of the Chinchilla fit",
                                              "synth: Kaplan fit, loss vs parameters"]
    assert any("intermediate checkpoints" in n for n in sec.notes)  # the caveat, 8 steps per member
    fig = figure(sec, "Chinchilla fit, loss")
    # points: the mean over seeds, the seeds' standard deviation as error bars, at tokens
    pts = [r for r in rows if r["task"] == "chinchilla" and r["metric"] == "observed:val_loss" and r["size"] == "pythia-410m"]
    trace = next(t for t in fig.data if t["name"] == "pythia-410m" and t["mode"] == "markers")
    for x, y, err in zip(trace["x"], trace["y"], trace["error_y"]["array"]):
        seeds = [r["value"] for r in pts if r["tokens"] == x]
        assert len(seeds) == 3 and y == pytest.approx(statistics.mean(seeds)) and err == pytest.approx(statistics.stdev(seeds))
    # the fitted curve of a size at its fitted rows; its band is fit_hi out and fit_lo back
    line = next(t for t in fig.data if t["name"] == "fit pythia-410m")
    fit = {r["tokens"]: r["value"] for r in rows if r["task"] == "chinchilla" and r["metric"] == "fit"
           and r["member"] == "pythia-410m/*"}
    assert dict(zip(line["x"], line["y"])) == fit
    band = next(t for t in fig.data if t.get("fill") == "toself" and t["legendgroup"] == "pythia-410m")
    hi = [r["value"] for r in sorted(rows, key=lambda r: r["tokens"] or 0) if r["task"] == "chinchilla"
          and r["metric"] == "fit_hi" and r["member"] == "pythia-410m/*"]
    assert band["y"][:len(hi)] == hi
    # the check: predicted (with its stderr) and measured at the largest size's last tokens
    check = {r["metric"]: r for r in rows if r["task"] == "chinchilla" and r["metric"].endswith("_largest")}
    pred = next(t for t in fig.data if t["name"] == "predicted from smaller sizes")
    meas = next(t for t in fig.data if t["name"] == "measured (largest)")
    assert pred["x"] == [check["predicted_largest"]["tokens"]] and pred["y"] == [check["predicted_largest"]["value"]]
    assert pred["error_y"]["array"] == [check["predicted_largest"]["stderr"]]
    assert meas["y"] == [check["measured_largest"]["value"]]
    # the frontier: N_opt(C) of the fitted parameters
    params = {r["metric"]: r["value"] for r in rows if r["task"] == "chinchilla" and r["member"] == "synth/*"}
    law = ChinchillaFit(**{k: params[k] for k in ("E", "A", "B", "alpha", "beta")}, n_points=0, objective=0.0)
    front = figure(sec, "frontier").data[0]
    assert front["y"] == pytest.approx(list(law.N_opt(front["x"])))
    # the table: one line per law, with the check's relative error
    (table,) = sec.tables
    assert [r[1] for r in table.rows] == ["chinchilla", "kaplan"]
    assert table.rows[0][-1] == f"{check['relative_error_largest']['value']:+.2%}"


def test_a_store_of_imported_results_makes_a_report_with_the_section(tmp_path):
    from pythia.results_import import import_results
    from tests.analysis.test_scaling import FINAL

    store = tmp_path / "store"
    import_results(FINAL, into=store)
    run_analyses(open_run(store), "scaling", options={"metric": "perplexity", "task": "lambada_openai",
                                                      "bootstrap": 20}, progress=False)
    rep = build_report(store)
    sec = next(s for s in rep.sections if s.key == "scaling")
    assert sec.errors == []
    assert sorted(f.title for f in sec.figures) == [
        "pythia-deduped: Kaplan fit, loss vs parameters", "pythia-deduped: accuracy vs task loss (lambada_openai)",
        "pythia: Kaplan fit, loss vs parameters", "pythia: accuracy vs task loss (lambada_openai)"]
    sig = next(f for f in sec.figures if f.title == "pythia: accuracy vs task loss (lambada_openai)")
    points = [t for t in sig.data if t["mode"] == "markers" and t["name"].startswith("pythia-")]
    assert len(points) == 7 and all(len(t["x"]) == 1 for t in points)  # seven sizes, one checkpoint each
    browser = find_chromium()
    if browser is not None:  # the page itself, when Chromium is installed (CI installs it)
        status = open_page(browser, rep.html, tmp_path / "profile")
        assert status["state"] == "done" and status["errors"] == []
        assert status["sections"]["scaling"]["drawn"] == status["sections"]["scaling"]["expected"] == 4
