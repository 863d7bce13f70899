"""Agreement from per-item outcomes (the eval sweep's items files, laid out as SEAM says):
Cohen's kappa checked against sklearn.metrics.cohen_kappa_score, an independent implementation."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from pythia.analysis import AnalysisError
from pythia.analysis._agreement import cohen_kappa, kappas
from pythia.analysis.runner import run_analyses

from .synthetic import synthetic_run, write_items

STEPS = [0, 4, 16, 64]


@pytest.mark.parametrize("seed", range(6))
def test_kappa_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    a = rng.integers(0, k, 200)
    b = np.where(rng.random(200) < 0.6, a, rng.integers(0, k, 200))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_kappa_undefined_when_both_constant():
    assert cohen_kappa(np.zeros(5), np.zeros(5)) is None
    assert cohen_kappa(np.zeros(5), np.array([0, 0, 1, 0, 0])) == pytest.approx(
        cohen_kappa_score(np.zeros(5), [0, 0, 1, 0, 0]))


@pytest.mark.parametrize("seed", range(4))
def test_kappas_of_many_checkpoints_are_the_pairwise_bits(seed):
    """All checkpoints at once give the very floats of one pair at a time (and None where
    kappa is undefined), against one vector or row by row."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    a = rng.integers(0, k, (30, 500)) * 7  # labels need not be 0..k-1
    a[3] = 0
    b = np.where(rng.random((30, 500)) < 0.5, a, rng.integers(0, k, (30, 500)) * 7)
    b[3] = 0  # both constant on one label: undefined
    got = kappas(a, b)
    want = [cohen_kappa(x, y) for x, y in zip(a, b)]
    assert got[3] is None and want[3] is None
    assert [None if g is None else g.hex() for g in got] == [None if w is None else w.hex() for w in want]
    assert kappas(a, b[-1]) == [cohen_kappa(x, b[-1]) for x in a]


def make_items(run, rng, n_docs=60, choices=4):
    """Per member and step: predictions that drift towards each member's own final answers."""
    truth = rng.integers(0, choices, n_docs)
    outcome = {}
    for m in run.members:
        final = np.where(rng.random(n_docs) < 0.7, truth, rng.integers(0, choices, n_docs))
        for i, step in enumerate(STEPS):
            keep = rng.random(n_docs) < (i + 1) / len(STEPS)
            pred = np.where(keep, final, rng.integers(0, choices, n_docs))
            order = rng.permutation(n_docs)  # files need not list docs in one order
            write_items(run, m.name, step, "arc_easy", order, pred[order], (pred == truth)[order])
            # a generation task (no choice index): correct is the label compared
            write_items(run, m.name, step, "lambada_openai", np.arange(n_docs), -np.ones(n_docs),
                        (pred == truth)[: n_docs])
            outcome[(m.name, step)] = (pred, pred == truth)
    return outcome


def test_self_consistency_and_inter_seed_rows(tmp_path):
    run = synthetic_run(tmp_path, {"m": [3, 1, 2]})
    outcome = make_items(run, np.random.default_rng(0))
    assert run_analyses(run, "seeds", progress=False).ok
    rows = {(r["member"], r["step"], r["task"], r["metric"]): r["value"]
            for r in run.results().rows(analysis="seeds") if r["metric"] in ("self_consistency", "inter_seed")}
    for m in run.members:
        for step in STEPS:
            pred, corr = outcome[(m.name, step)]
            fpred, fcorr = outcome[(m.name, STEPS[-1])]
            assert rows[(m.name, step, "arc_easy", "self_consistency")] == pytest.approx(cohen_kappa_score(pred, fpred))
            assert rows[(m.name, step, "lambada_openai", "self_consistency")] == pytest.approx(
                cohen_kappa_score(corr, fcorr))
            ref_pred, _ = outcome[("m-seed1", step)]  # the lowest seed is the reference
            if m.seed == 1:
                assert (m.name, step, "arc_easy", "inter_seed") not in rows
            else:
                assert rows[(m.name, step, "arc_easy", "inter_seed")] == pytest.approx(cohen_kappa_score(pred, ref_pred))
    assert rows[("m-seed2", STEPS[-1], "arc_easy", "self_consistency")] == 1.0
    stats = {(r["step"], r["task"], r["metric"]): r["value"] for r in run.results().rows(analysis="seeds")
             if r["member"] == "m/*"}
    vals = [rows[(f"m-seed{s}", 4, "arc_easy", "self_consistency")] for s in (1, 2, 3)]
    assert stats[(4, "arc_easy", "seeds:self_consistency:median")] == pytest.approx(np.median(vals))
    assert stats[(4, "arc_easy", "seeds:inter_seed:n")] == 2


def test_reference_seed_option_and_final_step_warning(tmp_path, monkeypatch):
    from pythia.run import MemberView

    run = synthetic_run(tmp_path, {"m": [1, 2]})
    later = {"m-seed1": STEPS + [128]}  # m-seed1 has a later checkpoint than its items
    monkeypatch.setattr(MemberView, "steps", property(lambda self: later.get(self.name, STEPS)))
    make_items(run, np.random.default_rng(1))
    with pytest.warns(UserWarning, match=r"m-seed1 arc_easy: no items at the final checkpoint step128"):
        run_analyses(run, "seeds", options={"reference_seed": 2}, progress=False)
    inter = {r["member"] for r in run.results().rows(analysis="seeds", metric="inter_seed")}
    assert inter == {"m-seed1"}


def test_bad_items_file_is_named(tmp_path):
    run = synthetic_run(tmp_path, {"m": [1, 2]})
    folder = run.results_dir / "artifacts" / "eval" / "m-seed1" / "step4"
    folder.mkdir(parents=True)
    np.savez(folder / "sciq.items.npz", doc_id=np.arange(3), correct=np.ones(3, np.uint8))
    with pytest.raises(AnalysisError, match=r"m-seed1/step4/sciq\.items\.npz: items file lacks array\(s\) \['pred'\]"):
        run_analyses(run, "seeds", progress=False)
    np.savez(folder / "sciq.items.npz", doc_id=np.array([1, 1, 2]), pred=np.zeros(3), correct=np.ones(3, np.uint8))
    with pytest.raises(AnalysisError, match="doc_id has repeated values"):
        run_analyses(run, "seeds", progress=False)
    assert not (run.results_dir / "units" / "seeds").exists()
