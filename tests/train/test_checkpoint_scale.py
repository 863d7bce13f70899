"""Checkpoints at scale, one process: HF weights sharded above checkpoints.max_shard_size,
optimizer state only every k-th checkpoint, a clean stop on SIGTERM, AdamW's step count."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pythia import layout
from pythia.run import load_model
from pythia.suite import describe, train_suite
from pythia.train import checkpoint as ckpt
from pythia.train.metrics import read_jsonl
from pythia.train.spec import SpecError, SuiteSpec
from pythia.verify import verify_run

from .conftest import run_cli, tiny_spec

ONE = [{"name": "tiny", "num_layers": 2, "hidden_size": 32, "num_heads": 4}]
M = "tiny-seed1"


def _spec(datasets, out, **overrides) -> dict:
    return tiny_spec(datasets, out, members=ONE, seeds=[1], **overrides)


def _state(step_dir) -> dict:
    return json.loads((step_dir / "training_state" / "state.json").read_text())


@pytest.fixture(scope="module")
def reference(datasets, tmp_path_factory):
    """One member, 10 updates, checkpoints 0 1 2 4 8 10, every default (in process)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests (autouse fixture): same arithmetic, same bytes
    try:
        return train_suite(SuiteSpec.from_dict(_spec(datasets, out)), progress=False)
    finally:
        torch.set_num_threads(before)


def test_sharded_hf_weights_with_index(reference, datasets, tmp_path):
    out = train_suite(SuiteSpec.from_dict(_spec(datasets, tmp_path / "run",
                                                checkpoints={"max_shard_size": "40KB"})), progress=False)
    step = out / M / "step2"
    index = json.loads((step / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in step.glob("model-*.safetensors"))
    assert not (step / "model.safetensors").exists() and len(shards) >= 3
    assert sorted(set(index["weight_map"].values())) == shards
    tensors = {}
    for name in shards:
        part = load_file(step / name)
        assert sum(t.numel() * 4 for t in part.values()) <= 40_000 or len(part) == 1
        tensors.update(part)
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in tensors.values())
    # the same weights as the unsharded run, the same digest, loadable by both readers
    single = load_file(reference / M / "step2" / "model.safetensors")
    assert tensors.keys() == single.keys() and all(tensors[k].equal(single[k]) for k in single)
    manifest = json.loads((step / "manifest.json").read_text())
    assert manifest["weights_digest"] == layout.weights_digest(single) == layout.digest_of_checkpoint(step)
    from transformers import GPTNeoXForCausalLM

    hf = GPTNeoXForCausalLM.from_pretrained(step)
    assert torch.equal(hf.gpt_neox.layers[1].mlp.dense_4h_to_h.weight, single["gpt_neox.layers.1.mlp.dense_4h_to_h.weight"])
    assert torch.equal(load_model(step).embed_out.weight, single["embed_out.weight"])
    assert verify_run(out).ok


def test_adamw_step_count_is_the_number_of_updates(reference):
    """Saving step0 must not initialise AdamW with a fake step (bias correction of update 1)."""
    assert _state(reference / M / "step0")["optimizer_state"] == "empty"
    assert not (reference / M / "step0" / "training_state" / "optimizer.safetensors").exists()
    opt = load_file(reference / M / "step2" / "training_state" / "optimizer.safetensors")
    assert opt["embed_out.weight.step"].item() == 2.0


def test_optimizer_state_every_k_and_resume_from_newest_with_it(reference, datasets, tmp_path, capsys):
    d = _spec(datasets, tmp_path / "run", train={"optimizer_state_every": 2})
    spec = SuiteSpec.from_dict(d)
    assert spec.optimizer_state_steps() == [0, 2, 8, 10]
    assert "optimizer state on 3 of 6 checkpoints" in describe(spec)  # step0 has none to keep
    out = train_suite(spec, progress=False)
    formats = {s: _state(out / M / f"step{s}")["optimizer_state"] for s in (0, 1, 2, 4, 8, 10)}
    assert formats == {0: "empty", 1: "omitted", 2: "full", 4: "omitted", 8: "full", 10: "full"}
    assert not (out / M / "step4" / "training_state" / "optimizer.safetensors").exists()
    # lose step8 and step10: the newest left, step4, has no optimizer state -> resume from step2
    for s in (8, 10):
        shutil.rmtree(out / M / f"step{s}")
    train_suite(spec, progress=False)
    assert "not resuming from step4: it keeps no optimizer state" in capsys.readouterr().out
    for rel in ("step10/model.safetensors", "step10/training_state/optimizer.safetensors", "step4/model.safetensors"):
        assert (out / M / rel).read_bytes() == (reference / M / rel).read_bytes(), rel
    assert [r["step"] for r in read_jsonl(out / M / "metrics.jsonl")] == list(range(1, 11))


@pytest.mark.parametrize("bad, match", [({"train": {"optimizer_state_every": 0}}, "train.optimizer_state_every"),
                                        ({"checkpoints": {"max_shard_size": "2 parsecs"}}, "checkpoints.max_shard_size")])
def test_spec_checks_new_fields(datasets, tmp_path, bad, match):
    with pytest.raises(SpecError, match=match):
        SuiteSpec.from_dict(_spec(datasets, tmp_path, **bad))


def _train(spec_path, out, hook=None):
    return run_cli(["-m", "pythia.train", str(spec_path), "--out", str(out), "--no-progress"],
                   {"PYTHIA_TRAIN_CRASH_AT": hook} if hook else None)


def test_sigterm_finishes_the_step_saves_and_resumes_exactly(reference, datasets, tmp_path):
    d = _spec(datasets, tmp_path / "unused", train={"optimizer_state_every": 2})
    spec_path = tmp_path / "suite.yaml"
    spec_path.write_text(yaml.safe_dump(d))
    ref, run = reference, tmp_path / "run"  # ref: uninterrupted, in process, 1 thread like run_cli
    # 1) a real SIGTERM after update 3 (off the schedule): checkpoint step3, exit 143
    p = _train(spec_path, run, "sigterm:3")
    assert p.returncode == 128 + signal.SIGTERM, p.stderr[-2000:]
    assert "stopped by SIGTERM after update 3 of tiny-seed1" in p.stderr
    s3 = _state(run / M / "step3")
    assert s3["preempted"] == "SIGTERM" and s3["optimizer_state"] == "full" and "val_loss_record" not in s3
    assert [r["step"] for r in read_jsonl(run / M / "metrics.jsonl")] == [1, 2, 3]
    # 2) resumed from step3, SIGTERM after update 4, a scheduled step that optimizer_state_every
    #    would leave without optimizer state: it keeps it, is evaluated, and supersedes step3
    p = _train(spec_path, run, "sigterm:4")
    assert p.returncode == 143, p.stderr[-2000:]
    assert _state(run / M / "step4")["optimizer_state"] == "full"
    assert not (run / M / "step3").exists() and "removed step3" in p.stdout
    assert 4 in [r["step"] for r in read_jsonl(run / M / "evals.jsonl")]
    # 3) finishes; same bytes as the uninterrupted run
    p = _train(spec_path, run)
    assert p.returncode == 0, p.stderr[-2000:]
    for rel in ("step10/model.safetensors", "step10/training_state/optimizer.safetensors"):
        assert (ref / M / rel).read_bytes() == (run / M / rel).read_bytes(), rel
    assert [r["loss"] for r in read_jsonl(run / M / "metrics.jsonl")] == [r["loss"] for r in read_jsonl(ref / M / "metrics.jsonl")]
    assert [r["step"] for r in read_jsonl(run / M / "evals.jsonl")] == [0, 1, 2, 4, 8, 10]
    assert verify_run(run).ok


@pytest.mark.slow
def test_external_sigterm_to_a_training_process(datasets, tmp_path):
    """SIGTERM sent from outside at an arbitrary moment: exit 143, resumable, resume is exact."""
    d = _spec(datasets, tmp_path / "unused", train={"iters": 300}, checkpoints={"interval": 100, "log_spaced": False})
    spec_path = tmp_path / "suite.yaml"
    spec_path.write_text(yaml.safe_dump(d))
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert _train(spec_path, ref).returncode == 0
    args = ["-m", "pythia.train", str(spec_path), "--out", str(run), "--no-progress"]
    from .conftest import REPO
    import os
    import sys
    import time

    env = {**{k: v for k, v in os.environ.items() if k != ckpt.CRASH_ENV}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(read_jsonl(run / M / "metrics.jsonl")) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    last = read_jsonl(run / M / "metrics.jsonl")[-1]["step"]
    assert last < 300 and (run / M / f"step{last}").is_dir()
    assert _train(spec_path, run).returncode == 0
    assert (ref / M / "step300/model.safetensors").read_bytes() == (run / M / "step300/model.safetensors").read_bytes()
