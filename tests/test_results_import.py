"""`pythia results import`: Pythia's published evals (old harness) and lm-eval 0.4 files as rows."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from pythia.results import ResultsStore
from pythia.results_import import ANALYSIS, import_results, read_result_file

FIXTURES = Path(__file__).parent / "fixtures"
EVALS = FIXTURES / "pythia-evals"


def _by(rows, **want):
    return [r for r in rows if all(r[k] == v for k, v in want.items())]


def test_pythia_v1_tree(tmp_path):
    summary = import_results(EVALS, into=tmp_path / "store")
    assert summary.files == 8 and not summary.skipped
    rows = ResultsStore(tmp_path / "store").rows(analysis=ANALYSIS)
    # the regression targets quoted from the Pythia evals (70m, zero-shot, step 143000)
    lam = {r["metric"]: r for r in _by(rows, member="pythia-70m", step=143000, task="lambada_openai")}
    assert lam["acc"]["value"] == pytest.approx(0.1846, abs=5e-5)
    assert lam["perplexity"]["value"] == pytest.approx(142.43, abs=5e-3) and "ppl" not in lam  # ppl -> perplexity
    assert lam["perplexity"]["stderr"] == pytest.approx(6.0438, abs=1e-4)
    assert _by(rows, member="pythia-70m", step=143000, task="piqa", metric="acc")[0]["value"] == pytest.approx(0.5947, abs=5e-5)
    r = lam["acc"]
    assert (r["suite"], r["size"], r["seed"], r["tokens"]) == ("pythia", "pythia-70m", None, 143000 * 1024 * 2048)
    # zero- and five-shot of one checkpoint stay apart
    dedup = _by(rows, member="pythia-70m-deduped", step=143000, metric="acc")
    assert {"arc_easy", "arc_easy@5shot"} <= {r["task"] for r in dedup}
    zero, five = (_by(dedup, task=t)[0]["value"] for t in ("arc_easy", "arc_easy@5shot"))
    src = json.loads((EVALS / "pythia-70m-deduped/five-shot/70m-deduped-5shot_step143000.json").read_text())
    assert five == src["results"]["arc_easy"]["acc"] and zero != five
    members = {r["member"] for r in rows}
    assert members == {"pythia-70m", "pythia-70m-deduped", "pythia-70m-deduped-baseline",
                       "intervention-pythia-70m-deduped", "pythia-1b-bf16", "pythia-160m-0.5MtokBS"}
    assert {r["suite"] for r in _by(rows, member="intervention-pythia-70m-deduped")} == {"intervention-pythia-deduped"}
    # a file named 5shot whose config says 0 shots is zero-shot; a 0.5M-token batch has its own tokens per step
    assert all("@" not in r["task"] for r in _by(rows, member="pythia-1b-bf16"))
    small = _by(rows, member="pythia-160m-0.5MtokBS")
    assert small and all(r["task"].endswith("@5shot") and r["tokens"] == 12000 * 2 ** 19 for r in small)
    assert (tmp_path / "store" / "results.csv").is_file()


def test_every_number_of_a_file_lands(tmp_path):
    f = EVALS / "pythia-70m-deduped/zero-shot/70m-deduped_step0.json"
    src = json.loads(f.read_text())["results"]
    rows = read_result_file(f)
    assert len(rows) == sum(1 for m in src.values() for k in m if not k.endswith("_stderr"))
    for r in rows:
        metric = {"perplexity": "ppl"}.get(r["metric"], r["metric"]) if r["task"] == "lambada_openai" else r["metric"]
        assert r["value"] == src[r["task"]][metric] and r["stderr"] == src[r["task"]].get(metric + "_stderr")


def test_lm_eval_04_latest_file_wins(tmp_path):
    summary = import_results(FIXTURES / "lm-eval-0.4", into=tmp_path / "s", suite="polypythias")
    assert summary.files == 2
    rows = ResultsStore(tmp_path / "s").rows()
    assert {(r["member"], r["seed"], r["step"], r["suite"]) for r in rows} == {("pythia-70m-seed3", 3, 1000, "polypythias")}
    got = {(r["task"], r["metric"]): (r["value"], r["stderr"]) for r in rows}
    assert got[("arc_easy", "acc")] == (0.26, 0.009)  # the later timestamp
    assert got[("lambada_openai", "perplexity")] == (4000.5, 250.0)  # only in the earlier file: kept
    assert got[("wikitext", "bits_per_byte")] == (2.17, None)  # "N/A" stderr
    assert got[("gsm8k@5shot", "exact_match,strict-match")] == (0.0, 0.0)
    assert ("gsm8k@5shot", "exact_match,flexible-extract") in got


def test_into_a_run_is_additive_and_idempotent(quick_demo, tmp_path):
    out, _ = quick_demo
    run = tmp_path / "run"
    shutil.copytree(out / "run", run, ignore=shutil.ignore_patterns("step*", "results"))
    import_results(EVALS / "pythia-70m-deduped/zero-shot", into=run)
    import_results(EVALS / "pythia-70m-deduped/five-shot", into=run)
    store = ResultsStore(run / "results")
    first = store.rows(analysis=ANALYSIS, member="pythia-70m-deduped")
    assert {"arc_easy", "arc_easy@5shot"} <= {r["task"] for r in _by(first, step=143000)}  # both imports kept
    import_results(EVALS / "pythia-70m-deduped/five-shot", into=run)
    assert store.rows(analysis=ANALYSIS, member="pythia-70m-deduped") == first


def test_bad_files_are_named(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.json").write_text("{not json")
    (tmp_path / "in" / "other.json").write_text('{"hello": 1}')
    (tmp_path / "in" / "nostep.json").write_text('{"results": {"piqa": {"acc": 0.5}}, "config": {}}')
    summary = import_results(tmp_path / "in", into=tmp_path / "s")
    assert summary.files == 0 and len(summary.skipped) == 3
    text = summary.format()
    assert "broken.json: not JSON" in text and 'other.json: not an lm-eval results file' in text
    assert "nostep.json: no step" in text
    with pytest.raises(FileNotFoundError):
        import_results(tmp_path / "missing", into=tmp_path / "s")


def test_command(tmp_path, capsys):
    from pythia.cli.results_import import register_import

    parser = argparse.ArgumentParser()
    register_import(parser.add_subparsers())
    args = parser.parse_args(["import", str(EVALS / "pythia-70m"), "--into", str(tmp_path / "s")])
    assert args.func(args) == 0
    assert "imported" in capsys.readouterr().out
    assert ResultsStore(tmp_path / "s").rows(member="pythia-70m")
