"""train.compile: true on CPU (fp32): the compiled step trains like the eager one (losses within
1e-5 over 5 steps), a compiled run resumed from a checkpoint in a new process continues
byte-identically, and the compile time is reported once. Inductor compiles C++ here: about 30 s
for the three tests on 2 idle cores with a cold cache, so they run with every `make test`."""
from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pythia.suite import train_suite
from pythia.train.compile import apply_compile
from pythia.train.metrics import read_jsonl
from pythia.train.spec import SuiteSpec

from .conftest import run_cli, tiny_spec


ONE = [{"name": "tiny", "num_layers": 2, "hidden_size": 32, "num_heads": 4}]


def _spec(datasets, out, compile_):
    # lr 1e-4: Adam turns rounding differences of near-zero gradients into ~lr-sized steps
    return tiny_spec(datasets, out, members=ONE, seeds=[1], checkpoints={"interval": 5},
                     train={"iters": 5, "global_batch": 8, "micro_batch": 4, "lr": 1e-4, "compile": compile_})


@pytest.fixture(scope="module")
def runs(datasets, tmp_path_factory):
    """Trained on one thread like the resumed process (OMP_NUM_THREADS=1): the thread count picks
    kernels, and module fixtures start before the per-test one_torch_thread."""
    root = tmp_path_factory.mktemp("compile")
    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, flag in (("eager", False), ("compiled", True)):
            out[name] = train_suite(SuiteSpec.from_dict(_spec(datasets, root / name, flag)), progress=False)
    finally:
        torch.set_num_threads(threads)
    return root, out


def test_compiled_losses_match_eager(runs):
    _, out = runs
    eager, compiled = (read_jsonl(out[k] / "tiny-seed1" / "metrics.jsonl") for k in ("eager", "compiled"))
    assert [r["batch_fp"] for r in eager] == [r["batch_fp"] for r in compiled]
    assert len(compiled) == 5
    for a, b in zip(eager, compiled):
        assert abs(a["loss"] - b["loss"]) <= 1e-5, (a["step"], a["loss"], b["loss"])
    a, b = (load_file(out[k] / "tiny-seed1" / "step5" / "model.safetensors") for k in ("eager", "compiled"))
    for key in a:
        # the key bias's true gradient is 0 (softmax ignores a shift shared by all keys): Adam turns
        # the two rounding noises into steps of up to lr each, so compare it to lr x steps
        atol = 5 * 1e-4 if key.endswith("query_key_value.bias") else 1e-5
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)
    evals = read_jsonl(out["compiled"] / "tiny-seed1" / "evals.jsonl")  # checkpoint analyses ran (eagerly)
    assert [r["step"] for r in evals] == [0, 1, 2, 4, 5] and all(r["val_loss"] for r in evals)


def test_compiled_resume_is_bit_identical(runs, datasets):
    """Resume the compiled run from step4 in a fresh process (which compiles again): step5's
    weights, optimizer state and the logged losses are byte-identical, and the compile time is
    reported once."""
    root, out = runs
    resumed = root / "resumed"
    shutil.copytree(out["compiled"], resumed)
    shutil.rmtree(resumed / "tiny-seed1" / "step5")
    spec_path = root / "compiled.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(datasets, resumed, True)))
    p = run_cli(["-m", "pythia.train", str(spec_path), "--out", str(resumed), "--no-progress"], timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count("torch.compile:") == 1 and "s compiling" in p.stdout, p.stdout
    for rel in ("step5/model.safetensors", "step5/training_state/optimizer.safetensors"):
        assert (out["compiled"] / "tiny-seed1" / rel).read_bytes() == (resumed / "tiny-seed1" / rel).read_bytes(), rel
    ref, again = (read_jsonl(d / "tiny-seed1" / "metrics.jsonl") for d in (out["compiled"], resumed))
    assert [r["loss"] for r in ref] == [r["loss"] for r in again]


def test_compiled_head_matches_eager():
    """The head + loss compiled too (the CUDA default): loss and gradients of one step equal the
    eager model's within fp32 rounding; parameter names and state dict unchanged."""
    from pythia.config import custom_config
    from pythia.model import GPTNeoX

    torch.manual_seed(0)
    cfg = custom_config(num_layers=1, hidden_size=32, num_heads=4, vocab_size=384, max_seq_len=64)
    eager, compiled = GPTNeoX(cfg), GPTNeoX(cfg)
    compiled.load_state_dict(eager.state_dict())
    handle = apply_compile(compiled, head=True)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    x = torch.randint(0, 384, (3, 17))
    for model in (eager, compiled):
        model(x[:, :-1], labels=x[:, 1:]).backward()
    torch.testing.assert_close(compiled(x[:, :-1], labels=x[:, 1:]), eager(x[:, :-1], labels=x[:, 1:]), atol=1e-6,
                               rtol=0)
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)
    handle.undo()
    assert "head_loss" not in vars(compiled) and all("forward" not in vars(layer) for layer in compiled.gpt_neox.layers)
