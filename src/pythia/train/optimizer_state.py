"""A checkpoint's saved AdamW state, read back for study, and what it says about the next update.

`SavedOptimizer(step_dir)` opens the optimizer state a checkpoint keeps (see checkpoint.py): the
single-file `training_state/optimizer.safetensors` of a one-process or DDP run, or the FSDP
shards under `training_state/optimizer/` (torch.distributed.checkpoint), which it reads in one
process with no process group, whatever number of ranks wrote them: every tensor is assembled
whole from the chunks the metadata lists. That metadata file is a pickle; it is read with an
unpickler that builds only DCP's own metadata classes, torch sizes, dtypes, layouts, paths and plain
containers,
so a tampered file fails instead of running code; the tensor data goes through
`torch.load(weights_only=True)` as DCP does.

`adam_statistics` computes, per weight matrix, with the checkpoint's own lr, betas, eps and the
parameter's AdamW step k (the number of updates it has had), from the bias-corrected moments
m^ = m / (1 - b1^k), v^ = v / (1 - b2^k):
- `update_ratio` = ||lr m^ / (sqrt(v^) + eps)|| / ||theta||: the size of the next Adam step
  relative to the weights, weight decay left out (torch.optim.AdamW applies exactly this step,
  plus theta * lr * weight_decay);
- `grad_snr` = mean over entries of m^2 / v^ (entries with v^ = 0, that never had a non-zero
  gradient, count as 0);
- `outlier_frac` = share of entries with |m^| > 4 sqrt(max(v^ - m^2, 0)): a mean gradient far
  outside its own spread (the outlier rule of OLMo-core's optimizer diagnostics).
Sums run in float64 over chunks of the flattened tensors (no float64 copy of a whole matrix).
"""
from __future__ import annotations

import inspect
import json
import math
import pickle
import warnings
from pathlib import Path

import torch

from .checkpoint import optimizer_format

OUTLIER_K = 4.0
MOMENTS = ("exp_avg", "exp_avg_sq", "step")
READABLE = ("full", "sharded")
"""Formats that hold moments; "empty" (saved before any update) and "omitted"
(train.optimizer_state_every) hold none."""
_CHUNK = 1 << 22

__all__ = ["OUTLIER_K", "OptimizerStateError", "READABLE", "SavedOptimizer", "adam_statistics", "has_moments"]


class OptimizerStateError(ValueError):
    """A checkpoint's optimizer state is missing, unreadable or does not fit its weights."""


def has_moments(step_dir: Path) -> str | None:
    """None when the checkpoint keeps AdamW moments, else why not (in words)."""
    fmt = optimizer_format(step_dir)
    if fmt is None:
        return "no training_state/state.json (not a checkpoint written by pythia's trainer)"
    return None if fmt in READABLE else _WHY_NOT.get(fmt, f"optimizer state {fmt!r}")


_WHY_NOT = {"empty": "saved before any update, no moments yet",
            "omitted": "left out by train.optimizer_state_every (weights only)"}


class SavedOptimizer:
    """The AdamW state of one checkpoint: hyper-parameters per parameter, moments on demand."""

    def __init__(self, step_dir: str | Path):
        self.step_dir = Path(step_dir)
        why = has_moments(self.step_dir)
        if why is not None:
            raise OptimizerStateError(f"{self.step_dir}: no optimizer state to read ({why})")
        state_path = self.step_dir / "training_state" / "state.json"
        try:
            scalars = json.loads(state_path.read_text(encoding="utf-8"))
            groups = scalars["optimizer"]["param_groups"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OptimizerStateError(f"{state_path}: unreadable optimizer groups ({exc})") from None
        self.format = scalars.get("optimizer_state", "full")
        self.groups: dict[str, dict] = {}
        for i, g in enumerate(groups):
            names = g.get("names") or g.get("params") or []
            try:
                hyper = {"lr": float(g["lr"]), "betas": tuple(float(b) for b in g["betas"]), "eps": float(g["eps"]),
                         "weight_decay": float(g.get("weight_decay", 0.0))}
            except (KeyError, TypeError, ValueError) as exc:
                raise OptimizerStateError(f"{state_path}: optimizer group {i} lacks lr/betas/eps ({exc})") from None
            for name in names:
                self.groups[str(name)] = hyper
        if not self.groups:
            raise OptimizerStateError(f"{state_path}: the optimizer groups name no parameters")
        self._reader = _FullReader(self.step_dir) if self.format == "full" else _ShardedReader(self.step_dir)

    def moments(self, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        """{name: {"exp_avg", "exp_avg_sq", "step"}} as saved (float32 CPU tensors)."""
        missing = [n for n in names if n not in self.groups]
        if missing:
            raise OptimizerStateError(f"{self.step_dir}: the optimizer state has no parameter(s) {missing[:3]}")
        return self._reader.read(names)


class _FullReader:
    def __init__(self, step_dir: Path):
        self.path = step_dir / "training_state" / "optimizer.safetensors"
        if not self.path.is_file():
            raise OptimizerStateError(f"{self.path} is missing (state.json says the state is in one file)")

    def read(self, names: list[str]) -> dict:
        from safetensors import safe_open

        out = {}
        with safe_open(str(self.path), framework="pt") as f:
            keys = set(f.keys())
            for name in names:
                absent = [f"{name}.{k}" for k in MOMENTS if f"{name}.{k}" not in keys]
                if absent:
                    raise OptimizerStateError(f"{self.path} lacks {absent[0]}")
                out[name] = {k: f.get_tensor(f"{name}.{k}") for k in MOMENTS}
        return out


class _SafeMetadata(pickle.Unpickler):
    """Builds only what a torch.distributed.checkpoint `.metadata` holds (see module doc)."""

    _BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "int", "float", "str", "bytes", "bool", "object"}
    _ALSO = {("collections", "OrderedDict"), ("copyreg", "_reconstructor"), ("torch", "Size"),
             ("torch.serialization", "_get_layout"),  # a layout by its name (torch.strided)
             ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
             ("pathlib", "PureWindowsPath")}  # the checkpoint_id the writer recorded

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in self._BUILTINS:
            return super().find_class(module, name)
        if (module, name) in self._ALSO:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format)):
            return getattr(torch, name)
        if module.startswith("torch.distributed.checkpoint."):
            obj = super().find_class(module, name)
            if inspect.isclass(obj):
                return obj
        raise pickle.UnpicklingError(f"{module}.{name} is not part of checkpoint metadata")


class _ShardedReader:
    def __init__(self, step_dir: Path):
        self.path = step_dir / "training_state" / "optimizer"
        meta = self.path / ".metadata"
        if not meta.is_file():
            raise OptimizerStateError(f"{meta} is missing: the sharded optimizer state is incomplete")
        try:
            with open(meta, "rb") as f:
                self.metadata = _SafeMetadata(f).load()
            self.tensors = self.metadata.state_dict_metadata
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
            raise OptimizerStateError(f"{meta}: unreadable checkpoint metadata ({exc})") from None
        listed = {info.relative_path for info in (self.metadata.storage_data or {}).values()}
        absent = sorted(p for p in listed if not (self.path / p).is_file())
        if absent:
            raise OptimizerStateError(f"{self.path}: shard file(s) {', '.join(absent)} listed in .metadata are missing "
                                      f"(the state was written by {len(listed)} rank(s))")

    def read(self, names: list[str]) -> dict:
        import torch.distributed.checkpoint as dcp

        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        state: dict = {}
        for name in names:
            entry = {}
            for k in MOMENTS:
                md = self.tensors.get(f"optimizer.state.{name}.{k}")
                if not isinstance(md, TensorStorageMetadata):
                    raise OptimizerStateError(f"{self.path}: no tensor optimizer.state.{name}.{k} in the sharded state")
                entry[k] = torch.empty(tuple(md.size), dtype=md.properties.dtype)
            state[name] = entry
        reader = _MetadataReader(self.path, self.metadata)
        try:
            with warnings.catch_warnings():  # "torch.distributed is disabled ... a single process": as meant
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
                dcp.load({"optimizer": {"state": state}}, storage_reader=reader, no_dist=True)
        except Exception as exc:  # noqa: BLE001 - DCP raises its own CheckpointException with a traceback inside
            raise OptimizerStateError(f"{self.path}: reading the sharded optimizer state failed ({exc})") from None
        return state


def _MetadataReader(path: Path, metadata):
    """DCP's FileSystemReader, given the metadata already read safely (its own read_metadata unpickles)."""
    from torch.distributed.checkpoint import FileSystemReader

    class Reader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            return metadata

    return Reader(str(path))


def adam_statistics(param: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: float, *, lr: float,
                    betas: tuple[float, float], eps: float, k: float = OUTLIER_K) -> dict[str, float]:
    """update_ratio, grad_snr and outlier_frac of one parameter (see the module doc)."""
    if param.shape != exp_avg.shape or param.shape != exp_avg_sq.shape:
        raise OptimizerStateError(f"moments of shape {tuple(exp_avg.shape)} / {tuple(exp_avg_sq.shape)} do not fit "
                                  f"the parameter's {tuple(param.shape)}")
    step = int(round(float(step)))
    if step < 1:
        return {}
    bc1, bc2 = 1.0 - betas[0] ** step, 1.0 - betas[1] ** step
    theta, m_all, v_all = param.detach().reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1)
    update_sq = theta_sq = snr = 0.0
    outliers = 0
    for start in range(0, theta.numel(), _CHUNK):
        sl = slice(start, start + _CHUNK)
        m = m_all[sl].double() / bc1
        v = v_all[sl].double() / bc2
        update_sq += float(((lr * m) / (v.sqrt() + eps)).square().sum())
        theta_sq += float(theta[sl].double().square().sum())
        snr += float(torch.where(v > 0, m.square() / torch.where(v > 0, v, 1.0), 0.0).sum())
        outliers += int((m.abs() > k * (v - m.square()).clamp_min(0.0).sqrt()).sum())
    n = theta.numel()
    return {"update_ratio": math.sqrt(update_sq) / math.sqrt(theta_sq) if theta_sq > 0 else math.nan,
            "grad_snr": snr / n, "outlier_frac": outliers / n}
