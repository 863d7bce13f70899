"""Data parallelism from outside the model: torchrun env -> process group, torch.compile
(pythia.train.compile), then DDP or FSDP2 wrap.

Launch with `torchrun --nproc-per-node N -m pythia.train SPEC.yaml` (or the `pythia` script);
RANK/WORLD_SIZE/LOCAL_RANK come from torchrun. Backend: NCCL when the device is CUDA, gloo on
CPU. Rank r of a data-parallel group of size DP reads, inside micro-step m of step n, the
positions [n*B + m*micro*DP + r*micro, ... + micro) -- GPT-NeoX's DistributedBatchSampler
(gpt-neox-data-order.md section 7).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .compile import CompiledModel, apply_compile


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False
    control_group: object = None
    """A gloo group beside NCCL for host-side values (loss logging, stop flags): agreeing on them
    then never waits for the GPU's queue."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Average a Python float over ranks (loss logging)."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._host_device)
        dist.all_reduce(t, group=self.control_group)
        return float(t.item()) / self.world_size

    def min(self, value: int) -> int:
        """The smallest of an integer over ranks (e.g. the micro batch that fits on every rank)."""
        if not self.distributed:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one (e.g. a stop signal)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([int(bool(flag))], dtype=torch.int32, device=self._host_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control_group)
        return bool(t.item())

    @property
    def _host_device(self) -> torch.device:
        return torch.device("cpu") if self.control_group is not None else self.device

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every rank (e.g. the path of a checkpoint being written)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available")
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto") -> DistContext:
    """Read torchrun's env; start a process group when WORLD_SIZE > 1 (reuse one if present)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    ctx = DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        ctx.initialized_here = True
        if dev.type == "cuda":
            ctx.control_group = dist.new_group(backend="gloo")
    elif dist.is_initialized():
        ctx.rank, ctx.world_size = dist.get_rank(), dist.get_world_size()
    return ctx


def wrap_model(model: torch.nn.Module, ctx: DistContext, parallel: str) -> torch.nn.Module:
    """DDP (replicated) or FSDP2 (sharded per transformer layer, then the root)."""
    if parallel == "fsdp":
        if not ctx.distributed:
            return model  # one process: sharding over one rank is a no-op, keep the plain module
        from torch.distributed.fsdp import fully_shard

        layers = getattr(getattr(model, "gpt_neox", model), "layers", None)
        for layer in layers or []:
            fully_shard(layer)
        fully_shard(model)
        return model
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def parallelize(model: torch.nn.Module, ctx: DistContext, parallel: str, compile_mode: str | None = None,
                compile_head: bool = True) -> tuple[torch.nn.Module, CompiledModel | None]:
    """torch.compile (per layer, and the fused head + loss with compile_head, when compile_mode
    is given: "default", "reduce-overhead", ...), then DDP or FSDP2 around it: torchtitan's
    order, so FSDP2's hooks and DDP's gradient buckets stay outside the compiled graphs.
    Returns (wrapped model, the compiled handle or None)."""
    compiled = apply_compile(model, compile_mode, head=compile_head) if compile_mode is not None else None
    return wrap_model(model, ctx, parallel), compiled


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def rank_slice(global_batch: int, micro: int, world: int, micro_step: int, rank: int) -> slice:
    """Rows of a (B, S+1) global batch read by `rank` in `micro_step` (GPT-NeoX sampler)."""
    start = micro_step * micro * world + rank * micro
    return slice(start, start + micro)
