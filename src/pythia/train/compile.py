"""torch.compile of the training step, applied from outside the model.

As torchtitan does (torchtitan/models/llama3/infra/parallelize.py, `apply_compile`), each
transformer layer is compiled on its own, before DDP / FSDP2 wrap the model: the layers share
one graph (compiled once, whatever the depth), FSDP2's per-layer hooks stay outside the compiled
code, and DDP still sees each layer's gradients as soon as its backward ends, so the all-reduce
overlaps the backward. On CUDA the fused head + cross-entropy (`GPTNeoX.head_loss`) is compiled
apart too, which lets inductor fuse the softmax, its gradient and the casts around the head's
matmuls (on CPU it measured slower than eager: compile_head_default).

Compiled code is attached as instance attributes (`layer.forward`, `model.head_loss`), so
parameter names, state dicts and checkpoints are those of the eager model, and `undo()` (or the
`eager()` context, used for checkpoint-time analyses) puts the plain methods back.
`dynamic=False`: every input shape gets its own static graph, so a step's kernels never depend on
what ran before it (a resumed run continues bit-identically on CPU).
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

COMPILE_SETTINGS = ("auto", True, False)
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""torch.compile modes; "reduce-overhead" adds CUDA graphs (worth trying for small shapes)."""


def wants_compile(setting: bool | str, device: torch.device) -> bool:
    """train.compile: true / false, or "auto": on for CUDA, off on CPU (not faster there, and
    slow to compile: benchmarks/RESULTS.md, "Training step, compiled and eager")."""
    if setting == "auto":
        return torch.device(device).type == "cuda"
    return bool(setting)


def compile_head_default(device: torch.device) -> bool:
    """Whether the fused head + loss is compiled with the layers by default: on CUDA, where
    fusing its softmax and casts saves memory traffic. Not on CPU: there the head is three
    BLAS GEMMs over the vocabulary plus a few vectorised passes, and inductor's fused passes
    plus the copy that functionalisation puts before each in-place gradient accumulation
    (addmm_) made it ~10% slower than eager (benchmarks/bench_train_step.py --profile)."""
    return torch.device(device).type == "cuda"


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here (None when it can): dynamo does not
    support this Python, inductor's C++ compiler is missing (CPU) or Triton is (CUDA)."""
    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile does not support this Python version"
        if torch.device(device).type == "cuda":
            from torch.utils._triton import has_triton

            return None if has_triton() else "Triton is not installed"
        from torch._inductor import cpp_builder

        cpp_builder.get_cpp_compiler()  # runs `CXX --version`; raises when no compiler answers
    except Exception as exc:  # noqa: BLE001 -- any failure here means "cannot compile"
        return f"no C++ compiler for inductor ({describe(exc)})"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`, for one-line warnings."""
    return f"{type(exc).__name__}: {_first_line(exc)}"


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A RuntimeWarning shown once per process however many members hit it."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


@dataclass
class CompiledModel:
    """The compiled methods attached to a model; undo() restores the eager ones."""

    model: torch.nn.Module
    mode: str | None = None
    patched: list[tuple[torch.nn.Module, str, object]] = field(default_factory=list)

    def undo(self) -> None:
        for owner, name, _ in self.patched:
            owner.__dict__.pop(name, None)

    def redo(self) -> None:
        for owner, name, compiled in self.patched:
            setattr(owner, name, compiled)

    @contextlib.contextmanager
    def eager(self):
        """Run the plain model inside (checkpoint-time analyses: other shapes, no_grad,
        generation), without compiling graphs for them."""
        self.undo()
        try:
            yield
        finally:
            self.redo()


def apply_compile(model: torch.nn.Module, mode: str | None = None, head: bool = True) -> CompiledModel:
    """Compile each transformer layer of a GPTNeoX in place, and its fused head + loss unless
    head=False (on CPU the head's three vocabulary GEMMs dominate and inductor's version of the
    rest measured slower than eager: see compile_head_default)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    layers = getattr(getattr(model, "gpt_neox", None), "layers", None)
    if layers is None or not hasattr(model, "head_loss"):
        raise TypeError(f"apply_compile needs a pythia GPTNeoX (layers and head_loss), got {type(model).__name__}")
    _raise_recompile_limit(len(layers))
    compiled = CompiledModel(model, mode)
    options = dict(dynamic=False, fullgraph=True, mode=None if mode == "default" else mode)
    for layer in layers:
        compiled.patched.append((layer, "forward", torch.compile(layer.forward, **options)))
    if head:
        compiled.patched.append((model, "head_loss", torch.compile(model.head_loss, **options)))
    compiled.redo()
    return compiled


def _raise_recompile_limit(layers: int) -> None:
    """Several member shapes are trained in one process (a suite), each a graph of the same code:
    keep dynamo from falling back to eager after its default 8."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64, 2 * layers))
            break


def choose_mode(setting: bool | str, device: torch.device, mode: str | None) -> str | None:
    """The torch.compile mode to apply for train.compile = `setting`, or None (eager): off, or on
    where this torch cannot compile (then one warning per process)."""
    if not wants_compile(setting, device):
        return None
    why = compile_unavailable(device)
    if why is not None:
        warn_once(f"train.compile: {why}; training without torch.compile (same results, slower)")
        return None
    return mode


def warm_up(compiled: CompiledModel, step: Callable[[], None], agree_any: Callable[[bool], bool] = bool,
            label: str | None = None) -> CompiledModel | None:
    """Compile by running `step` once (a forward + backward of dummy rows at the training shape)
    before training; report the compile time once (printed when `label` is given). If it fails
    here (on any rank: `agree_any` ORs a flag over ranks), restore the eager model, warn once and
    return None, so training runs eagerly instead of crashing mid-run."""
    failure = None
    try:
        with Stopwatch() as watch:
            step()
    except Exception as exc:  # noqa: BLE001 -- whatever broke, the eager step is the fallback
        failure = exc
    if agree_any(failure is not None):
        compiled.undo()
        why = describe(failure) if failure is not None else "it failed on another rank"
        warn_once(f"train.compile: torch.compile failed ({why}); training without it (same results, slower)")
        return None
    if label is not None:
        took = f"{watch.compile:.1f} s compiling" if watch.compile is not None else "compiled"
        print(f"{label} torch.compile: {took} (first step {watch.wall:.1f} s)")
    return compiled


def compile_seconds() -> float | None:
    """Seconds dynamo + inductor have spent compiling in this process (None if torch no longer
    reports it); the trainer logs the difference across its warm-up step."""
    try:
        from torch._dynamo.utils import calculate_time_spent

        return float(calculate_time_spent().get("total_wall_time", 0.0))
    except Exception:  # noqa: BLE001 -- a private helper: its absence only loses the figure
        return None


class Stopwatch:
    """Wall time and compile time of a block (the compile time is None when unknown)."""

    def __enter__(self) -> Stopwatch:
        self.t0, self.c0 = time.perf_counter(), compile_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        c1 = compile_seconds()
        self.compile = None if self.c0 is None or c1 is None else max(c1 - self.c0, 0.0)


__all__ = ["COMPILE_MODES", "COMPILE_SETTINGS", "CompiledModel", "Stopwatch", "apply_compile", "choose_mode",
           "compile_head_default", "compile_seconds", "warm_up",
           "compile_unavailable", "describe", "wants_compile", "warn_once"]
