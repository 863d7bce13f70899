"""Checkpoint callbacks: how whoever observes training learns that a checkpoint exists.

The trainer knows no observer. After it writes `step{N}` it calls every callback it was given
with a `CheckpointSaved` (member, step, folder, and the model still in memory, so an observer
can evaluate it without reading it back). This is OLMo-core's `Callback.post_checkpoint_saved`
(allenai/OLMo-core, src/olmo_core/train/callbacks/callback.py), narrowed to the one event this
trainer has observers for. The checkpoint-time analyses (`pythia.analysis.runner.
CheckpointAnalyses`) are one implementation; the suite driver (`pythia.suite`) wires them in.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["CheckpointCallback", "CheckpointSaved"]


@dataclass(frozen=True)
class CheckpointSaved:
    """What the trainer tells its callbacks about a checkpoint it has just written."""

    member: str
    step: int
    path: Path
    """The step folder (complete: its manifest is written)."""
    model: Any
    """The model in memory (FSDP-sharded under FSDP: then every rank is called)."""
    device: Any
    autocast: Any
    """torch.autocast dtype of the trainer's forward passes (bf16/fp16), None for fp32."""
    micro_batch: int
    """Rows per forward pass the trainer uses: a safe batch size for an observer's own passes."""
    is_main: bool
    """Rank 0: the one rank that writes files."""


class CheckpointCallback(Protocol):
    """An observer of checkpoints. Every rank calls it (sharded models need every rank)."""

    def post_checkpoint_saved(self, saved: CheckpointSaved) -> dict[str, float] | None:
        """Called once `saved.path` is complete. Returns scalars for the member's evals.jsonl
        (and TensorBoard), or None when it had nothing to report."""

    def pending(self, member: str, step: int) -> bool:
        """Whether this observer's work for an existing checkpoint is missing (a crash between
        the checkpoint and its callbacks): the trainer calls it again when it resumes there."""
