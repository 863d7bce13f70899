"""Disk space: what a run's checkpoints will take, and a clear error when the disk runs out.

Sizes are computed, not guessed: a safetensors file is an 8-byte length, a JSON header
(name -> dtype, shape, data_offsets) padded to 8 bytes, then the raw tensor bytes
(https://github.com/huggingface/safetensors#format), so a model's file size follows from the
names and shapes of its state dict; building the model on the `meta` device gives those
without allocating anything. The optimizer file holds AdamW's exp_avg, exp_avg_sq (fp32, one
per parameter) and step (fp32 scalar); the JSON files are small and estimated.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..io import free_bytes, human_bytes

_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
           torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
# Files whose size depends on neither the model nor the tokenizer much: state.json's fixed part,
# manifest.json per listed file, tokenizer_config.json + special_tokens_map.json.
_STATE_JSON_FIXED, _MANIFEST_FIXED, _MANIFEST_PER_FILE, _TOKENIZER_SIDE_FILES = 1700, 140, 150, 420


def safetensors_bytes(tensors: dict[str, tuple[tuple[int, ...], torch.dtype]], metadata: dict | None = None
                      ) -> int:
    """Size of the safetensors file holding tensors {name: (shape, dtype)} (within a few bytes)."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, (shape, dtype) in sorted(tensors.items()):
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": _DTYPES.get(dtype, "F32"), "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = len(json.dumps(header, separators=(",", ":")).encode())
    return 8 + text + (-text) % 8 + offset


def _shapes(named: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in named.items()}


@dataclass(frozen=True)
class CheckpointSize:
    """Bytes of one step{N}/ folder, split the way a weights-only checkpoint would drop them."""

    weights: int
    """model.safetensors + config.json + tokenizer files + manifest.json"""
    optimizer: int
    """training_state/optimizer.safetensors (AdamW moments)"""
    state: int
    """training_state/rng.safetensors + state.json"""

    @property
    def full(self) -> int:
        return self.weights + self.optimizer + self.state

    @property
    def weights_only(self) -> int:
        return self.weights


def checkpoint_size(model: torch.nn.Module, tokenizer_json: str | None = None) -> CheckpointSize:
    """Bytes a checkpoint of `model` (real or on the meta device, unwrapped) takes on disk."""
    from ..hf import to_hf_config
    from .checkpoint import STATE_FORMAT, capture_rng

    state = model.state_dict()
    model_file = safetensors_bytes(_shapes(state), {"format": "pt"})
    config = len(json.dumps(to_hf_config(model.config, torch.float32), indent=2)) + 1
    files = 5  # listed in manifest.json: config, model, optimizer, rng, state.json (+3 with a tokenizer)
    tokenizer = 0
    if tokenizer_json is not None:
        tokenizer, files = len(tokenizer_json.encode()) + _TOKENIZER_SIDE_FILES, files + 3
    params = dict(model.named_parameters())
    moments = {}
    for name, p in params.items():
        moments[f"{name}.exp_avg"] = moments[f"{name}.exp_avg_sq"] = (tuple(p.shape), torch.float32)
        moments[f"{name}.step"] = ((), torch.float32)
    optimizer = safetensors_bytes(moments, {"format": STATE_FORMAT})
    rng = safetensors_bytes(_shapes(capture_rng()[0]), {"format": STATE_FORMAT})
    state_json = _STATE_JSON_FIXED + 2 * sum(len(n) + 12 for n in params)  # names listed twice per group
    return CheckpointSize(weights=model_file + config + tokenizer + _MANIFEST_FIXED + files * _MANIFEST_PER_FILE,
                          optimizer=optimizer, state=rng + state_json)


def meta_model(config) -> torch.nn.Module:
    """The model of `config` with shapes only (no memory), for size estimates."""
    from ..model import GPTNeoX

    return GPTNeoX(config, device=torch.device("meta"))


class DiskFullError(OSError):
    """The disk (or quota) ran out while writing a checkpoint; str() says where, how much, what next."""

    def __init__(self, message: str, err: int = errno.ENOSPC):
        super().__init__(err, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def full_disk_errno(exc: BaseException) -> int | None:
    """ENOSPC or EDQUOT if `exc` reports a full disk or quota, else None. safetensors raises its own
    SafetensorError ("I/O error: No space left on device (os error 28)"), not an OSError."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in _FULL_DISK else None
    match = re.search(r"\(os error (\d+)\)", str(exc))
    return int(match.group(1)) if match and int(match.group(1)) in _FULL_DISK else None


def tokenizer_text(tokenizer) -> str | None:
    """The tokenizer.json text a checkpoint will carry (None: no tokenizer)."""
    from ..hf import tokenizer_json

    return None if tokenizer is None else tokenizer_json(tokenizer)


@contextlib.contextmanager
def explain_disk_full(member_dir: Path, step: int, model: torch.nn.Module, tokenizer=None) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT while writing step{N} of `model` into a DiskFullError saying what to do."""
    try:
        yield
    except Exception as exc:
        err = full_disk_errno(exc)
        if err is None or isinstance(exc, DiskFullError):
            raise
        from .checkpoint import complete_checkpoints

        size, free = checkpoint_size(model, tokenizer_text(tokenizer)), free_bytes(member_dir)
        done = complete_checkpoints(member_dir)
        what = "no space left on device" if err == errno.ENOSPC else "disk quota exceeded"
        resume = f"it resumes from step{done[-1]}" if done else "it starts this member again"
        raise DiskFullError(
            f"{what} while writing checkpoint step{step} into {member_dir}: a checkpoint needs about "
            f"{human_bytes(size.full)} (weights {human_bytes(size.weights)}, optimizer state {human_bytes(size.optimizer)}); "
            f"{human_bytes(free) if free is not None else 'an unknown amount'} is free there. Nothing was left "
            f"half-written (the partial step{step} was removed). Free some space (or move the run folder to a "
            f"bigger disk and pass --out) and re-run the same command: {resume}. "
            "`pythia train SPEC --dry-run` prints the disk the whole run takes.", err) from exc


def run_disk_lines(members: list, num_checkpoints: int, tokenizer_json: str | None, output: str,
                   num_with_state: int | None = None, forks: list | tuple = ()) -> list[str]:
    """The --dry-run lines: per member, checkpoints x size as scheduled (optimizer state on
    `num_with_state` of them, train.optimizer_state_every), and with / without state everywhere.
    `forks`: (member, checkpoints, with state) of each fork, counting only the checkpoints it
    writes (its first is a hard link of its base's)."""
    kept = num_checkpoints if num_with_state is None else num_with_state
    lines = [f"# disk (computed from the shapes): optimizer state on {kept} of {num_checkpoints} checkpoints"]
    total = total_full = total_weights = 0
    sizes: dict = {}  # seeds of one shape share a size
    for m, n, k in [(m, num_checkpoints, kept) for m in members] + list(forks):
        if m.config not in sizes:
            sizes[m.config] = checkpoint_size(meta_model(m.config), tokenizer_json)
        size = sizes[m.config]
        planned = k * size.full + (n - k) * size.weights_only
        total += planned
        total_full += n * size.full
        total_weights += n * size.weights_only
        lines.append(f"{m.name:<28} {human_bytes(planned)} ({k} x {human_bytes(size.full)} with optimizer state"
                     f" + {n - k} x {human_bytes(size.weights_only)} weights only)")
    free = free_bytes(output)
    lines.append(f"# whole run: {human_bytes(total)} as scheduled; {human_bytes(total_full)} with optimizer state everywhere, "
                 f"{human_bytes(total_weights)} weights only; free at {output}: {human_bytes(free) if free is not None else 'unknown'}")
    return lines
