"""torchrun data parallelism on CPU (gloo): 2 ranks (DDP, and FSDP2) match 1 rank, eager and with
train.compile (layers compiled before DDP / FSDP2 wrap them; `-m slow`)."""
from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pythia.suite import train_suite
from pythia.train.metrics import read_jsonl
from pythia.train.spec import SuiteSpec
from pythia.verify import verify_run

from .conftest import run_cli, tiny_spec


@pytest.fixture(scope="module")
def spec_and_reference(datasets, tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    # lr 1e-4: Adam turns rounding differences of near-zero gradients into ~lr-sized steps
    d = tiny_spec(datasets, root / "one", train={"iters": 6, "micro_batch": 2, "lr": 1e-4},
                  members=[{"name": "tiny", "num_layers": 2, "hidden_size": 32, "num_heads": 4}], seeds=[1])
    one = train_suite(SuiteSpec.from_dict(d), progress=False)
    return root, d, one


@pytest.mark.parametrize("parallel,compiled", [("ddp", False), ("fsdp", False),
                                               pytest.param("ddp", True, marks=pytest.mark.slow),
                                               pytest.param("fsdp", True, marks=pytest.mark.slow)])
def test_two_ranks_match_one(spec_and_reference, parallel, compiled):
    root, d, one = spec_and_reference
    d = {**d, "train": {**d["train"], "parallel": parallel, "compile": compiled}}
    name = parallel + ("-compiled" if compiled else "")
    spec_path = root / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(d))
    out = root / name
    p = run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                 "-m", "pythia.train", str(spec_path), "--out", str(out), "--no-progress"],
                timeout=900 if compiled else 240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert ("torch.compile:" in p.stdout) == compiled and "training without" not in p.stderr
    a, b = load_file(one / "tiny-seed1" / "step6" / "model.safetensors"), load_file(out / "tiny-seed1" / "step6" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        # compiled: the key bias's true gradient is 0 (softmax ignores a shift shared by all keys),
        # so Adam turns two different rounding noises into steps of up to lr each: lr x steps
        atol = 6 * 1e-4 if compiled and k.endswith("query_key_value.bias") else 1e-5
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)
    m1, m2 = read_jsonl(one / "tiny-seed1" / "metrics.jsonl"), read_jsonl(out / "tiny-seed1" / "metrics.jsonl")
    assert [r["step"] for r in m2] == list(range(1, 7))  # rank 0 alone writes logs
    assert [r["batch_fp"] for r in m1] == [r["batch_fp"] for r in m2]
    assert [r["loss"] for r in m2] == pytest.approx([r["loss"] for r in m1], rel=1e-5)
    assert verify_run(out).ok
