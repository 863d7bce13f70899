"""pythia.compare / `pythia compare`: two members of any results table, metric by metric, at their
common steps; on rows put by hand and on Pythia's own baseline / intervention evaluation JSONs."""
from __future__ import annotations

import csv
import io
import json
import math

import pytest

from pythia.cli import main
from pythia.compare import CompareError, compare, compare_series
from pythia.results import ResultsStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _put(store: ResultsStore, member: str, rows: list[tuple]) -> None:
    """rows: (analysis, task, metric, step, value, stderr)."""
    full = [{"suite": "s", "member": member, "size": "70m", "seed": 1, "step": step, "tokens": step * 10,
             "analysis": a, "task": t, "metric": m, "value": v, "stderr": e} for a, t, m, step, v, e in rows]
    for analysis in sorted({r["analysis"] for r in full}):  # one unit per analysis, as the runner writes
        store.put(analysis, [r for r in full if r["analysis"] == analysis], key={"handmade": member}, member=member)


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(tmp_path / "store")
    _put(s, "base", [("val_loss", "", "val_loss", n, 5.0 - n, None) for n in (0, 1, 2)]
         + [("eval", "arc", "acc", n, 0.25 + n / 100, 0.01) for n in (1, 2)]
         + [("probe", "arc", "acc", 2, 0.5, None), ("eval", "", "only_base", 1, 1.0, None)])
    _put(s, "fork", [("val_loss", "", "val_loss", n, 5.5 - n, None) for n in (1, 2, 3)]
         + [("eval", "arc", "acc", n, 0.30 + n / 100, 0.02) for n in (2, 3)] + [("probe", "arc", "acc", 2, 0.75, None)])
    return s


def test_rows_values_and_differences_at_common_steps(store, tmp_path):
    result = compare(store, "base", "fork", plot=tmp_path / "cmp.png")
    by_key = {(r["task"], r["metric"], r["step"]): r for r in result.rows}
    assert {k for k in by_key if k[1].startswith("val_loss")} == {
        ("", f"val_loss:{part}", n) for part in ("base", "fork", "diff") for n in (1, 2)}
    for n in (1, 2):
        assert by_key[("", "val_loss:base", n)]["value"] == 5.0 - n
        assert by_key[("", "val_loss:fork", n)]["value"] == 5.5 - n
        assert by_key[("", "val_loss:diff", n)]["value"] == pytest.approx(0.5)
    # (task arc, metric acc) comes from two analyses: each is named analysis/metric
    assert by_key[("arc", "eval/acc:diff", 2)]["value"] == pytest.approx(0.05)
    assert by_key[("arc", "eval/acc:diff", 2)]["stderr"] == pytest.approx(math.hypot(0.01, 0.02))
    assert by_key[("arc", "probe/acc:diff", 2)]["value"] == pytest.approx(0.25)
    assert ("arc", "eval/acc:diff", 1) not in by_key and not any("only_base" in k[1] for k in by_key)
    assert all(r["analysis"] == "compare" and r["member"] == "fork" and r["tokens"] == r["step"] * 10
               for r in result.rows)
    assert store.rows(analysis="compare") == sorted(result.rows, key=lambda r: (r["task"], r["metric"], r["step"]))
    assert (tmp_path / "cmp.png").read_bytes()[:8] == PNG_MAGIC
    series, _ = compare_series(store, "base", "fork", metric="val_loss")
    assert [(s.metric, s.steps, s.diff) for s in series] == [("val_loss", [1, 2], [0.5, 0.5])]
    assert "val_loss" in result.summary() and "0.5" in result.summary()


def test_errors_say_what_each_member_has(store):
    with pytest.raises(CompareError, match="no results for member 'nope'.*members with results: base, fork"):
        compare_series(store, "base", "nope")
    _put(store, "late", [("val_loss", "", "val_loss", 9, 1.0, None)])
    with pytest.raises(CompareError, match="base and late have no metric at a common step: base has .*val_loss:val_loss"):
        compare_series(store, "base", "late")
    with pytest.raises(CompareError, match="two different members"):
        compare_series(store, "base", "base")


def _eval_rows(path) -> tuple[str, int, list[tuple]]:
    """An old-harness JSON as rows (done here, independently of any importer)."""
    d = json.loads(path.read_text())
    args = dict(kv.split("=", 1) for kv in d["config"]["model_args"].split(","))
    member, step = args["pretrained"].split("/")[-1], int(args["revision"].removeprefix("step"))
    rows = [("lm_eval", task, m, step, v, metrics.get(f"{m}_stderr"))
            for task, metrics in d["results"].items() for m, v in metrics.items() if not m.endswith("_stderr")]
    return member, step, rows


def test_pythia_baseline_and_intervention_jsons_compare(fixtures_dir, tmp_path, capsys):
    folder = fixtures_dir / "pythia-evals-intervention"
    base, step, base_rows = _eval_rows(folder / "baseline-70m-deduped_step143000.json")
    fork, _, fork_rows = _eval_rows(folder / "intervention-70m-deduped_step143000.json")
    assert (base, fork, step) == ("pythia-v1.1-70m-deduped", "intervention-pythia-v1.1-70m-deduped", 143000)
    store = ResultsStore(tmp_path / "imported")  # a standalone store: no run behind it
    _put(store, base, base_rows)
    _put(store, fork, fork_rows)
    assert main(["compare", str(store.root), base, fork, "--task", "crows_pairs_english_gender",
                 "--format", "csv"]) == 0
    rows = {r["metric"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert float(rows["pct_stereotype:base"]["value"]) == 0.5625
    assert float(rows["pct_stereotype:fork"]["value"]) == 0.578125
    assert float(rows["pct_stereotype:diff"]["value"]) == pytest.approx(0.578125 - 0.5625)
    assert float(rows["likelihood_difference:diff"]["stderr"]) == pytest.approx(
        math.hypot(0.2489526229584233, 0.23655135380122577))
    assert main(["compare", str(store.root), base, fork]) == 0
    out = capsys.readouterr().out
    common = {(t, m) for _, t, m, *_ in base_rows} & {(t, m) for _, t, m, *_ in fork_rows}
    assert f"{len(common)} metrics at common steps" in out and "crows_pairs_english_gender" in out
    plot = store.root / "plots" / f"compare_{fork}_vs_{base}.png"
    assert plot.read_bytes()[:8] == PNG_MAGIC and str(plot) in out
    assert len(store.rows(analysis="compare", member=fork)) == 3 * len(common)
