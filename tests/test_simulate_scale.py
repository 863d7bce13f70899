"""benchmarks/simulate_scale.py on a small setting: the synthetic run opens like a real one, its
units are the runner's (cache hits), and a folded table exports the same bytes as JSON units."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pythia import results as results_mod
from pythia.run import open_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("simulate_scale", ROOT / "benchmarks" / "simulate_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["simulate_scale"] = module
    spec.loader.exec_module(module)
    return module


def test_pythia_grid_and_shape(sim, tmp_path):
    sim.write_spec(tmp_path / "r", 50, sim.PYTHIA_ITERS)
    view = open_run(tmp_path / "r")
    steps = view.spec.checkpoint_steps()
    assert len(steps) == 154 and steps[:3] == [0, 1, 2] and steps[-1] == 143_000
    assert len(view.members) == 50 and len({m.shape for m in view.members}) == 5


def test_small_run_folded_and_not(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(results_mod, "COMPACT_AT", 10)
    info = sim.write_run(tmp_path / "folded", 2, iters=300, items=20, max_steps=6, progress=False)
    monkeypatch.setattr(results_mod, "COMPACT_AT", 10**9)
    monkeypatch.setattr(results_mod, "COMPACT_BYTES", 10**12)
    sim.write_run(tmp_path / "json", 2, iters=300, items=20, max_steps=6, progress=False)
    assert info["steps"] == 6 and info["members"] == 2
    folded, plain = open_run(tmp_path / "folded"), open_run(tmp_path / "json")
    assert folded.results().folded() and not plain.results().folded()
    assert (tmp_path / "folded" / "results" / "results.csv").read_bytes() == \
           (tmp_path / "json" / "results" / "results.csv").read_bytes()
    m = folded.members[0]
    rows = folded.results().rows(analysis="train_loss", member=m.name, metric="train_loss")
    assert [r["step"] for r in rows] == list(range(1, 301))  # every update, once
    items = sorted((tmp_path / "folded" / "results" / "artifacts" / "eval" / m.name / "step0").glob("*.items.npz"))
    assert len(items) == len(sim.TASKS)
    # the units carry the runner's cache keys: planning finds every checkpoint up to date
    from pythia.analysis.runner import run_analyses

    summary = run_analyses(folded, "weights", progress=False)
    assert summary.ok and not summary.computed and len(summary.cached) == 2 * 6


def test_verify_counts_every_checkpoint_on_its_bar(sim, tmp_path, capsys):
    from pythia.verify import verify_run

    info = sim.write_run(tmp_path / "r", 2, iters=40, items=0, progress=False)
    report = verify_run(tmp_path / "r", progress=True)  # stderr is no terminal here: plain lines
    assert report.ok, report.format()
    n = 2 * info["steps"]
    assert sum(len(m.checkpoints) for m in report.members) == n
    assert f"verify: {n}/{n} checkpoints (100%)" in capsys.readouterr().err
    step = tmp_path / "r" / report.members[0].name / "step2" / "model.safetensors"
    step.write_bytes(step.read_bytes()[:-4] + b"\0\0\0\0")  # one checkpoint's weights changed
    bad = verify_run(tmp_path / "r")
    assert not bad.ok and any("step2" in p for p in bad.members[0].problems)
