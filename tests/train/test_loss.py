"""The one loss path (pythia.loss, fused head + cross-entropy) against the full-logits
cross-entropy it replaces: values, gradients, and the trainer's step and validation."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pythia.config import custom_config
from pythia.loss import token_loss, token_loss_sum
from pythia.model import GPTNeoX
from pythia.train.spec import SuiteSpec
from pythia.train.trainer import MemberRun, Trainer

from .conftest import tiny_spec


def _full_logits_loss(model, windows: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The independent reference: materialise (b, S, V) logits, then F.cross_entropy in fp32."""
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1), reduction=reduction)


@pytest.fixture
def model_and_windows():
    torch.manual_seed(0)
    model = GPTNeoX(custom_config(num_layers=2, hidden_size=32, num_heads=4, vocab_size=384))
    windows = torch.randint(0, 384, (3, 17), generator=torch.Generator().manual_seed(1))
    return model, windows


def test_sum_and_mean_match_full_logits_fp32(model_and_windows):
    model, windows = model_and_windows
    total, count = token_loss_sum(model, windows)
    ref_sum = _full_logits_loss(model, windows, "sum")
    assert count == 3 * 16 and total.dtype == torch.float32
    assert total.item() == pytest.approx(ref_sum.item(), rel=1e-6)
    mean = token_loss(model, windows.numpy())  # numpy in: moved to the model's device
    assert mean.item() == pytest.approx(ref_sum.item() / count, rel=1e-6)


def test_gradients_match_full_logits_fp32(model_and_windows):
    model, windows = model_and_windows
    ref = copy.deepcopy(model)
    token_loss(model, windows).backward()
    _full_logits_loss(ref, windows).backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_bf16_autocast_close_to_full_logits(model_and_windows):
    model, windows = model_and_windows
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _full_logits_loss(model, windows).item()
    got = token_loss(model, windows, autocast_dtype=torch.bfloat16).item()
    assert got == pytest.approx(ref, rel=2e-2)
    assert got != pytest.approx(token_loss(model, windows).item(), rel=1e-7)  # autocast really applied


def test_bad_window_shape_is_refused(model_and_windows):
    model, _ = model_and_windows
    with pytest.raises(ValueError, match=r"\(batch, S\+1\)"):
        token_loss(model, torch.zeros(5, dtype=torch.long))


class _Order:
    def __init__(self, tokens: np.ndarray):
        self.tokens = tokens

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        return self.tokens[step * batch_size:(step + 1) * batch_size]


def test_trainer_step_uses_the_fused_loss(tmp_path):
    """(Validation goes through the same pythia.loss function: the val_loss analysis, checked
    against transformers in tests/analysis/test_runner.py.)"""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 300, size=(8, 17)).astype(np.int64)
    d = tiny_spec({"train": "unused", "valid": None}, tmp_path / "run",
                  train={"micro_batch": 4, "global_batch": 8, "iters": 2, "warmup_fraction": 0.0})
    spec = SuiteSpec.from_dict(d)
    t = Trainer(MemberRun(member=spec.resolve_members(384)[0], spec=spec, member_dir=tmp_path / "m",
                          order=_Order(tokens)))
    t.setup()
    ref = copy.deepcopy(t.model)
    loss = t.forward_backward(tokens)
    x = torch.from_numpy(tokens)
    ref_loss = sum(_full_logits_loss(ref, x[i:i + 4]) / 2 for i in (0, 4))  # gas = 2 micro-steps
    ref_loss.backward()
    assert float(loss) == pytest.approx(ref_loss.item(), rel=1e-6)
    for (name, p), q in zip(t.model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
    t.log.close()
