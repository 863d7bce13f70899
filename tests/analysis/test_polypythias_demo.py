"""`seeds,weights,training_map` together on the quick demo (2 shapes x 2 seeds, 7 checkpoints):
the command's whole path on real checkpoints."""
from __future__ import annotations

import json
import warnings

from pythia.analysis.runner import run_analyses
from pythia.analysis.training_map import TrainingMap
from pythia.analysis.weights import FEATURES
from pythia.run import open_run


def test_seeds_weights_training_map_on_the_quick_demo(quick_demo, tmp_path):
    out, _ = quick_demo
    run = open_run(out / "run", results_dir=tmp_path / "results")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_analyses(run, "seeds,weights,val_loss,training_map", device="cpu", progress=False)
    assert summary.ok, summary.format()
    assert any("outlier scores need at least 4" in str(w.message) for w in caught)
    store = run.results()
    n_ckpt = sum(len(m.steps) for m in run.members)
    assert len(store.rows(analysis="weights")) == n_ckpt * len(FEATURES)
    shapes = sorted({m.shape for m in run.members})
    stats = store.rows(analysis="seeds")
    assert {r["member"] for r in stats if r["metric"] == "n_seeds"} == {f"{s}/*" for s in shapes}
    assert {r["metric"] for r in stats} >= {f"weights:L1/L2:median", "weights:sigma_lambda:std", "val_loss:val_loss:q25"}
    assert all(r["value"] is not None for r in stats)
    for shape in shapes:
        art = run.results_dir / "artifacts" / "training_map"
        tm = TrainingMap.from_tsv(art / f"{shape}.tsv")
        members = [m for m in run.members if m.shape == shape and m.base is None]  # forks are not seeds
        assert list(tm.seqs) == [m.seed for m in members]
        assert all(list(tm.seqs[m.seed].steps) == m.steps for m in members)
        info = json.loads((art / f"{shape}.json").read_text())
        assert 1 <= info["n_states"] <= 8 and (art / f"{shape}.png").stat().st_size > 0
        assert all(len(s.scores) and not any(x != x for x in s.scores) for s in tm.seqs.values())  # val_loss scores
    states = store.rows(analysis="training_map", metric="state")
    assert len(states) == sum(len(m.steps) for m in run.members if m.base is None)  # forks are not seeds
    again = run_analyses(run, "seeds,weights,val_loss,training_map", device="cpu", progress=False)
    assert not again.computed  # everything cached
