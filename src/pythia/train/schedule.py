"""Learning-rate schedules and the checkpoint schedule: plain functions of the step number.

Step conventions (shared by the whole train package): `n` is the number of optimizer updates
already applied. Update number n+1 (1-based) uses `lr_at(n)`, and checkpoint `stepN` holds the
weights after N updates (`step0` = the initialisation). This is gpt-neox v1.0's convention,
spec pythia-model.md section 5 and gpt-neox-data-order.md section 7.
"""
from __future__ import annotations

import math

LR_SCHEDULES = ("neox", "cosine")


def warmup_iters_for(train_iters: int, warmup_fraction: float) -> float:
    """gpt-neox v1.0 `get_learning_rate_scheduler` (megatron/training.py at tag v1.0):
    `warmup_iter = neox_args.warmup * num_iters`, a float handed to `AnnealingLR` as is.

    Nothing rounds it (the `int()` in its arguments is only for OneBitAdam's DeepSpeed schedule):
    1430.0 for Pythia's 143,000 iterations, but 2.56 for 256 and 0.2 for 20, where a truncated
    2 or 0 would change most of the learning rates (pythia issue 17).
    """
    return warmup_fraction * train_iters


def lr_at(
    n: int,
    *,
    lr: float,
    min_lr: float,
    warmup_iters: float,
    total_iters: int,
    schedule: str = "neox",
) -> float:
    """Learning rate of the update that follows `n` completed updates.

    "neox": gpt-neox v1.0 `AnnealingLR.get_lr` (megatron/learning_rates.py at tag v1.0) exactly
    as Pythia was trained, same operations in the same order, quirks included. DeepSpeed steps
    it once after each applied update, so `n` is its `num_iters`; `warmup_iters` may be
    fractional (see `warmup_iters_for`):
      * n = 0 gives lr 0, so the first update changes nothing (pythia#83, gpt-neox#1373);
      * the cosine divides by total_iters (not total - warmup) and is clipped at min_lr
        instead of decaying to it, so the floor is reached at 80.5% of training (115,139
        of 143,000 for Pythia);
      * `min(n, total - warmup)` freezes the value over the last warmup_iters steps.
    "cosine": the corrected schedule of gpt-neox PRs #1008/#1011/#1379: linear warmup that
      starts at lr/warmup (max(1, n)), capped at lr when the warmup is under one step, then
      `min_lr + (lr - min_lr)/2 (1 + cos(pi t))` with t running from 0 to 1 over the steps
      after warmup.
    """
    if schedule == "neox":
        n_ = min(n, total_iters - warmup_iters)
        if warmup_iters > 0 and n <= warmup_iters:
            return lr * n_ / warmup_iters
        n_ -= warmup_iters
        return max(lr / 2.0 * (math.cos(math.pi * n_ / total_iters) + 1.0), min_lr)
    if schedule == "cosine":
        if warmup_iters > 0 and n < warmup_iters:
            return min(lr, lr * max(1, n) / warmup_iters)
        decay = max(1, total_iters - warmup_iters)
        t = min(1.0, max(0.0, (n - warmup_iters) / decay))
        return min_lr + (lr - min_lr) / 2.0 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown lr schedule {schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")


def checkpoint_steps(train_iters: int, interval: int, log_spaced: bool = True) -> list[int]:
    """Steps saved by a Pythia-style run, ascending.

    step 0 (the init, saved before any update), the powers of two below `interval` when
    `log_spaced` (Pythia: 1, 2, 4, ..., 512), every multiple of `interval`, and the final step.
    Pythia (143,000 iters, interval 1000) gets 154: 0, 1..512 (10), 1000..143000 (143).
    """
    if train_iters < 0 or interval <= 0:
        raise ValueError(f"checkpoint_steps needs train_iters >= 0 and interval > 0, got {train_iters}, {interval}")
    steps = {0, train_iters}
    if log_spaced:
        p = 1
        while p < interval and p <= train_iters:
            steps.add(p)
            p *= 2
    steps.update(range(interval, train_iters + 1, interval))
    return sorted(steps)
