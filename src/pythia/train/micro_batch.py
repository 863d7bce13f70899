"""`train.micro_batch: auto`: the largest micro batch that fits, found once per shape and device.

Only the split of each global batch changes: its rows, their order and the rank slices stay
GPT-NeoX's (distributed.rank_slice), and each micro loss is still divided by the number of
micro-steps, so the gradient is that of the mean loss over the same global batch. The micro
batch m must divide global_batch / data-parallel size.

CUDA: a short probe before the first step. One eager forward + backward of dummy rows at m = 1
and at m = 2 on every rank (the same code as training: fused head + loss, autocast) gives the
peak memory of each; activation memory grows linearly with m, so peak(m) = base + m x per_row.
The largest m whose peak, plus the AdamW moments still to be allocated, stays within 90% of the
memory free for this process wins. The fit (base, per_row) is cached per shape, precision,
parallel layout, device and torch version in `$PYTHIA_CACHE_DIR` (default
`$XDG_CACHE_HOME/pythia` or `~/.cache/pythia`), micro_batch.json, so later runs skip the probe.

CPU: memory rarely binds and a step's throughput stops growing at a few thousand tokens per
forward (docs/training.md, "Micro batch"), so m is the largest divisor with m x seq_len <=
CPU_TOKENS.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

from ..io import write_text_atomic
from .distributed import DistContext

CPU_TOKENS = 4096
"""Tokens per forward on CPU beyond which the measured step throughput no longer improves."""
MEMORY_FRACTION = 0.9
"""Share of the free device memory the predicted peak may use (allocator fragmentation, NCCL buffers)."""
CACHE_FILE = "micro_batch.json"


def candidates(per_rank: int) -> list[int]:
    """Micro batches that split `per_rank` rows evenly, largest first."""
    return [m for m in range(per_rank, 0, -1) if per_rank % m == 0]


def cpu_micro_batch(per_rank: int, seq_len: int, max_tokens: int | None = None) -> int:
    """The largest divisor m of per_rank with m x seq_len <= max_tokens (at least 1)."""
    limit = CPU_TOKENS if max_tokens is None else max_tokens
    return next((m for m in candidates(per_rank) if m * seq_len <= limit), 1)


def fit_micro_batch(per_rank: int, base: float, per_row: float, budget: float) -> int:
    """The largest divisor m of per_rank with base + m x per_row <= budget (bytes); 1 if none."""
    return next((m for m in candidates(per_rank) if base + m * per_row <= budget), 1)


def cache_dir() -> Path:
    root = os.environ.get("PYTHIA_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pythia"


def cache_key(config, seq_len: int, precision: str, parallel: str, world: int, compiled: bool,
              device: torch.device) -> str:
    """Everything the activation memory of one row depends on, and the device it was measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = f"{props.name} {props.total_memory // 2**20} MiB"
    else:
        where = device.type
    return (f"L{config.num_layers} d{config.hidden_size} H{config.num_heads} V{config.vocab_size} "
            f"rot{config.rotary_dims} S{seq_len} {precision} {parallel}x{world} compile={bool(compiled)} | "
            f"{where} | torch {torch.__version__}")


def read_cache(key: str) -> dict | None:
    """The cached fit for `key`, or None (a missing or unreadable cache is simply probed again)."""
    try:
        entry = json.loads((cache_dir() / CACHE_FILE).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in ("base", "per_row")):
        return entry
    return None


def write_cache(key: str, entry: dict) -> None:
    """Add `entry` under `key` (atomic replace; a cache that cannot be written is only a lost speed-up)."""
    path = cache_dir() / CACHE_FILE
    try:
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
            table = table if isinstance(table, dict) else {}
        except (OSError, ValueError):
            table = {}
        table[key] = entry
        write_text_atomic(path, json.dumps(table, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass


def probe_memory(step: Callable[[int], None], device: torch.device) -> tuple[float, float]:
    """(base, per_row) bytes from the peak memory of `step(1)` and `step(2)` (CUDA):
    peak(m) = base + m x per_row, base counting what is allocated before the step."""
    peaks = []
    for m in (1, 2):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(m)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device))
    per_row = max(peaks[1] - peaks[0], 1)
    return float(peaks[0] - per_row), float(per_row)


def device_budget(device: torch.device) -> float:
    """Bytes this process may use on `device`: what it holds now plus what is free."""
    free, _ = torch.cuda.mem_get_info(device)
    return MEMORY_FRACTION * (free + torch.cuda.memory_reserved(device))


def auto_micro_batch(per_rank: int, seq_len: int, device: torch.device, key: str, step: Callable[[int], None],
                     extra_bytes: float = 0.0, ctx: DistContext | None = None) -> tuple[int, str]:
    """(micro batch, how it was found). CPU: cpu_micro_batch. CUDA: the cached fit for `key`, or a
    probe through `step(m)` (an eager forward + backward of m dummy rows, gradients dropped after);
    `extra_bytes`: memory still to come that the probe does not see (the AdamW moments). Under
    torchrun every rank probes when any lacks the fit (the probe's backward may hold
    collectives) and all take the smallest answer."""
    ctx = ctx or DistContext(device=torch.device(device))
    if torch.device(device).type != "cuda":
        m = cpu_micro_batch(per_rank, seq_len)
        return m, f"{m} x {seq_len} tokens per forward (CPU: at most {CPU_TOKENS})"
    entry = read_cache(key)
    how = "cached fit"
    if ctx.any(entry is None):
        base, per_row = probe_memory(step, device)
        entry = {"base": base, "per_row": per_row, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if ctx.is_main:
            write_cache(key, entry)
        how = "probed"
    budget = device_budget(device)
    m = ctx.min(fit_micro_batch(per_rank, entry["base"] + extra_bytes, entry["per_row"], budget))
    peak = entry["base"] + extra_bytes + m * entry["per_row"]
    return m, (f"{m} ({how}: {entry['per_row'] / 2**20:,.0f} MiB per row, predicted peak {peak / 2**30:.1f} of "
               f"{budget / 2**30:.1f} GiB usable)")


__all__ = ["CPU_TOKENS", "auto_micro_batch", "cache_key", "candidates", "cpu_micro_batch", "fit_micro_batch",
           "probe_memory", "read_cache", "write_cache"]
