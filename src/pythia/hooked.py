"""A TransformerLens model of any checkpoint: `pythia.load_hooked(RUN, member=M, revision="step64")`.

RUN is anything `pythia.run.open_run` opens (a run folder, a demo output, a member or step
folder, a Hub repo id whose revisions are in the local HF cache); the checkpoint's Hugging Face
folder is booted by TransformerLens' `TransformerBridge.boot_transformers` (TransformerLens 4:
its `HookedTransformer` is gone), which wraps transformers' `GPTNeoXForCausalLM` with eager
attention and hook points (`blocks.{l}.attn.hook_pattern`, `blocks.{l}.hook_resid_post`, ...),
its raw weights unprocessed: logits equal ours (to float32 rounding). Nothing is downloaded:
the folder it boots is local (a Hub repo's snapshot in the cache).

TransformerLens is an optional dependency: `pip install 'pythia-suite[interp]'`.
"""
from __future__ import annotations

from typing import Any

__all__ = ["MissingExtraError", "hooked_source", "load_hooked"]

EXTRA = "pip install 'pythia-suite[interp]'"


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def _bridge():
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as exc:
        raise MissingExtraError(f"pythia.load_hooked needs TransformerLens >= 4 ({exc}); install the interp extra: "
                                f"{EXTRA}") from None
    return TransformerBridge


def hooked_source(run: Any, member: str | None = None, revision: Any = None):
    """The checkpoint (`pythia.run.Checkpoint`) that `load_hooked` boots: `revision` ("stepN",
    N, "main"/None = the focused step of a step folder, else the member's last)."""
    from .run import open_run

    view = run if hasattr(run, "members") else open_run(run)
    m = view.member(member)
    if revision is None and view.focus_step is not None and m.name == view.focus_member:
        revision = view.focus_step
    return m.checkpoint(revision)


def load_hooked(run: Any, member: str | None = None, revision: Any = None, *, device: Any = "cpu",
                dtype: Any = None):
    """A TransformerLens `TransformerBridge` of checkpoint (member, revision) of `run` (a path,
    a Hub repo id or an opened RunView), in eval mode, float32 unless `dtype` says otherwise."""
    import torch

    bridge = _bridge()
    ck = hooked_source(run, member, revision)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = bridge.boot_transformers(str(ck.path), device=str(device), dtype=dtype or torch.float32)
    return model.eval()
