"""Weight-decay groups, the DeepSpeed-style loss scaler, gradient accumulation equivalence."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pythia.config import custom_config
from pythia.model import GPTNeoX
from pythia.train.optim import DynamicLossScaler, param_groups, set_lr
from pythia.train.spec import SuiteSpec
from pythia.train.trainer import MemberRun, Trainer

from .conftest import tiny_spec


def test_weight_decay_groups():
    torch.manual_seed(0)
    model = GPTNeoX(custom_config(num_layers=2, hidden_size=32, num_heads=4, vocab_size=384))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "gpt_neox.embed_in.weight" in decay["names"] and "embed_out.weight" in decay["names"]
    assert all(n.endswith("bias") or "layernorm" in n or "final_layer_norm" in n for n in no_decay["names"])
    assert all(not n.endswith("bias") and "norm" not in n for n in decay["names"])
    # per layer: qkv, dense, h_to_4h, 4h_to_h weights decayed; 4 biases + 2 LNs x 2 not; + final LN
    assert len(decay["names"]) == 2 * 4 + 2 and len(no_decay["names"]) == 2 * 8 + 2
    assert len(decay["names"]) + len(no_decay["names"]) == len(list(model.parameters()))


def test_loss_scaler_overflow_hysteresis_and_growth():
    s = DynamicLossScaler(scale=2.0**12, window=3, hysteresis=2, min_scale=1.0)
    s.update(overflow=True)  # first overflow: hysteresis absorbs it
    assert s.loss_scale == 4096 and s.hysteresis_left == 1
    s.update(overflow=True)  # second: halve
    assert s.loss_scale == 2048
    for _ in range(3):
        s.update(overflow=False)
    assert s.loss_scale == 2048  # window not yet elapsed
    s.update(overflow=False)
    assert s.loss_scale == 4096 and s.hysteresis_left == 2  # grown, hysteresis refilled
    tiny = DynamicLossScaler(scale=2.0, hysteresis=1, min_scale=1.0)
    tiny.update(True)
    tiny.update(True)
    assert tiny.loss_scale == 1.0  # never below min_scale
    assert DynamicLossScaler(enabled=False).loss_scale == 1.0


class _ListOrder:
    def __init__(self, tokens: np.ndarray):
        self.tokens = tokens

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        return self.tokens[step * batch_size:(step + 1) * batch_size]


def _trainer(tmp_path, order, micro: int, precision: str = "fp32", **train) -> Trainer:
    d = tiny_spec({"train": "unused", "valid": None}, tmp_path / f"run{micro}{precision}",
                  train={"micro_batch": micro, "global_batch": 8, "iters": 3, "precision": precision,
                         "warmup_fraction": 0.0, **train})
    spec = SuiteSpec.from_dict(d)
    member = spec.resolve_members(384)[0]
    t = Trainer(MemberRun(member=member, spec=spec, member_dir=tmp_path / f"m{micro}{precision}", order=order))
    t.setup()
    return t


def test_grad_accumulation_equivalence(tmp_path):
    rng = np.random.default_rng(0)
    order = _ListOrder(rng.integers(0, 300, size=(24, 17)).astype(np.int64))
    a, b = _trainer(tmp_path, order, micro=2), _trainer(tmp_path, order, micro=8)
    assert (a.gas, b.gas) == (4, 1)
    tokens = order.batch(0, 8)
    assert float(a.forward_backward(tokens)) == pytest.approx(float(b.forward_backward(tokens)), rel=1e-6)
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-7, rtol=1e-5, msg=name)
    for t in (a, b):
        set_lr(t.optimizer, 1e-3)
        t.apply_update()
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        # 1e-5, not 1e-7: Adam's first step is ~lr*g/|g|, which magnifies rounding in near-zero grads
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=0, msg=name)
    for n in range(1, 3):  # whole steps: same batches, same losses
        ra, rb = a.train_step(n), b.train_step(n)
        assert ra["batch_fp"] == rb["batch_fp"]
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    a.log.close(), b.log.close()


def test_fp16_overflow_skips_step(tmp_path):
    rng = np.random.default_rng(0)
    order = _ListOrder(rng.integers(0, 300, size=(24, 17)).astype(np.int64))
    # a loss scale of 2^200 overflows fp32 gradients -> inf norm -> step skipped, scale held (hysteresis)
    t = _trainer(tmp_path, order, micro=8, precision="fp16", loss_scale={"initial_power": 200})
    before = [p.detach().clone() for p in t.model.parameters()]
    record = t.train_step(0)
    assert record["skipped"] and record["grad_norm"] is None and t.updates == 0
    assert all(torch.equal(x, p) for x, p in zip(before, t.model.parameters()))
    assert t.scaler.loss_scale == 2.0**200 and t.scaler.hysteresis_left == 1
    t.train_step(1)
    assert t.scaler.loss_scale == 2.0**199  # second overflow halves
    t.log.close()
