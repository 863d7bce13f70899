"""The report in a real browser (headless Chromium): it loads with no console error, every
section draws the plots its results call for, and a screenshot is saved (in the test's tmp
folder). Skipped, saying how to install it, where Chromium is absent; CI (.ci/run) installs it."""
from __future__ import annotations

import os

import pytest

from pythia.report import build_report
from pythia.report.header import Header
from pythia.report.page import render_page
from tests.report import synthetic as syn
from tests.report.browser import INSTALL_HINT, find_chromium, open_page

BROWSER = find_chromium()
REQUIRED = os.environ.get("PYTHIA_REQUIRE_BROWSER") == "1"  # set by .ci/run: CI fails instead of skipping
pytestmark = pytest.mark.skipif(BROWSER is None and not REQUIRED, reason=f"no Chromium: {INSTALL_HINT}")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _browser_present():
    if BROWSER is None:
        pytest.fail(f"PYTHIA_REQUIRE_BROWSER=1 but no Chromium found: {INSTALL_HINT}")


def check_drawn(status: dict, sections) -> None:
    assert status["state"] == "done", status
    assert status["errors"] == []
    want = {s.key: len(s.figures) for s in sections}
    assert {k: v["expected"] for k, v in status["sections"].items()} == want
    assert {k: v["drawn"] for k, v in status["sections"].items()} == want
    assert status["drawn"] == status["expected"] == sum(want.values())
    menus = [(f"fig-{i}", f) for i, f in enumerate(f for s in sections for f in s.figures) if f.menu]
    assert status["menus"] == len(menus)  # each menu switched to its last option and back
    assert status["menuShown"] == {i: sum(v is not False for v in f.visible(len(f.menu) - 1)) for i, f in menus}
    figures = [f for s in sections for f in s.figures]
    for i, f in enumerate(figures):  # the numbers drawn are the figure's (shared and typed arrays decoded)
        drawn = status["ySums"][f"fig-{i}"]
        first = [t for t, v in zip(f.data, f.visible(0) if f.menu else [True] * len(f.data)) if v is not False]
        assert len(drawn) == len(first), f.title
        for (n, total), t in zip(drawn, first):
            ys = [y for y in t.get("y") or [] if isinstance(y, (int, float)) and not isinstance(y, bool)]
            assert n == len(ys) and total == pytest.approx(sum(ys), rel=1e-5, abs=1e-6), f.title


def test_every_section_renders_in_chromium(tmp_path):
    store = syn.write_store(tmp_path / "store", syn.all_rows())
    rep = build_report(store)
    assert all(s.figures for s in rep.sections) and len(rep.sections) == 8
    png = tmp_path / "report.png"
    check_drawn(open_page(BROWSER, rep.html, tmp_path / "profile", screenshot=png), rep.sections)
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 50_000


def test_demo_report_renders_in_chromium(quick_demo, tmp_path):
    out, _ = quick_demo
    rep = build_report(out, tmp_path / "report", verify=False)
    check_drawn(open_page(BROWSER, rep.html, tmp_path / "profile"), rep.sections)


def test_the_check_sees_a_broken_page(tmp_path):
    """The status is no rubber stamp: a script error and a missing plotly.js are reported."""
    page = tmp_path / "broken.html"
    page.write_text(render_page(Header("broken", "test"), [], "console.error('boom'); undefinedCall();"))
    status = open_page(BROWSER, page, tmp_path / "profile")
    assert status["state"] == "error"
    errors = " | ".join(status["errors"])
    assert "console.error: boom" in errors and "undefinedCall" in errors and "plotly.js did not load" in errors


def test_many_member_page_renders_in_chromium(tmp_path):
    """PolyPythias' shape (5 sizes x 10 seeds x 154 checkpoints): shared and typed arrays
    decoded, each menu's options drawn on pick, every figure drawn, no error."""
    from plotly.offline import get_plotlyjs

    from pythia.report.sections import ReportData, render_sections

    rows = syn.many_rows()
    sections = render_sections(ReportData(rows, "synth", list(dict.fromkeys(r["size"] for r in rows))))
    page = tmp_path / "many.html"
    page.write_text(render_page(Header("many", "test"), sections, get_plotlyjs()), encoding="utf-8")
    check_drawn(open_page(BROWSER, page, tmp_path / "profile"), sections)
