"""Kill-and-resume: a run killed mid-checkpoint-write and mid-step, re-run with the same
command, ends bit-identical to an uninterrupted run (CPU, fp32), with no duplicate log lines."""
from __future__ import annotations

import yaml
from safetensors.torch import load_file

from pythia.train.metrics import read_jsonl

from .conftest import run_cli, tiny_spec

MEMBERS = ("tiny-seed1", "tiny-seed2")


def _train(spec_path, out, crash=None):
    env = {"PYTHIA_TRAIN_CRASH_AT": crash} if crash else None
    return run_cli(["-m", "pythia.train", str(spec_path), "--out", str(out), "--no-progress"], env)


def test_kill_and_resume_is_bit_identical(datasets, tmp_path):
    d = tiny_spec(datasets, tmp_path / "unused", members=[{"name": "tiny", "num_layers": 2, "hidden_size": 32,
                                                           "num_heads": 4}])
    spec_path = tmp_path / "suite.yaml"
    spec_path.write_text(yaml.safe_dump(d))
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert _train(spec_path, ref).returncode == 0

    # 1) killed half-way through writing step8 of the first member
    p = _train(spec_path, run, crash="ckpt:8")
    assert p.returncode == 137, p.stderr
    assert [q.name for q in (run / "tiny-seed1").iterdir() if q.name.startswith(".step8")]
    assert not (run / "tiny-seed1" / "step8").exists()
    # 2) resumes from step4, finishes member 1, then is killed after update 3 of member 2
    p = _train(spec_path, run, crash="step:3")
    assert p.returncode == 137, p.stderr
    assert "removed incomplete checkpoint write .step8" in p.stdout
    assert (run / "tiny-seed1" / "step10").is_dir() and (run / "tiny-seed2" / "step2").is_dir()
    assert len(read_jsonl(run / "tiny-seed2" / "metrics.jsonl")) == 3  # step 3 logged, not checkpointed
    # 3) resumes member 2 from step2 and finishes
    p = _train(spec_path, run)
    assert p.returncode == 0, p.stderr

    for name in MEMBERS:
        for rel in ("step10/model.safetensors", "step10/training_state/optimizer.safetensors"):
            assert (ref / name / rel).read_bytes() == (run / name / rel).read_bytes(), f"{name}/{rel}"
        a, b = load_file(ref / name / "step10" / "model.safetensors"), load_file(run / name / "step10" / "model.safetensors")
        assert all(a[k].equal(b[k]) for k in a)
        metrics = read_jsonl(run / name / "metrics.jsonl")
        assert [r["step"] for r in metrics] == list(range(1, 11))  # no duplicates after resume
        ref_metrics = read_jsonl(ref / name / "metrics.jsonl")
        assert [r["loss"] for r in metrics] == [r["loss"] for r in ref_metrics]
        assert [r["step"] for r in read_jsonl(run / name / "evals.jsonl")] == [0, 1, 2, 4, 8, 10]
