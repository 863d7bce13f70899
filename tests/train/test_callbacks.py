"""The trainer's checkpoint callbacks: the trainer tells them, the suite wires the analyses in,
and each checkpoint's work costs the same however far training has gone (train-loss rows once
per update, validation windows once per training run)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import pythia.data.indexed
import pythia.suite
from pythia.analysis.runner import CheckpointAnalyses
from pythia.run import open_run
from pythia.suite import train_suite
from pythia.train.metrics import read_jsonl, read_jsonl_after
from pythia.train.spec import SuiteSpec

from .conftest import tiny_spec

STEPS = [0, 1, 2, 4, 8, 10]


@pytest.fixture(scope="module")
def observed(datasets, tmp_path_factory):
    """A trained tiny suite, with what the callbacks were told and how often the windows were read."""
    seen, reads = [], []
    real = pythia.data.indexed.validation_windows

    class Recording(CheckpointAnalyses):
        def post_checkpoint_saved(self, saved):
            seen.append(saved)
            return super().post_checkpoint_saved(saved)

    def counted(*args):
        reads.append(args)
        return real(*args)

    mp = pytest.MonkeyPatch()
    mp.setattr(pythia.suite, "CheckpointAnalyses", Recording)
    mp.setattr(pythia.data.indexed, "validation_windows", counted)
    try:
        run = train_suite(SuiteSpec.from_dict(tiny_spec(datasets, tmp_path_factory.mktemp("cb") / "run")),
                          progress=False)
    finally:
        mp.undo()
    return run, seen, reads


def test_every_checkpoint_is_announced_once_with_the_model_in_memory(observed):
    run, seen, _ = observed
    members = [m.name for m in open_run(run).members]
    assert [(s.member, s.step) for s in seen] == [(m, s) for m in members for s in STEPS]
    for s in seen:
        assert (s.path / "manifest.json").is_file() and s.path.name == f"step{s.step}"
        assert s.is_main and s.micro_batch == 4 and s.model is not None


def test_validation_windows_are_read_once_per_training_run(observed):
    _, seen, reads = observed
    assert len(seen) == 4 * len(STEPS) and len(reads) == 1


def test_train_loss_rows_are_each_update_once_in_its_checkpoint_interval(observed):
    run, _, _ = observed
    view = open_run(run)
    rows = view.results().rows(analysis="train_loss")
    want = {}  # independently: every line of every member's log, loss and lr
    for m in view.members:
        for line in (m.path / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            want[(m.name, rec["step"], "train_loss")] = rec["loss"]
            want[(m.name, rec["step"], "lr")] = rec["lr"]
    assert {(r["member"], r["step"], r["metric"]): r["value"] for r in rows} == want
    assert len(rows) == len(want) == 4 * 10 * 2
    tokens = view.spec.train.global_batch * view.spec.data.seq_len
    assert all(r["tokens"] == r["step"] * tokens and r["analysis"] == "train_loss" for r in rows)
    for m in view.members:  # unit (member, N) holds the updates after the previous scheduled checkpoint
        for prev, step in zip([-1] + STEPS, STEPS):
            unit = json.loads((view.results_dir / "units" / "train_loss" / m.name / f"step{step}.json").read_text())
            assert sorted({r["step"] for r in unit["rows"]}) == list(range(max(prev + 1, 1), step + 1))
            assert unit["key"]["updates"] == [prev + 1, step]
    assert not (view.results_dir / "units" / "train_loss" / "_run.json").exists()


def test_the_whole_run_analysis_gives_the_same_rows(observed, tmp_path):
    from pythia.analysis.runner import run_analyses

    run, _, _ = observed
    before = open_run(run).results().rows(analysis="train_loss")
    view = open_run(run, results_dir=tmp_path / "results")
    assert run_analyses(view, "train_loss", progress=False).ok
    assert view.results().rows(analysis="train_loss") == before


@pytest.mark.parametrize("block", [7, 64, 1 << 16])
def test_reading_a_log_from_its_end_equals_reading_it_whole(tmp_path, block):
    rng = np.random.default_rng(0)
    lines = []
    for step in range(1, 301):
        lines.append(json.dumps({"step": step, "loss": float(rng.random()), "pad": "x" * int(rng.integers(0, 40))}))
        if step % 50 == 0:
            lines.append(json.dumps({"note": "no step"}))  # kept, like read_jsonl keeps it
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n" + '{"step": 301, "lo')  # a torn last line, as after a kill
    whole = read_jsonl(path)
    for after in (-1, 0, 1, 49, 50, 150, 299, 300, 400):
        last = max((i for i, r in enumerate(whole) if isinstance(r.get("step"), int) and r["step"] <= after),
                   default=-1)
        assert read_jsonl_after(path, after, block=block) == whole[last + 1:], after
    assert read_jsonl_after(tmp_path / "absent.jsonl", 0) == []
