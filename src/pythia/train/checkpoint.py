"""Checkpoint directories: an HF model folder plus everything needed to resume exactly.

Layout of RUN/{member}/step{N}/ (written through pythia.io.atomic_dir, so a step folder
either exists complete or not at all; a kill mid-write leaves only a hidden .step{N}.*.tmp):

    config.json, model.safetensors, ...   HF directory (fp32 weights); above checkpoints.max_shard_size
                                          model-0000k-of-0000n.safetensors + model.safetensors.index.json
    training_state/optimizer.safetensors  AdamW moments by parameter name (one process or DDP):
                                          "{name}.exp_avg", "{name}.exp_avg_sq" (fp32), "{name}.step"
    training_state/optimizer/             the same state sharded as FSDP2 holds it, one file per rank
                                          (torch.distributed.checkpoint; loads on any number of ranks)
    training_state/gradients.safetensors  with checkpoints.gradients: the gradient of the update that made
                                          this step (its training batch's mean loss, unscaled, before
                                          clipping) for every weight matrix, fp32, by parameter name
    training_state/rng.safetensors        RNG states as uint8 tensors: torch_cpu, torch_cuda_{i},
                                          numpy_mt19937 (624 uint32 as bytes), python_mt (625 uint64 as bytes)
    training_state/state.json             scalars: step, consumed_samples, loss scaler, optimizer
                                          groups (names, weight decay, betas, eps), rng scalars, val loss,
                                          "optimizer_state": one of OPTIMIZER_FORMATS
    manifest.json                         {"format", "step", "weights_digest", "files": {relpath: {sha256, bytes}}}

The run-wide rules (step folder names, the manifest, the weights digest) are pythia.layout's;
this module writes and reads what training alone needs. Safetensors + JSON, except the sharded
optimizer state, whose torch.distributed.checkpoint `.metadata` is a pickle: it is read back by
the run that wrote it, and for study through pythia.train.optimizer_state's unpickler, which
builds only checkpoint metadata. `weights_digest`
hashes the model tensors (name, dtype, shape, bytes) so `pythia verify` can spot different
steps holding identical weights.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_dir
from ..layout import complete_checkpoints, model_files, parse_step, step_dir_name, weights_digest, write_manifest

OPTIMIZER_FORMATS = {
    "full": "training_state/optimizer.safetensors",
    "sharded": "training_state/optimizer/ (torch.distributed.checkpoint)",
    "empty": "no update applied yet: a fresh optimizer resumes exactly",
    "omitted": "left out by train.optimizer_state_every: weights only, not resumable",
}
STATE_FORMAT = "pythia-train-state/1"
GRADIENTS_FILE = "gradients.safetensors"
CRASH_ENV = "PYTHIA_TRAIN_CRASH_AT"
"""Test hook: "ckpt:N" kills the process (os._exit) half-way through writing step N;
"step:N" kills it right after update N, before any checkpoint of that step; "sigterm:N"
(or "sigterm:N@R", rank R only) sends the process a real SIGTERM right after update N."""


def crash_point(kind: str, step: int) -> None:
    """os._exit(137) (what SIGKILL looks like to the parent) or a SIGTERM when the env hook asks."""
    hook = os.environ.get(CRASH_ENV, "")
    if hook == f"{kind}:{step}":
        os._exit(137)
    if kind == "step" and hook.startswith("sigterm:"):
        at, _, rank = hook.removeprefix("sigterm:").partition("@")
        if at == str(step) and rank in ("", os.environ.get("RANK", "0")):
            os.kill(os.getpid(), signal.SIGTERM)


# -- RNG -------------------------------------------------------------------------------------


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG the loop could touch, as uint8 tensors plus JSON scalars."""
    tensors = {"torch_cpu": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state.clone()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy_mt19937"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.uint8).copy())
    version, mt, py_gauss = random.getstate()
    tensors["python_mt"] = torch.from_numpy(np.asarray(mt, dtype=np.uint64).view(np.uint8).copy())
    scalars = {"numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
               "python": {"version": version, "gauss": py_gauss}}
    return tensors, scalars


def restore_rng(tensors: dict[str, torch.Tensor], scalars: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    keys = tensors["numpy_mt19937"].numpy().view(np.uint32)
    n = scalars["numpy"]
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    mt = tuple(int(x) for x in tensors["python_mt"].numpy().view(np.uint64))
    p = scalars["python"]
    random.setstate((p["version"], mt, p["gauss"]))


# -- weights --------------------------------------------------------------------------------


def load_model_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    """The HF weights of a checkpoint as a name -> tensor dict (all top-level *.safetensors)."""
    files = model_files(step_dir)
    if not files:
        raise FileNotFoundError(f"{step_dir} has no *.safetensors model weights")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


# -- save / load -----------------------------------------------------------------------------


@dataclass
class TrainingState:
    """What a checkpoint holds besides the model weights."""

    step: int
    consumed_samples: int
    optimizer: dict | None
    """torch.distributed.checkpoint full optimizer state dict: {"state": {name: {...}}, "param_groups": [...]};
    None unless optimizer_format is "full" (param_groups alone for "sharded")."""
    scaler: dict
    rng_tensors: dict[str, torch.Tensor]
    rng_scalars: dict
    extra: dict
    optimizer_format: str = "full"
    """Where the optimizer state is: a key of OPTIMIZER_FORMATS."""
    gradients: dict[str, torch.Tensor] | None = None
    """checkpoints.gradients: the last update's gradients of the weight matrices, by name."""


def save_checkpoint(
    member_dir: Path,
    step: int,
    *,
    write_hf: Callable[[Path], str | dict[str, torch.Tensor]],
    state: TrainingState,
) -> Path:
    """Write RUN/{member}/step{N}/ atomically: HF files, training_state/, then manifest.json.

    write_hf writes the HF files (and, under FSDP, the sharded optimizer state: every rank
    writes into the same folder) and returns the weights digest, or the tensors it wrote
    (hashed here), so the manifest's weights_digest needs no read-back."""
    if state.optimizer_format not in OPTIMIZER_FORMATS:
        raise ValueError(f"unknown optimizer_format {state.optimizer_format!r}")
    target = Path(member_dir) / step_dir_name(step)
    with atomic_dir(target) as tmp:
        written = write_hf(tmp)
        digest = written if isinstance(written, str) else weights_digest(written)
        ts = tmp / "training_state"
        ts.mkdir(exist_ok=True)
        if state.optimizer_format == "full":
            _write_full_optimizer(state.optimizer, ts / "optimizer.safetensors")
        if state.gradients is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in state.gradients.items()}, str(ts / GRADIENTS_FILE),
                      metadata={"format": STATE_FORMAT})
        crash_point("ckpt", step)
        save_file({k: v.contiguous() for k, v in state.rng_tensors.items()}, str(ts / "rng.safetensors"),
                  metadata={"format": STATE_FORMAT})
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                  for g in (state.optimizer or {}).get("param_groups", [])]
        scalars = {
            "format": STATE_FORMAT,
            "step": state.step,
            "consumed_samples": state.consumed_samples,
            "loss_scaler": state.scaler,
            "optimizer": {"param_groups": groups},
            "optimizer_state": state.optimizer_format,
            "rng": state.rng_scalars,
            **state.extra,
        }
        (ts / "state.json").write_text(json.dumps(scalars, indent=2, sort_keys=True) + "\n")
        write_manifest(tmp, step, digest)
    return target


def _write_full_optimizer(optimizer: dict, path: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, s in optimizer["state"].items():
        for key, value in s.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{name}.{key}"] = value.detach().cpu().contiguous()
    save_file(tensors, str(path), metadata={"format": STATE_FORMAT})


def load_training_state(step_dir: Path) -> TrainingState:
    ts = Path(step_dir) / "training_state"
    scalars = json.loads((ts / "state.json").read_text())
    if scalars.get("format") != STATE_FORMAT:
        raise ValueError(f"{ts / 'state.json'}: unknown format {scalars.get('format')!r}, expected {STATE_FORMAT}")
    fmt = scalars.get("optimizer_state", "full")
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
              for g in scalars["optimizer"]["param_groups"]]
    optimizer = None
    if fmt == "full":
        per_param: dict[str, dict] = {}
        for key, value in load_file(str(ts / "optimizer.safetensors")).items():
            name, _, field_name = key.rpartition(".")
            per_param.setdefault(name, {})[field_name] = value
        optimizer = {"state": per_param, "param_groups": groups}
    extra = {k: v for k, v in scalars.items()
             if k not in ("format", "step", "consumed_samples", "loss_scaler", "optimizer", "optimizer_state", "rng")}
    return TrainingState(
        step=scalars["step"],
        consumed_samples=scalars["consumed_samples"],
        optimizer=optimizer,
        scaler=scalars["loss_scaler"],
        rng_tensors=load_file(str(ts / "rng.safetensors")),
        rng_scalars=scalars["rng"],
        extra=extra,
        optimizer_format=fmt,
    )


def load_gradients(step_dir: Path) -> dict[str, torch.Tensor] | None:
    """The training gradients a checkpoint keeps (checkpoints.gradients), None when it keeps none."""
    path = Path(step_dir) / "training_state" / GRADIENTS_FILE
    return load_file(str(path)) if path.is_file() else None


def optimizer_format(step_dir: Path) -> str | None:
    """The checkpoint's "optimizer_state" (a key of OPTIMIZER_FORMATS); None without state.json."""
    path = Path(step_dir) / "training_state" / "state.json"
    try:
        return json.loads(path.read_text()).get("optimizer_state", "full")
    except (OSError, ValueError, AttributeError):
        return None


def remove_preemption_checkpoints(member_dir: Path, schedule: list[int], below: int) -> list[int]:
    """Delete off-schedule checkpoints written on SIGTERM/SIGINT (state.json "preempted") at
    steps below `below`: once a later resumable checkpoint exists they are redundant, and the
    suite's members keep identical step lists. Returns the steps removed."""
    removed, keep = [], set(schedule)
    for step in complete_checkpoints(member_dir):
        step_dir = Path(member_dir) / step_dir_name(step)
        if step >= below or step in keep:
            continue
        try:
            preempted = json.loads((step_dir / "training_state" / "state.json").read_text()).get("preempted")
        except (OSError, ValueError, AttributeError):
            continue
        if preempted:
            shutil.rmtree(step_dir)
            removed.append(step)
    return removed


def recover_interrupted_writes(member_dir: Path) -> list[str]:
    """Clean up after a kill during atomic_dir: drop .step*.tmp, finish a half-done swap."""
    notes = []
    member_dir = Path(member_dir)
    if not member_dir.is_dir():
        return notes
    for p in sorted(member_dir.iterdir()):
        if not (p.is_dir() and p.name.startswith(".") and "step" in p.name):
            continue
        final = member_dir / p.name[1:-4] if p.name.endswith(".old") else None
        if final is not None and parse_step(final.name) is not None and not final.exists():
            os.replace(p, final)  # killed between atomic_dir's two renames: the old copy is whole
            notes.append(f"restored {final.name} from an interrupted replace")
        elif p.name.endswith((".tmp", ".old")):
            shutil.rmtree(p, ignore_errors=True)
            notes.append(f"removed incomplete checkpoint write {p.name}")
    return notes

