"""Checkpoints under torchrun on CPU (gloo, 2 ranks): FSDP writes sharded optimizer state
(torch.distributed.checkpoint) and sharded HF weights without gathering the model on rank 0;
runs resume across a different number of ranks; SIGTERM on one rank stops every rank.
Marked slow: each torchrun start costs seconds on a small CPU box (`pytest -m slow`)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from pythia.suite import train_suite
from pythia.train.metrics import read_jsonl
from pythia.train.spec import SuiteSpec
from pythia.verify import verify_run

from .conftest import run_cli, tiny_spec

pytestmark = pytest.mark.slow
M = "tiny-seed1"


@pytest.fixture(scope="module")
def setup(datasets, tmp_path_factory):
    root = tmp_path_factory.mktemp("dpckpt")
    # lr 1e-4 as in test_distributed: ranks differ from one process only by float rounding
    d = tiny_spec(datasets, root / "one", train={"iters": 6, "micro_batch": 2, "lr": 1e-4},
                  checkpoints={"max_shard_size": "40KB"},
                  members=[{"name": "tiny", "num_layers": 2, "hidden_size": 32, "num_heads": 4}], seeds=[1])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train_suite(SuiteSpec.from_dict(d), progress=False)
    finally:
        torch.set_num_threads(before)
    return root, d, one


def _run(root, d, out, ranks: int, parallel: str, hook: str | None = None):
    spec_path = root / f"{out.name}-{ranks}-{parallel}.yaml"
    spec_path.write_text(yaml.safe_dump({**d, "train": {**d["train"], "parallel": parallel}}))
    train = ["-m", "pythia.train", str(spec_path), "--out", str(out), "--no-progress"]
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] if ranks > 1 else []
    return run_cli(launch + train, {"PYTHIA_TRAIN_CRASH_AT": hook} if hook else None, timeout=300)


def _weights(step_dir) -> dict:
    from pythia.train.checkpoint import load_model_weights

    return load_model_weights(step_dir)


def _assert_matches(one, out):
    a, b = _weights(one / M / "step6"), _weights(out / M / "step6")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)
    losses = [r["loss"] for r in read_jsonl(out / M / "metrics.jsonl")]
    assert losses == pytest.approx([r["loss"] for r in read_jsonl(one / M / "metrics.jsonl")], rel=1e-5)
    assert verify_run(out).ok


def test_fsdp_sharded_state_resumes_on_one_rank(setup):
    root, d, one = setup
    out = root / "fsdp-then-one"
    p = _run(root, d, out, 2, "fsdp", hook="step:5")  # killed after update 5: step4 is the newest
    assert p.returncode != 0
    step4 = out / M / "step4"
    state = json.loads((step4 / "training_state" / "state.json").read_text())
    assert state["optimizer_state"] == "sharded"
    shards = sorted(p.name for p in (step4 / "training_state" / "optimizer").iterdir())
    assert ".metadata" in shards and len([s for s in shards if s.endswith(".distcp")]) == 2  # one per rank
    assert not (step4 / "training_state" / "optimizer.safetensors").exists()
    assert (step4 / "model.safetensors.index.json").is_file() and len(list(step4.glob("model-*.safetensors"))) >= 3
    p = _run(root, d, out, 1, "fsdp")  # one process: plain module, DCP reshards the 2-rank state
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _assert_matches(one, out)


def test_one_rank_state_resumes_under_fsdp(setup):
    root, d, one = setup
    out = root / "one-then-fsdp"
    assert _run(root, d, out, 1, "fsdp", hook="step:5").returncode == 137
    assert json.loads((out / M / "step4" / "training_state" / "state.json").read_text())["optimizer_state"] == "full"
    p = _run(root, d, out, 2, "fsdp")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _assert_matches(one, out)


def test_sigterm_on_one_rank_stops_all_ranks_and_resumes(setup):
    root, d, one = setup
    out = root / "sigterm"
    p = _run(root, d, out, 2, "fsdp", hook="sigterm:3@1")  # rank 1 alone gets the signal
    assert p.returncode != 0
    assert "stopped by SIGTERM after update 3" in p.stderr
    state = json.loads((out / M / "step3" / "training_state" / "state.json").read_text())
    assert state["preempted"] == "SIGTERM" and state["optimizer_state"] == "sharded"
    assert [r["step"] for r in read_jsonl(out / M / "metrics.jsonl")] == [1, 2, 3]
    p = _run(root, d, out, 2, "fsdp")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert not (out / M / "step3").exists()  # superseded by step4
    _assert_matches(one, out)


def test_optimizer_state_reads_a_two_rank_sharded_state_in_one_process(setup, tmp_path):
    """`optimizer_state` on checkpoints whose AdamW moments are 2 ranks' DCP shards, read here in one
    process with no process group: the statistics of the one-process run (up to float rounding)."""
    from pythia.analysis.runner import run_analyses
    from pythia.results import ResultsStore
    from pythia.run import open_run

    root, d, one = setup
    out = root / "fsdp-stats"
    p = _run(root, d, out, 2, "fsdp")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = {}
    for name, run_dir in (("fsdp", out), ("one", one)):
        assert run_analyses(open_run(run_dir, results_dir=tmp_path / name), "optimizer_state", steps="4,6",
                            progress=False).ok
        rows[name] = {(r["step"], r["task"], r["metric"]): r["value"]
                      for r in ResultsStore(tmp_path / name).rows(analysis="optimizer_state")}
    assert json.loads((out / M / "step6" / "training_state" / "state.json").read_text())["optimizer_state"] == "sharded"
    assert rows["fsdp"].keys() == rows["one"].keys() and len(rows["one"]) == 2 * 3 * 11
    for key, value in rows["one"].items():
        assert rows["fsdp"][key] == pytest.approx(value, rel=1e-3, abs=2e-3), key
