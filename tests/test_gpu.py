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
