"""LR schedule values and Pythia's checkpoint list (spec pythia-model.md sections 1, 5)."""
from __future__ import annotations

import math

import pytest

from pythia.suite import train_suite
from pythia.train.metrics import read_jsonl
from pythia.train.schedule import checkpoint_steps, lr_at
from pythia.train.spec import SuiteSpec

from .conftest import tiny_spec

PYTHIA_70M = dict(lr=1e-3, min_lr=1e-4, warmup_iters=1430, total_iters=143_000)


@pytest.mark.parametrize("step, expected", [
    (0, 0.0), (1, 6.993e-07), (715, 5e-4), (1430, 1e-3), (50_000, 7.414e-04),
    (100_000, 2.199e-04), (115_000, 1.009e-04), (116_000, 1e-4), (143_000, 1e-4),
])
def test_neox_schedule_values_70m(step, expected):
    assert lr_at(step, **PYTHIA_70M) == pytest.approx(expected, rel=1e-3, abs=1e-12)


def test_floor_first_reached_at_115139():
    assert lr_at(115_138, **PYTHIA_70M) > 1e-4
    assert lr_at(115_139, **PYTHIA_70M) == 1e-4


class AnnealingLR:
    """Independent transcription of gpt-neox v1.0 megatron/learning_rates.py `AnnealingLR` (cosine
    style, no checkpoint), built the way megatron/training.py `get_learning_rate_scheduler` builds
    it: `warmup_iter = warmup * num_iters` with no rounding, `last_iter = 0`."""

    def __init__(self, optimizer, start_lr, warmup_iter, total_iters, last_iter, min_lr):
        self.optimizer, self.start_lr, self.min_lr = optimizer, start_lr, min_lr
        self.warmup_iter, self.num_iters, self.end_iter = warmup_iter, last_iter, total_iters
        self.step(self.num_iters)

    def get_lr(self):
        num_iters_ = min(self.num_iters, self.end_iter - self.warmup_iter)
        if self.warmup_iter > 0 and self.num_iters <= self.warmup_iter:
            return float(self.start_lr) * num_iters_ / self.warmup_iter
        num_iters_ = num_iters_ - self.warmup_iter
        lr = self.start_lr / 2.0 * (math.cos(math.pi * num_iters_ / self.end_iter) + 1)
        return max(lr, self.min_lr)

    def step(self, step_num=None):
        if step_num is None:
            step_num = self.num_iters + 1
        self.num_iters = step_num
        for group in self.optimizer["param_groups"]:
            group["lr"] = self.get_lr()


def neox_lrs(train_iters: int, warmup: float, lr: float, min_lr: float) -> list[float]:
    """The lr of each update of a GPT-NeoX run: DeepSpeed calls `lr_scheduler.step()` once after
    each applied update, so update k (1-based) sees the scheduler stepped k-1 times."""
    optimizer = {"param_groups": [{"lr": None}]}
    num_iters = max(1, train_iters)
    sched = AnnealingLR(optimizer, lr, warmup * num_iters, num_iters, 0, min_lr)
    out = []
    for _ in range(train_iters + 1):  # one past the end: the value the frozen tail keeps
        out.append(optimizer["param_groups"][0]["lr"])
        sched.step()
    return out


@pytest.mark.parametrize("iters", [20, 256, 143_000, 333, 7])
def test_neox_schedule_is_gpt_neox_for_any_length(tmp_path, iters):
    """Fractional warmups (0.2, 2.56, 3.33, 0.07 steps) and Pythia's 1430: every update's lr equals
    GPT-NeoX's bit for bit, through the spec's warmup as the trainer reads it."""
    spec = SuiteSpec.from_dict(tiny_spec({"train": "data/train", "valid": None}, tmp_path / "run",
                                         train={"iters": iters, "warmup_fraction": 0.01}))
    lr, min_lr = 1e-3, 1e-4
    ours = [lr_at(n, lr=lr, min_lr=min_lr, warmup_iters=spec.warmup_iters(), total_iters=iters)
            for n in range(iters + 1)]
    theirs = neox_lrs(iters, 0.01, lr, min_lr)
    differ = [n for n, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not differ, f"{len(differ)} of {iters + 1} differ, first at n={differ[0]}: {ours[differ[0]]} vs {theirs[differ[0]]}"


def test_fractional_warmup_first_updates():
    """20 iterations at 1%: warmup 0.2, so update 1 uses lr 0 and update 2 is already decaying."""
    kw = dict(lr=1e-3, min_lr=1e-4, warmup_iters=0.01 * 20, total_iters=20)
    assert lr_at(0, **kw) == 0.0
    assert lr_at(1, **kw) == pytest.approx(1e-3 / 2 * (math.cos(math.pi * 0.8 / 20) + 1))


def test_trainer_logs_gpt_neox_lr_with_fractional_warmup(datasets, tmp_path):
    """End to end: the lr in metrics.jsonl of a 7-update run with warmup 0.3 x 7 = 2.1 steps."""
    d = tiny_spec(datasets, tmp_path / "run", train={"iters": 7, "warmup_fraction": 0.3}, seeds=[1],
                  members=[{"name": "tiny", "num_layers": 1, "hidden_size": 32, "num_heads": 4}],
                  data={"valid": None}, checkpoints={"interval": 100, "log_spaced": False})
    run = train_suite(SuiteSpec.from_dict(d), progress=False)
    logged = [r["lr"] for r in read_jsonl(run / "tiny-seed1" / "metrics.jsonl")]
    member = SuiteSpec.from_dict(d).resolve_members(384)[0]
    assert logged == neox_lrs(7, 0.3, member.lr, member.min_lr)[:7]


def test_plain_cosine_option():
    kw = dict(PYTHIA_70M, schedule="cosine")
    assert lr_at(0, **kw) == pytest.approx(1e-3 / 1430)  # no lr = 0 first step
    assert lr_at(1430, **kw) == pytest.approx(1e-3)
    assert lr_at(143_000, **kw) == pytest.approx(1e-4)
    assert lr_at(0, **dict(kw, warmup_iters=0.2, total_iters=20)) == 1e-3  # a warmup under one step: capped
    values = [lr_at(n, **kw) for n in range(1430, 143_001, 1000)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="allowed: neox, cosine"):
        lr_at(3, **dict(PYTHIA_70M, schedule="linear"))


def test_pythia_checkpoint_steps():
    steps = checkpoint_steps(143_000, 1000)
    assert len(steps) == 154
    assert steps[:13] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000]
    assert steps[-1] == 143_000


def test_checkpoint_steps_small_and_final():
    assert checkpoint_steps(10, 4) == [0, 1, 2, 4, 8, 10]
    assert checkpoint_steps(10, 4, log_spaced=False) == [0, 4, 8, 10]
    assert checkpoint_steps(3, 100) == [0, 1, 2, 3]
