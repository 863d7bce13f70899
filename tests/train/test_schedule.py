"""LR schedule values and Pythia's checkpoint list (spec pythia-model.md sections 1, 5)."""
from __future__ import annotations

import pytest

from pythia.train.schedule import checkpoint_steps, lr_at

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


def test_plain_cosine_option():
    kw = dict(PYTHIA_70M, schedule="cosine")
    assert lr_at(0, **kw) == pytest.approx(1e-3 / 1430)  # no lr = 0 first step
    assert lr_at(1430, **kw) == pytest.approx(1e-3)
    assert lr_at(143_000, **kw) == pytest.approx(1e-4)
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
