"""`pythia report`: the HTML page is self-contained and deterministic; it works on a run (with
its verify status), on a standalone results store, on a Hub cache, and from the CLI."""
from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from pythia.report import build_report
from pythia.run import open_run
from tests.report import synthetic as syn

MB = 1 << 20


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return syn.write_store(tmp_path_factory.mktemp("store") / "pythia-store", syn.all_rows())


def figures_of(page: str) -> list[dict]:
    m = re.search(r'<script type="application/json" id="report-figures">(.*?)</script>', page, re.S)
    return json.loads(m[1])


def test_store_report_is_one_self_contained_file(store, tmp_path):
    view = open_run(store)  # a results store alone (units/): a run without members or checkpoints
    assert view.kind == "store" and view.members == []
    rep = build_report(store, tmp_path / "out")
    page = rep.html.read_text(encoding="utf-8")
    assert rep.html == tmp_path / "out" / "index.html" and rep.run_dir == store.resolve()
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"index.html", "results.csv", "learning_curves.png",
                                                              "summary.txt"}
    assert rep.html.stat().st_size < 15 * MB
    # nothing loaded from elsewhere: no src/href on scripts, links, images or frames
    assert re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=", page) == []
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()[:300]) == 1  # plotly.js inlined once, not per figure
    figs = figures_of(page)
    assert len(figs) == sum(len(s.figures) for s in rep.sections) > 10
    assert [f["id"] for f in figs] == re.findall(r'<div class="plot" id="(fig-\d+)">', page)
    declared = dict(re.findall(r'data-key="([^"]+)" data-figures="(\d+)"', page))
    assert declared == {s.key: str(len(s.figures)) for s in rep.sections}
    assert "results store" in page and "not applicable" in page
    assert "pythia-160m-deduped" in page  # imported members in the header's table
    assert rep.table.read_text().count("\n") == len(syn.all_rows()) + 1


def test_report_is_deterministic(store, tmp_path):
    a = build_report(store, tmp_path / "a").html.read_bytes()
    b = build_report(store, tmp_path / "b").html.read_bytes()
    assert a == b


def test_cli_on_a_run_without_verify(tmp_path):
    from pythia.cli import main
    from tests.test_report import make_run

    run = make_run(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(run), "--no-verify"]) == 0
    page = run / "report" / "index.html"
    assert f"report  {page} " in out.getvalue()
    text = page.read_text(encoding="utf-8")
    assert "skipped (--no-verify)" in text and "small-seed2" in text
    assert "GPT-NeoX v1.0 training order, data seed 1234" in text


def test_verify_problems_are_in_the_header(tmp_path):
    from tests.test_report import make_run

    run = make_run(tmp_path, sizes=("a",), seeds=(1,))  # a results table but no checkpoints
    rep = build_report(run, tmp_path / "out")
    assert rep.verify_status == "problems"
    page = rep.html.read_text(encoding="utf-8")
    assert 'class="badge problems"' in page and "a-seed1: " in page and "missing" in page


def test_demo_report_header_and_verify(quick_demo, tmp_path):
    out, stdout = quick_demo
    assert (out / "report" / "index.html").is_file()
    assert str(out / "report" / "index.html") in stdout  # `pythia demo` prints where the page is
    rep = build_report(out, tmp_path / "r")
    assert rep.verify_status == "ok"
    page = rep.html.read_text(encoding="utf-8")
    view = open_run(out)
    for m in view.members:
        steps = m.steps
        assert m.name in page
        assert f"{steps[-1] * m.global_batch * m.seq_len:,}" in page  # tokens seen
    fork_menu = next(f for s in rep.sections if s.key == "interventions" for f in s.figures).menu
    assert fork_menu[0].endswith(": val_loss") and len(fork_menu) > 3  # opens on the loss; every shared metric
    keys = [s.key for s in rep.sections]  # losses, every study the demo ran, the fork against its base, its probe
    assert keys == ["learning-curves", "benchmarks", "scaling", "memorization", "seeds", "mechanisms", "representations",
                    "term-frequency", "token-dynamics", "tracing", "interventions", "analysis-pronoun_probe"]
    assert all(not s.errors for s in rep.sections)
    assert 'class="badge ok"' in page


def test_hub_cache_report(quick_hub, tmp_path, monkeypatch):
    cache, repo = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    rep = build_report(repo, tmp_path / "hub-report", verify=True)
    assert rep.verify_status == "not applicable"
    assert "No results" in rep.html.read_text(encoding="utf-8")
