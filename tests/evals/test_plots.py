"""Benchmark curves: per (suite, size) mean and seed band against step, Pythia's beside ours."""
from __future__ import annotations

from pathlib import Path

from pythia.evals.plots import benchmark_series, plot_benchmarks
from pythia.results import ResultsStore
from pythia.results_import import import_results

EVALS = Path(__file__).parents[1] / "fixtures" / "pythia-evals"


def _row(member, size, seed, step, value, suite="demo", task="t", metric="acc"):
    return {"suite": suite, "member": member, "size": size, "seed": seed, "step": step, "tokens": step * 10,
            "task": task, "metric": metric, "value": value, "stderr": None}


def test_series_mean_and_band():
    rows = [_row("a-s1", "a", 1, 0, 0.1), _row("a-s2", "a", 2, 0, 0.3), _row("a-s1", "a", 1, 4, 0.5),
            _row("a-s2", "a", 2, 4, 0.9), _row("a-s1", "a", 1, 8, 0.6),  # seed 2 has no step 8
            _row("b-s1", "b", 1, 4, 0.7), _row("b-s1", "b", 1, 4, 0.2, metric="acc_norm"),
            _row("p", "pythia-70m", None, 4, 0.4, suite="pythia")]
    a, b = benchmark_series(rows, "t", "acc")[:2]
    assert (a.suite, a.size, a.members, a.x, a.n) == ("demo", "a", ["a-s1", "a-s2"], [0, 4, 8], [2, 2, 1])
    assert a.mean == [0.2, 0.7, 0.6] and a.lo == [0.1, 0.5, 0.6] and a.hi == [0.3, 0.9, 0.6]
    assert (b.size, b.mean, b.label) == ("b", [0.7], "demo b")
    assert a.label == "demo a (2 seeds)"
    assert [s.suite for s in benchmark_series(rows, "t", "acc")] == ["demo", "demo", "pythia"]
    assert benchmark_series(rows, "t", "acc", x="tokens")[0].x == [0, 40, 80]


def test_png_with_imported_pythia_curves(tmp_path):
    import_results(EVALS, into=tmp_path / "s")
    rows = ResultsStore(tmp_path / "s").rows()
    rows += [_row("d64-s1", "d64-l2", 1, s, 0.3 + s / 1e6, task="arc_easy") for s in (0, 1000, 143000)]
    series = benchmark_series(rows, "arc_easy", "acc")
    assert {(s.suite, s.size) for s in series} >= {("demo", "d64-l2"), ("pythia", "pythia-70m"),
                                                   ("pythia-deduped", "pythia-70m")}
    ded = next(s for s in series if s.suite == "pythia-deduped")
    assert ded.x == [0, 143000] and ded.members == ["pythia-70m-deduped"]  # baseline: its own suite
    png = plot_benchmarks(rows, [("arc_easy", "acc"), ("lambada_openai", "perplexity"), ("arc_easy@5shot", "acc")],
                          tmp_path / "curves.png", title="benchmarks")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
