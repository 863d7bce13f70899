"""End to end in one process: a 2-shape x 2-seed suite, its files, HF loading, verify, CLI."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from pythia.cli import main as cli_main
from pythia.layout import write_manifest
from pythia.run import open_run
from pythia.suite import train_suite
from pythia.train.metrics import read_jsonl
from pythia.train.spec import SuiteSpec
from pythia.verify import verify_run

from .conftest import tiny_spec

MEMBERS = ["tiny-seed1", "tiny-seed2", "wide-seed1", "wide-seed2"]
STEPS = [0, 1, 2, 4, 8, 10]


@pytest.fixture(scope="module")
def run(datasets, tmp_path_factory):
    return train_suite(SuiteSpec.from_dict(tiny_spec(datasets, tmp_path_factory.mktemp("suite") / "run")), progress=False)


def test_layout_and_logs(run):
    assert (run / "suite.yaml").is_file()
    for name in MEMBERS:
        d = run / name
        assert sorted(int(p.name[4:]) for p in d.glob("step*")) == STEPS
        for f in ("config.json", "model.safetensors", "manifest.json", "training_state/optimizer.safetensors",
                  "training_state/rng.safetensors", "training_state/state.json"):
            assert (d / "step4" / f).is_file(), f
        metrics = read_jsonl(d / "metrics.jsonl")
        assert [r["step"] for r in metrics] == list(range(1, 11))
        assert metrics[0]["lr"] == 0.0 and metrics[1]["lr"] > 0  # gpt-neox's lr = 0 first update
        assert {"loss", "lr", "grad_norm", "loss_scale", "tokens_per_s", "batch_fp"} <= set(metrics[0])
        evals = read_jsonl(d / "evals.jsonl")
        assert [r["step"] for r in evals] == STEPS
        assert all(r["val_loss"] > 0 for r in evals)
    # the trainer's checkpoint-time val_loss lands in the results table, one row per checkpoint
    rows = open_run(run).results().rows(analysis="val_loss")
    assert sorted((r["member"], r["step"]) for r in rows) == sorted((m, s) for m in MEMBERS for s in STEPS)


def test_same_order_across_sizes_and_seeds(run):
    fps = {name: [r["batch_fp"] for r in read_jsonl(run / name / "metrics.jsonl")] for name in MEMBERS}
    assert len({tuple(v) for v in fps.values()}) == 1
    assert len(set(fps["tiny-seed1"])) == 10  # and the batches do change from step to step
    w1 = json.loads((run / "tiny-seed1" / "step0" / "manifest.json").read_text())["weights_digest"]
    w2 = json.loads((run / "tiny-seed2" / "step0" / "manifest.json").read_text())["weights_digest"]
    assert w1 != w2  # init seed differs


def test_per_member_data_seed_and_no_validation(datasets, tmp_path):
    d = tiny_spec(datasets, tmp_path / "poly", data={"seed": "per_member", "valid": None},
                  train={"iters": 2}, members=[{"name": "tiny", "num_layers": 1, "hidden_size": 32, "num_heads": 4}],
                  tensorboard=True)
    run = train_suite(SuiteSpec.from_dict(d), progress=False)
    fp1 = [r["batch_fp"] for r in read_jsonl(run / "tiny-seed1" / "metrics.jsonl")]
    fp2 = [r["batch_fp"] for r in read_jsonl(run / "tiny-seed2" / "metrics.jsonl")]
    assert fp1 != fp2
    assert read_jsonl(run / "tiny-seed1" / "evals.jsonl") == []  # no validation data: no checkpoint-time eval
    assert open_run(run).results().rows(analysis="val_loss") == []
    assert list((run / "tiny-seed1" / "tb").glob("events.out.tfevents.*"))


def test_checkpoint_loads_in_transformers_and_pythia(run):
    from transformers import GPTNeoXForCausalLM

    from pythia import load_model

    ours = load_model(run / "tiny-seed1", revision="step4")
    hf = GPTNeoXForCausalLM.from_pretrained(run / "tiny-seed1" / "step4")
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=2e-4, rtol=1e-4)


def test_verify_clean_run_explains_step0_step1(run, capsys):
    report = verify_run(run)
    assert report.ok, report.format()
    for m in report.members:
        assert m.identical == [{"steps": [0, 1], "expected": True, "why": m.identical[0]["why"]}]
        assert "lr = 0" in m.identical[0]["why"]
    assert cli_main(["verify", str(run)]) == 0
    assert "step0 == step1" in capsys.readouterr().out


def test_verify_detects_corruption_copies_and_gaps(run, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    weights = bad / "tiny-seed1" / "step8" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    # a "Hub branch served the wrong weights" copy with a consistent manifest
    shutil.copy(bad / "wide-seed1" / "step10" / "model.safetensors", bad / "wide-seed1" / "step4" / "model.safetensors")
    (bad / "wide-seed1" / "step4" / "manifest.json").unlink()
    write_manifest(bad / "wide-seed1" / "step4", 4, "")
    shutil.rmtree(bad / "tiny-seed2" / "step2")
    report = verify_run(bad)
    assert not report.ok
    by_name = {m.name: m for m in report.members}
    assert any("step8/model.safetensors: sha256 mismatch" in p for p in by_name["tiny-seed1"].problems)
    assert any("step4 and step10 hold identical weights" in p for p in by_name["wide-seed1"].problems)
    assert by_name["tiny-seed2"].missing == [2]
    assert not by_name["wide-seed2"].problems
    assert cli_main(["verify", str(bad), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_cli_dry_run_and_rerun_is_noop(run, capsys):
    spec_path = run / "suite.yaml"
    assert cli_main(["train", str(spec_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiny-seed1" in out and "wide-seed2" in out and "0 1 2 4 8 10" in out
    assert "warmup_iter = 0.1 x 10 = 1.0 (a float" in out
    before = (run / "tiny-seed1" / "metrics.jsonl").read_text()
    assert cli_main(["train", str(spec_path), "--no-progress"]) == 0  # finished suite: nothing to do
    assert (run / "tiny-seed1" / "metrics.jsonl").read_text() == before


def test_resume_refuses_a_changed_spec(run, datasets):
    d = tiny_spec(datasets, run, train={"iters": 12})
    with pytest.raises(ValueError, match="train.iters"):
        train_suite(SuiteSpec.from_dict(d), progress=False)
