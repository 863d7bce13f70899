"""Every checkpoint read once by the analysis runner: the weights are hashed for the manifest as
they load (never read a second time), config.json is parsed once, and a query for one analysis
reads only that analysis' units. Corruption is still caught, with the same message."""
from __future__ import annotations

from collections import Counter

import pytest

import pythia.hf
import pythia.layout
from pythia.analysis.runner import run_analyses
from pythia.results import ResultsStore
from pythia.run import open_run
from tests.test_demo import QUICK_MEMBERS


def _spy(monkeypatch, module, name) -> Counter:
    calls, real = Counter(), getattr(module, name)

    def spy(path, *args, **kwargs):
        calls[str(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_weights_are_hashed_while_they_load_and_config_is_parsed_once(demo_copy, monkeypatch):
    run = open_run(demo_copy)
    member = run.member(QUICK_MEMBERS[1])
    before = {(r["step"], r["metric"]): r["value"] for r in run.results().rows(analysis="val_loss", member=member.name)}
    hashed = _spy(monkeypatch, pythia.layout, "sha256_file")
    configs = _spy(monkeypatch, pythia.hf, "read_config")
    summary = run_analyses(run, "val_loss,weights", members=member.name, steps="4,8", force=True, progress=False)
    assert summary.ok and len(summary.computed) == 4
    for step in (4, 8):
        step_dir = member.path / f"step{step}"
        assert hashed[str(step_dir / "model.safetensors")] == 0  # hashed from the bytes the load parsed
        assert hashed[str(step_dir / "config.json")] == 1 and hashed[str(step_dir / "tokenizer.json")] == 1
        assert configs[str(step_dir)] == 1
    after = {(r["step"], r["metric"]): r["value"] for r in run.results().rows(analysis="val_loss", member=member.name)}
    assert after == before  # same numbers as the trainer's


@pytest.mark.parametrize("where", ["data", "header"])
def test_changed_weights_still_fail_their_manifest(demo_copy, where):
    run = open_run(demo_copy)
    target = run.member(QUICK_MEMBERS[0]).path / "step8" / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[-3 if where == "data" else 20] ^= 0xFF  # a weight's byte, or the JSON header (then it does not load)
    target.write_bytes(bytes(data))
    summary = run_analyses(run, "val_loss", members=QUICK_MEMBERS[0], steps="8", force=True, progress=False)
    assert summary.failed == [f"{QUICK_MEMBERS[0]}/step8: checkpoint fails its manifest (step8/model.safetensors: "
                              "sha256 mismatch (file changed or corrupted))"]
    assert not summary.computed


def test_rows_of_one_analysis_read_only_its_units(quick_demo, monkeypatch):
    out, _ = quick_demo
    store = open_run(out).results()
    everything = store.rows()
    read = []
    real = ResultsStore._read
    monkeypatch.setattr(ResultsStore, "_read", lambda self, path: read.append(path) or real(self, path))
    for names in ("val_loss", ["train_loss", "val_loss"], "absent"):
        read.clear()
        wanted = {names} if isinstance(names, str) else set(names)
        assert store.rows(analysis=names) == [r for r in everything if r["analysis"] in wanted]
        assert read and all(p.relative_to(store.root).parts[1] in wanted for p in read) or names == "absent"
    assert {r["analysis"] for r in everything} >= {"val_loss", "train_loss"}
