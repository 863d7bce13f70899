"""Checks that need a CUDA device (`pytest -m gpu`; benchmarks/gpu_checks.sh runs them on a lent
GPU machine). The default run deselects them; without CUDA they are skipped with the reason."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_model_on_cuda_matches_transformers():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from pythia.config import custom_config
    from pythia.hf import to_hf_config
    from pythia.generate import generate_greedy
    from pythia.model import GPTNeoX

    cfg = custom_config(num_layers=2, hidden_size=128, num_heads=4, vocab_size=512)
    torch.manual_seed(0)
    ours = GPTNeoX(cfg, device="cuda").eval()
    hf = GPTNeoXForCausalLM(GPTNeoXConfig(**{k: v for k, v in to_hf_config(cfg).items() if k != "pythia_config"}))
    hf.load_state_dict({("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in ours.state_dict().items()})
    hf = hf.cuda().eval()
    ids = torch.randint(0, 512, (4, 64), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, rtol=1e-4, atol=1e-4)
        ref = hf.generate(ids[:, :16], attention_mask=torch.ones_like(ids[:, :16]), max_new_tokens=16,
                          min_new_tokens=16, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert torch.equal(generate_greedy(ours, ids[:, :16], 16), ref)


def test_val_loss_on_cuda_matches_cpu(quick_demo, tmp_path):
    from pythia.analysis.runner import run_analyses
    from pythia.run import open_run

    out, _ = quick_demo
    cpu = {(r["member"], r["step"]): r["value"] for r in open_run(out).results().rows(analysis="val_loss")}
    run = open_run(out, results_dir=tmp_path / "results")
    assert run_analyses(run, "val_loss", steps="0,20", device="cuda", progress=False).ok
    gpu = {(r["member"], r["step"]): r["value"] for r in run.results().rows(analysis="val_loss")}
    assert gpu and all(gpu[k] == pytest.approx(cpu[k], rel=1e-4) for k in gpu)


# -- the training step at the GPU's pace (pythia.train.compile, micro_batch, deferred stats) ----
class _Order:
    def __init__(self, vocab: int, seq: int):
        import numpy as np

        self.tokens = np.random.default_rng(0).integers(0, vocab, size=(256, seq + 1)).astype("int64")

    def batch(self, step, batch_size):
        return self.tokens[[(i + step * batch_size) % len(self.tokens) for i in range(batch_size)]]


def _cuda_trainer(tmp_path, name, options=None, **train):
    from pythia.train.distributed import DistContext
    from pythia.train.spec import SuiteSpec
    from pythia.train.trainer import MemberRun, StepOptions, Trainer

    spec = SuiteSpec.from_dict({
        "name": "gpu-step", "output": str(tmp_path / name), "data": {"train": str(tmp_path / "unused"), "seq_len": 128},
        "train": {"iters": 20, "global_batch": 8, "micro_batch": 4, "precision": "bf16", "device": "cuda", "lr": 1e-3,
                  "warmup_fraction": 0.1, **train},
        "checkpoints": {"interval": 1000, "log_spaced": False},
        "members": [{"name": "t", "num_layers": 2, "hidden_size": 128, "num_heads": 4}], "seeds": [1],
    })
    run = MemberRun(member=spec.resolve_members(512)[0], spec=spec, member_dir=tmp_path / name,
                    order=_Order(512, 128), ctx=DistContext(device=torch.device("cuda", 0)),
                    options=options or StepOptions())
    t = Trainer(run)
    t.setup()
    return t


def test_compiled_step_on_cuda_matches_eager(tmp_path):
    """train.compile on CUDA (layers and the fused head + loss compiled): the same losses as
    eager within bf16 rounding over 5 steps."""
    eager, compiled = _cuda_trainer(tmp_path, "eager", compile=False), _cuda_trainer(tmp_path, "compiled", compile=True)
    assert eager.compiled is None and compiled.compiled is not None
    a = [eager.train_step(n) for n in range(5)]
    b = [compiled.train_step(n) for n in range(5)]
    eager.settle(), compiled.settle()
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-2)
    eager.log.close(), compiled.log.close()


def test_deferred_step_never_waits_for_the_gpu(tmp_path):
    """On CUDA the step keeps its loss, grad norm, skip flag and lr on the device: between two
    reads (every read_stats_every steps) a step makes no synchronizing call at all."""
    from pythia.train.trainer import StepOptions

    t = _cuda_trainer(tmp_path, "deferred", StepOptions(read_stats_every=4), compile=False)
    host = _cuda_trainer(tmp_path, "host", StepOptions(deferred_stats=False), compile=False)
    assert t.deferred and not host.deferred
    records = [t.train_step(0)]  # first step: allocations, optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        records += [t.train_step(1), t.train_step(2)]  # 2 and 3 steps pending: not read yet
    finally:
        torch.cuda.set_sync_debug_mode(0)
    records.append(t.train_step(3))  # the 4th pending step: all four read in one transfer
    assert all(isinstance(r["loss"], float) for r in records)
    ref = [host.train_step(n) for n in range(4)]
    assert [r["lr"] for r in records] == [r["lr"] for r in ref]
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in ref], rel=1e-3)
    t.log.close(), host.log.close()


def test_micro_batch_auto_on_cuda(tmp_path, monkeypatch, capsys):
    """train.micro_batch: auto probes the memory once (cached per shape and device), picks a
    divisor of the global batch, and trains the same batches as that micro batch written out."""
    monkeypatch.setenv("PYTHIA_CACHE_DIR", str(tmp_path / "cache"))
    auto = _cuda_trainer(tmp_path, "auto", micro_batch="auto", global_batch=16, precision="fp32")
    assert "train.micro_batch auto:" in capsys.readouterr().out and 16 % auto.micro == 0
    assert (tmp_path / "cache" / "micro_batch.json").is_file()
    again = _cuda_trainer(tmp_path, "again", micro_batch="auto", global_batch=16, precision="fp32")
    assert "cached fit" in capsys.readouterr().out and again.micro == auto.micro
    explicit = _cuda_trainer(tmp_path, "explicit", micro_batch=auto.micro, global_batch=16, precision="fp32")
    a, b = [auto.train_step(n) for n in range(3)], [explicit.train_step(n) for n in range(3)]
    auto.settle(), explicit.settle()
    assert [r["batch_fp"] for r in a] == [r["batch_fp"] for r in b]
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)
    for t in (auto, again, explicit):
        t.log.close()
