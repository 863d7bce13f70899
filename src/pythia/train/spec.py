"""The suite spec: one YAML file (or the same structure as a dict) describing a whole suite.

`SuiteSpec.from_yaml(path)` / `SuiteSpec.from_dict(d)` validate everything up front; an error
names the field (`train.iters`, `members[1].hidden_size`) and says what is allowed, and unknown
keys are errors that list the allowed keys. The annotated schema lives in examples/suite.yaml.
Relative paths in a YAML file are taken relative to that file's folder (in a dict: to the
current directory) and stored absolute.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import PRECISIONS, ModelConfig, custom_config, model_config, padded_vocab_size
from .schedule import LR_SCHEDULES, checkpoint_steps, warmup_iters_for

PARALLEL_MODES = ("ddp", "fsdp")
DEVICES = ("auto", "cpu", "cuda")
# ModelConfig fields a custom member may set besides its shape.
_CUSTOM_MODEL_KEYS = (
    "max_seq_len", "rotary_pct", "rotary_base", "layer_norm_eps", "gelu",
    "init_method", "output_init_method", "init_std",
)


class SpecError(ValueError):
    """A suite spec field is missing, unknown or out of range; the message names the field."""


# ---------------------------------------------------------------------------------------------
# small validators: each takes the dotted field name so every message can point at it


def _check_keys(d: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict:
    if not isinstance(d, dict):
        raise SpecError(f"{where or 'spec'} must be a mapping with keys {', '.join(required + optional)}; got {type(d).__name__}")
    allowed = required + optional
    for key in d:
        if key not in allowed:
            raise SpecError(f"unknown key {_join(where, key)!r}{_did_you_mean(key, allowed)}; "
                            f"allowed keys{' in ' + where if where else ''}: {', '.join(allowed)}")
    for key in required:
        if key not in d or d[key] is None:
            raise SpecError(f"missing required field {_join(where, key)!r}")
    return d


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _float(value: Any, name: str, minimum: float = 0.0, maximum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = ""
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                float(value)
                mantissa, _, exponent = value.strip().lower().partition("e")
                if exponent:  # YAML 1.1 floats need a dot in the mantissa and a sign in the exponent
                    mantissa = mantissa if "." in mantissa else mantissa + ".0"
                    exponent = exponent if exponent[0] in "+-" else "+" + exponent
                    hint = f" (YAML reads {value} as a string; write {mantissa}e{exponent})"
        raise SpecError(f"{name} must be a number, got {value!r}{hint}")
    value = float(value)
    if positive and value <= 0:
        raise SpecError(f"{name} must be > 0, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise SpecError(f"{name} must be {rng}, got {value!r}")
    return value


def _did_you_mean(value: Any, allowed) -> str:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(f"{name} must be one of {', '.join(allowed)}; got {value!r}{_did_you_mean(value, allowed)}")
    return value


def _micro_batch(value: Any) -> int | str | None:
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        raise SpecError(f"train.micro_batch must be an integer >= 1 or auto, got {value!r}{_did_you_mean(value, ('auto',))}")
    return _int(value, "train.micro_batch")


def _compile_setting(value: Any) -> bool | str:
    if isinstance(value, bool) or value == "auto":
        return value
    raise SpecError(f"train.compile must be true, false or auto, got {value!r}")


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{name} must be true or false, got {value!r}")
    return value


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _size_bytes(value: Any, name: str) -> int:
    """A byte count: an integer, or a number with a unit as transformers writes it ("2GB", "500MB")."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        number = text.rstrip("KMGTIB")
        unit = text[len(number):]
        try:
            n = int(float(number) * _SIZE_UNITS[unit])
        except (ValueError, KeyError, OverflowError):
            n = 0
        if n >= 1:
            return n
    raise SpecError(f"{name} must be a size such as 2GB, 500MB or a number of bytes, got {value!r}")


def _path(value: Any, name: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise SpecError(f"{name} must be a path string, got {value!r}")
    return str(Path(value).expanduser().absolute())


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    train: str
    """Prefix of the tokenized training set (PREFIX.bin / PREFIX.idx)."""
    seq_len: int
    """Tokens per sample fed to the model; each sample has seq_len + 1 tokens."""
    seed: int | str = 1234
    """Data-order seed shared by all members, or "per_member" (data seed = member seed, PolyPythias)."""
    valid: str | None = None
    """Prefix of held-out data for the checkpoint-time validation loss; None = no validation."""
    order_dir: str | None = None
    """Where the GPT-NeoX index .npy files are cached (default RUN/order)."""

    @classmethod
    def from_dict(cls, d: Any) -> DataSpec:
        _check_keys(d, "data", ("train", "seq_len"), ("seed", "valid", "order_dir"))
        seed = d.get("seed", 1234)
        if isinstance(seed, str) and seed != "per_member":
            raise SpecError(f"data.seed must be an integer >= 0 or per_member, got {seed!r}"
                            f"{_did_you_mean(seed, ('per_member',))}")
        if seed != "per_member":
            seed = _int(seed, "data.seed", minimum=0)
        return cls(
            train=_path(d["train"], "data.train"),
            seq_len=_int(d["seq_len"], "data.seq_len"),
            seed=seed,
            valid=_path(d["valid"], "data.valid") if d.get("valid") is not None else None,
            order_dir=_path(d["order_dir"], "data.order_dir") if d.get("order_dir") is not None else None,
        )


@dataclass(frozen=True, kw_only=True)
class LossScaleSpec:
    initial_power: int = 12
    window: int = 1000
    hysteresis: int = 2
    min_scale: float = 1.0

    @classmethod
    def from_dict(cls, d: Any) -> LossScaleSpec:
        _check_keys(d, "train.loss_scale", (), ("initial_power", "window", "hysteresis", "min_scale"))
        return cls(
            initial_power=_int(d.get("initial_power", 12), "train.loss_scale.initial_power", minimum=0),
            window=_int(d.get("window", 1000), "train.loss_scale.window"),
            hysteresis=_int(d.get("hysteresis", 2), "train.loss_scale.hysteresis"),
            min_scale=_float(d.get("min_scale", 1.0), "train.loss_scale.min_scale", minimum=1e-30),
        )


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    iters: int
    global_batch: int
    micro_batch: int | str | None = None
    """Sequences per rank per forward pass; None = global_batch / data-parallel size; "auto" = the
    largest that fits the device (pythia.train.micro_batch), same global batch and data order."""
    compile: bool | str = "auto"
    """torch.compile the layers and the fused head + loss (pythia.train.compile); "auto": on CUDA only."""
    precision: str = "fp32"
    lr_schedule: str = "neox"
    lr: float | None = None
    """Peak lr for every member; None = each named size's recipe (custom: 1e-3)."""
    min_lr: float | None = None
    """None = the recipe's min_lr, or 0.1 x lr when lr is given here."""
    warmup_fraction: float = 0.01
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    loss_scale: LossScaleSpec = field(default_factory=LossScaleSpec)
    parallel: str = "ddp"
    device: str = "auto"
    optimizer_state_every: int = 1
    """Keep the optimizer state (2 fp32 moments per parameter) on every k-th checkpoint of the
    schedule and the last; the others hold weights only. Resume uses the newest that has it."""

    _KEYS = ("micro_batch", "compile", "precision", "lr_schedule", "lr", "min_lr", "warmup_fraction", "weight_decay",
             "grad_clip", "adam_betas", "adam_eps", "loss_scale", "parallel", "device", "optimizer_state_every")

    @classmethod
    def from_dict(cls, d: Any) -> TrainSpec:
        _check_keys(d, "train", ("iters", "global_batch"), cls._KEYS)
        betas = d.get("adam_betas", (0.9, 0.95))
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise SpecError(f"train.adam_betas must be a list of two numbers in [0, 1), got {betas!r}")
        spec = cls(
            iters=_int(d["iters"], "train.iters"),
            global_batch=_int(d["global_batch"], "train.global_batch"),
            micro_batch=_micro_batch(d.get("micro_batch")),
            compile=_compile_setting(d.get("compile", "auto")),
            precision=_choice(d.get("precision", "fp32"), "train.precision", PRECISIONS),
            lr_schedule=_choice(d.get("lr_schedule", "neox"), "train.lr_schedule", LR_SCHEDULES),
            lr=_float(d["lr"], "train.lr", positive=True) if d.get("lr") is not None else None,
            min_lr=_float(d["min_lr"], "train.min_lr", minimum=0.0) if d.get("min_lr") is not None else None,
            warmup_fraction=_float(d.get("warmup_fraction", 0.01), "train.warmup_fraction", 0.0, 1.0),
            weight_decay=_float(d.get("weight_decay", 0.1), "train.weight_decay"),
            grad_clip=_float(d.get("grad_clip", 1.0), "train.grad_clip"),
            adam_betas=tuple(_float(b, f"train.adam_betas[{i}]", 0.0, 0.999999) for i, b in enumerate(betas)),
            adam_eps=_float(d.get("adam_eps", 1e-8), "train.adam_eps"),
            loss_scale=LossScaleSpec.from_dict(d.get("loss_scale") or {}),
            parallel=_choice(d.get("parallel", "ddp"), "train.parallel", PARALLEL_MODES),
            device=_choice(d.get("device", "auto"), "train.device", DEVICES),
            optimizer_state_every=_int(d.get("optimizer_state_every", 1), "train.optimizer_state_every"),
        )
        if isinstance(spec.micro_batch, int) and spec.global_batch % spec.micro_batch:
            raise SpecError(
                f"train.global_batch ({spec.global_batch}) must be a multiple of train.micro_batch ({spec.micro_batch})"
            )
        return spec


@dataclass(frozen=True, kw_only=True)
class CheckpointSpec:
    interval: int
    """Save every `interval` steps (Pythia: 1000), plus the final step."""
    log_spaced: bool = True
    """Also save step 0 and 1, 2, 4, ... below the interval (Pythia's early checkpoints)."""
    max_shard_size: int | str = "2GB"
    """HF weights above this go to model-0000k-of-0000n.safetensors + an index (bytes or "500MB", "2GB")."""
    gradients: bool = False
    """Also keep, in each scheduled checkpoint, the gradient of the update that made it (its training
    batch, which only training sees) for every weight matrix (fp32: as much again as those weights)."""

    @classmethod
    def from_dict(cls, d: Any) -> CheckpointSpec:
        _check_keys(d, "checkpoints", ("interval",), ("log_spaced", "max_shard_size", "gradients"))
        size = d.get("max_shard_size", "2GB")
        _size_bytes(size, "checkpoints.max_shard_size")
        return cls(
            interval=_int(d["interval"], "checkpoints.interval"),
            log_spaced=_bool(d.get("log_spaced", True), "checkpoints.log_spaced"),
            max_shard_size=size,
            gradients=_bool(d.get("gradients", False), "checkpoints.gradients"),
        )

    @property
    def max_shard_bytes(self) -> int:
        return _size_bytes(self.max_shard_size, "checkpoints.max_shard_size")


@dataclass(frozen=True, kw_only=True)
class MemberSpec:
    """One model shape: a named Pythia size, or a custom shape with its own name."""

    name: str
    size: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    vocab_size: int | None = None
    """Custom shapes only; None = padded vocab of the dataset (its manifest/tokenizer, else max id + 1)."""
    lr: float | None = None
    min_lr: float | None = None
    model: dict = field(default_factory=dict)
    """Extra ModelConfig fields for custom shapes (gelu, rotary_pct, init_method, ...)."""

    @classmethod
    def from_dict(cls, d: Any, where: str) -> MemberSpec:
        if isinstance(d, str):
            d = {"size": d}
        _check_keys(d, where, (), ("size", "name", "num_layers", "hidden_size", "num_heads", "vocab_size",
                                   "lr", "min_lr") + _CUSTOM_MODEL_KEYS)
        lr = _float(d["lr"], f"{where}.lr", positive=True) if d.get("lr") is not None else None
        min_lr = _float(d["min_lr"], f"{where}.min_lr") if d.get("min_lr") is not None else None
        if d.get("size") is not None:
            shape_keys = [k for k in ("num_layers", "hidden_size", "num_heads", "vocab_size") + _CUSTOM_MODEL_KEYS if k in d]
            if shape_keys:
                raise SpecError(f"{where}: a named size ({d['size']!r}) cannot also set {', '.join(shape_keys)}; "
                                "use a custom member (name + num_layers/hidden_size/num_heads) instead")
            try:
                config = model_config(str(d["size"]))
            except ValueError as exc:
                raise SpecError(f"{where}.size: {exc}") from None
            return cls(name=str(d.get("name") or config.name), size=config.name, lr=lr, min_lr=min_lr)
        for key in ("name", "num_layers", "hidden_size", "num_heads"):
            if d.get(key) is None:
                raise SpecError(f"{where}: missing {where}.{key}; a member is either {{size: pythia-NNm}} or a custom "
                                "shape {name, num_layers, hidden_size, num_heads[, vocab_size]}")
        name = str(d["name"])
        if not name or "/" in name or name.startswith("."):
            raise SpecError(f"{where}.name must be a plain folder name, got {name!r}")
        hidden, heads = _int(d["hidden_size"], f"{where}.hidden_size"), _int(d["num_heads"], f"{where}.num_heads")
        if hidden % heads:
            raise SpecError(f"{where}: hidden_size {hidden} must be divisible by num_heads {heads}")
        return cls(
            name=name,
            num_layers=_int(d["num_layers"], f"{where}.num_layers"),
            hidden_size=hidden,
            num_heads=heads,
            vocab_size=_int(d["vocab_size"], f"{where}.vocab_size") if d.get("vocab_size") is not None else None,
            lr=lr,
            min_lr=min_lr,
            model={k: d[k] for k in _CUSTOM_MODEL_KEYS if k in d},
        )

    def to_dict(self) -> dict:
        if self.size is not None:
            out = {"size": self.size}
            if self.name != self.size:
                out["name"] = self.name
        else:
            out = {"name": self.name, "num_layers": self.num_layers, "hidden_size": self.hidden_size,
                   "num_heads": self.num_heads, **self.model}
            if self.vocab_size is not None:
                out["vocab_size"] = self.vocab_size
        for key in ("lr", "min_lr"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def member_name(shape: str, seed: int) -> str:
    """The one place a member's folder name is made: `{shape name}-seed{seed}`."""
    return f"{shape}-seed{seed}"


@dataclass(frozen=True, kw_only=True)
class MemberKey:
    """A member's identity without its ModelConfig (which may need the dataset's vocabulary)."""

    name: str
    shape: str
    seed: int
    data_seed: int


@dataclass(frozen=True, kw_only=True)
class Member:
    """One trained model of the suite: a shape x an init seed, resolved to a ModelConfig."""

    name: str
    """Folder name under the run: `{shape name}-seed{seed}`."""
    config: ModelConfig
    seed: int
    """Init seed (torch.manual_seed before construction)."""
    data_seed: int
    lr: float
    min_lr: float


_PLAIN_NAME = "a plain name (letters, digits, . _ -; no / or +)"


# gpt-neox@df1bdca0 (branch `intervention`), megatron/training.py `_get_batch`: masculine ->
# feminine token ids of the GPT-NeoX-20B tokenizer. Kept as the strings they decode to, so the
# preset is checked against (and works with) whatever tokenizer the dataset has; with the 20B
# tokenizer they are ids 754->1500, 3032->4058, 8389->10759, 1328->2993, 521->617, 344->703,
# 779->617, 8701->379, 13243->379, 248->6689. " himself" and " Him" were not mapped. The bare
# "he", "his", "him" tokens also occur inside longer words (e.g. "t"+"he"): mapped all the same.
PRESETS: dict[str, tuple[tuple[str, str], ...]] = {
    "pythia_pronouns": (
        (" He", " She"), (" His", " Her"), ("His", "Her"), ("He", "She"), (" his", " her"),
        (" he", " she"), (" him", " her"), ("his", "her"), ("him", "her"), ("he", "she"),
    ),
}


def _plain_name(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or value.startswith(".") or any(c in value for c in "/+\\ "):
        raise SpecError(f"{name} must be {_PLAIN_NAME}, got {value!r}")
    return value


def _token(value: Any, name: str) -> str | int:
    """One side of a token_map pair: a string (checked to be one token once the tokenizer is
    known) or a token id."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise SpecError(f"{name} must be a non-empty string (one token of the dataset's tokenizer) or a token id, "
                        f"got {value!r}")
    if isinstance(value, int) and value < 0:
        raise SpecError(f"{name} must be a token id >= 0, got {value}")
    return value


def _token_map(value: Any, where: str) -> str | tuple[tuple[str | int, str | int], ...]:
    """A preset name, a mapping {source: target} or a list of [source, target] pairs."""
    if isinstance(value, str):
        if value not in PRESETS:
            raise SpecError(f"{where} names no preset: {value!r}{_did_you_mean(value, PRESETS)}; presets: "
                            f"{', '.join(PRESETS)} (or give pairs: {{source: target}} or [[source, target], ...])")
        return value
    if isinstance(value, dict):
        value = [[k, v] for k, v in value.items()]
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where} must be a preset ({', '.join(PRESETS)}), a mapping {{source: target}} or a "
                        f"non-empty list of [source, target] pairs, got {value!r}")
    pairs = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise SpecError(f"{where}[{i}] must be a [source, target] pair, got {pair!r}")
        pairs.append((_token(pair[0], f"{where}[{i}][0]"), _token(pair[1], f"{where}[{i}][1]")))
    return tuple(pairs)


def _function_ref(value: Any, name: str) -> str:
    """`module:function` or `path/to/file.py:function` (the path made absolute)."""
    module, sep, func = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not module or not all(part.isidentifier() for part in func.split(".")):
        raise SpecError(f"{name} must be 'module:function' or 'path/to/file.py:function', got {value!r}")
    if module.endswith(".py"):
        module = _path(module, name)
    elif not all(part.isidentifier() for part in module.split(".")):
        raise SpecError(f"{name}: {module!r} is neither a dotted module name nor a .py file")
    return f"{module}:{func}"


@dataclass(frozen=True, kw_only=True)
class InterventionSpec:
    """A data intervention: fork `members` at checkpoint `from_step` and train the forks on
    batches passed through one transform from then on (pythia.train.intervention)."""

    name: str
    """The fork of member M is the member `M+name` (its folder, results, CLI name)."""
    members: tuple[str, ...]
    from_step: int
    token_map: str | tuple[tuple[str | int, str | int], ...] | None = None
    """A preset name or (source, target) pairs: strings of one token each, or token ids."""
    function: str | None = None
    """`module:function` (or `file.py:function`): (B, S+1) int64 batch -> same shape and dtype."""

    _KEYS = ("name", "members", "from_step", "token_map", "function")

    @classmethod
    def from_dict(cls, d: Any, where: str) -> InterventionSpec:
        _check_keys(d, where, ("name", "members", "from_step"), ("token_map", "function"))
        members = d["members"]
        members = [members] if isinstance(members, str) else members
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise SpecError(f"{where}.members must be a member name or a non-empty list of them, got {d['members']!r}")
        if len(set(members)) != len(members):
            raise SpecError(f"{where}.members lists a member twice: {members}")
        given = [k for k in ("token_map", "function") if d.get(k) is not None]
        if len(given) != 1:
            raise SpecError(f"{where}: give exactly one transform, token_map or function (got "
                            f"{', '.join(given) or 'neither'})")
        return cls(
            name=_plain_name(d["name"], f"{where}.name"),
            members=tuple(members),
            from_step=_int(d["from_step"], f"{where}.from_step", minimum=0),
            token_map=_token_map(d["token_map"], f"{where}.token_map") if "token_map" in given else None,
            function=_function_ref(d["function"], f"{where}.function") if "function" in given else None,
        )

    def to_dict(self) -> dict:
        out = {"name": self.name, "members": list(self.members), "from_step": self.from_step}
        if self.token_map is not None:
            out["token_map"] = self.token_map if isinstance(self.token_map, str) else [list(p) for p in self.token_map]
        else:
            out["function"] = self.function
        return out

    def fork_name(self, member: str) -> str:
        """The one place a fork's name is made: `{member}+{intervention name}`."""
        return f"{member}+{self.name}"


@dataclass(frozen=True, kw_only=True)
class SuiteSpec:
    name: str
    data: DataSpec
    train: TrainSpec
    checkpoints: CheckpointSpec
    members: tuple[MemberSpec, ...]
    seeds: tuple[int, ...] = (1234,)
    output: str
    eval_samples: int = 32
    """Validation sequences (the first N windows of the valid set, in file order)."""
    tensorboard: bool = False
    analyses: tuple[str, ...] | None = None
    """Per-checkpoint analyses run at checkpoint time; None = ["val_loss"] when data.valid is set."""
    interventions: tuple[InterventionSpec, ...] = ()
    """Forks of members trained on transformed batches from a checkpoint on (trained after the members)."""
    source: str | None = field(default=None, compare=False)
    """The YAML file it was read from (named in later errors); not part of the spec."""

    _TOP = ("name", "data", "train", "checkpoints", "members", "output")
    _OPTIONAL = ("seeds", "eval", "tensorboard", "analyses", "interventions")

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any) -> SuiteSpec:
        _check_keys(d, "", cls._TOP, cls._OPTIONAL)
        name = d["name"]
        if not isinstance(name, str) or not name:
            raise SpecError(f"name must be a non-empty string, got {name!r}")
        members_raw = d["members"]
        if not isinstance(members_raw, list) or not members_raw:
            raise SpecError("members must be a non-empty list of {size: ...} or custom shapes {name, num_layers, hidden_size, num_heads}")
        members = tuple(MemberSpec.from_dict(m, f"members[{i}]") for i, m in enumerate(members_raw))
        seeds = d.get("seeds", [1234])
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = [seeds]
        if not isinstance(seeds, list) or not seeds:
            raise SpecError(f"seeds must be a non-empty list of integers, got {seeds!r}")
        seeds = tuple(_int(s, f"seeds[{i}]", minimum=0) for i, s in enumerate(seeds))
        if len(set(seeds)) != len(seeds):
            raise SpecError(f"seeds must be distinct, got {list(seeds)}")
        eval_d = _check_keys(d.get("eval") or {}, "eval", (), ("samples",))
        spec = cls(
            name=name,
            data=DataSpec.from_dict(d["data"]),
            train=TrainSpec.from_dict(d["train"]),
            checkpoints=CheckpointSpec.from_dict(d["checkpoints"]),
            members=members,
            seeds=seeds,
            output=_path(d["output"], "output"),
            eval_samples=_int(eval_d.get("samples", 32), "eval.samples"),
            tensorboard=_bool(d.get("tensorboard", False), "tensorboard"),
            analyses=_analyses(d.get("analyses")),
        )
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise SpecError(f"members: shape names must be distinct (give custom members a `name`), got {names}")
        return dataclasses.replace(spec, interventions=_interventions(d.get("interventions"), spec))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> SuiteSpec:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"suite spec {path} does not exist")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {exc}") from None
        try:
            return dataclasses.replace(cls.from_dict(_relative_to(d, path.resolve().parent)), source=str(path))
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}") from None

    def replace(self, **changes: Any) -> SuiteSpec:
        if "output" in changes:
            changes["output"] = _path(changes["output"], "output")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The resolved spec in the YAML structure (every default spelled out)."""
        t = self.train
        return {
            "name": self.name,
            "data": {"train": self.data.train, "valid": self.data.valid, "seq_len": self.data.seq_len,
                     "seed": self.data.seed, "order_dir": self.data.order_dir},
            "train": {"iters": t.iters, "global_batch": t.global_batch, "micro_batch": t.micro_batch, "compile": t.compile,
                      "precision": t.precision, "lr_schedule": t.lr_schedule, "lr": t.lr, "min_lr": t.min_lr,
                      "warmup_fraction": t.warmup_fraction, "weight_decay": t.weight_decay, "grad_clip": t.grad_clip,
                      "adam_betas": list(t.adam_betas), "adam_eps": t.adam_eps,
                      "loss_scale": dataclasses.asdict(t.loss_scale), "parallel": t.parallel, "device": t.device,
                      "optimizer_state_every": t.optimizer_state_every},
            "checkpoints": {"interval": self.checkpoints.interval, "log_spaced": self.checkpoints.log_spaced,
                            "max_shard_size": self.checkpoints.max_shard_size, "gradients": self.checkpoints.gradients},
            "members": [m.to_dict() for m in self.members],
            "seeds": list(self.seeds),
            "output": self.output,
            "eval": {"samples": self.eval_samples},
            "tensorboard": self.tensorboard,
            "analyses": None if self.analyses is None else list(self.analyses),
            "interventions": [i.to_dict() for i in self.interventions],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -- derived values -------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return Path(self.output)

    def checkpoint_steps(self) -> list[int]:
        return checkpoint_steps(self.train.iters, self.checkpoints.interval, self.checkpoints.log_spaced)

    def checkpoint_analyses(self) -> tuple[str, ...]:
        if self.analyses is not None:
            return self.analyses
        return ("val_loss",) if self.data.valid else ()

    def optimizer_state_steps(self) -> list[int]:
        """Scheduled checkpoints that keep optimizer state: every k-th (k = train.optimizer_state_every,
        counting from step 0's) and the last."""
        steps, k = self.checkpoint_steps(), self.train.optimizer_state_every
        return [s for i, s in enumerate(steps) if i % k == 0 or i == len(steps) - 1]

    def warmup_iters(self) -> float:
        """GPT-NeoX's warmup length, a float (2.56 for 256 iters at 1%); never truncated."""
        return warmup_iters_for(self.train.iters, self.train.warmup_fraction)

    def data_seed_for(self, seed: int) -> int:
        return seed if self.data.seed == "per_member" else int(self.data.seed)

    def member_keys(self) -> list[MemberKey]:
        """Shapes x seeds in spec order (shape-major), names only: cheap, needs no data."""
        return [MemberKey(name=member_name(m.name, seed), shape=m.name, seed=seed, data_seed=self.data_seed_for(seed))
                for m in self.members for seed in self.seeds]

    def fork_keys(self) -> list[tuple[str, MemberKey, InterventionSpec]]:
        """(fork name, its base member, the intervention) in spec order: interventions, then members."""
        bases = {k.name: k for k in self.member_keys()}
        return [(i.fork_name(m), bases[m], i) for i in self.interventions for m in i.members]

    def fork_steps(self) -> list[int]:
        """Checkpoints a fork can start from: scheduled ones that keep optimizer state, before the last."""
        return [s for s in self.optimizer_state_steps() if s < self.train.iters]

    def resolve_members(self, dataset_vocab: int | None = None) -> list[Member]:
        """Shapes x seeds, in spec order (shape-major). `dataset_vocab` sizes custom shapes."""
        try:
            return self._resolve_members(dataset_vocab)
        except SpecError as exc:
            raise SpecError(f"{self.source}: {exc}" if self.source else str(exc)) from None

    def _resolve_members(self, dataset_vocab: int | None) -> list[Member]:
        out = []
        for m in self.members:
            if m.size is not None:
                config = model_config(m.size)
                recipe_lr, recipe_min = config.training.lr, config.training.min_lr
            else:
                vocab = m.vocab_size or dataset_vocab
                if vocab is None:
                    raise SpecError(f"member {m.name!r} needs vocab_size (no dataset vocabulary known)")
                try:
                    config = custom_config(name=m.name, num_layers=m.num_layers, hidden_size=m.hidden_size,
                                           num_heads=m.num_heads, vocab_size=vocab, **m.model)
                except (ValueError, TypeError) as exc:
                    raise SpecError(f"member {m.name!r}: {exc}") from None
                recipe_lr, recipe_min = 1e-3, 1e-4
            if self.data.seq_len > config.max_seq_len:
                raise SpecError(f"data.seq_len {self.data.seq_len} exceeds member {m.name!r}'s max_seq_len {config.max_seq_len}")
            lr = m.lr if m.lr is not None else self.train.lr
            if lr is None:
                lr, min_lr = recipe_lr, recipe_min
            else:
                min_lr = self.train.min_lr if self.train.min_lr is not None else 0.1 * lr
            if m.min_lr is not None:
                min_lr = m.min_lr
            if min_lr > lr:
                raise SpecError(f"member {m.name!r}: min_lr {min_lr} is above lr {lr}")
            for seed in self.seeds:
                out.append(Member(name=member_name(m.name, seed), config=config, seed=seed,
                                  data_seed=self.data_seed_for(seed), lr=lr, min_lr=min_lr))
        return out


def _analyses(value: Any) -> tuple[str, ...] | None:
    """`analyses:` names per-checkpoint analyses (pythia analyze --list). The schema checks only
    that they are names: the suite driver checks them against the registry before anything is
    written (pythia.suite.check_analyses), so parsing a spec loads no plug-in."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"analyses must be a list of analysis names, got {value!r}")
    return tuple(dict.fromkeys(value))


def _interventions(value: Any, spec: SuiteSpec) -> tuple[InterventionSpec, ...]:
    """`interventions:` entries, checked against the members and the checkpoint schedule."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError(f"interventions must be a list of {{name, members, from_step, token_map | function}}, "
                        f"got {value!r}")
    out = [InterventionSpec.from_dict(d, f"interventions[{i}]") for i, d in enumerate(value)]
    names = [k.name for k in spec.member_keys()]
    usable, seen = spec.fork_steps(), {}
    for i, iv in enumerate(out):
        for j, m in enumerate(iv.members):
            if m not in names:
                raise SpecError(f"interventions[{i}].members[{j}]: no member {m!r}{_did_you_mean(m, names)}; "
                                f"members: {', '.join(names)}")
            fork = iv.fork_name(m)
            if fork in seen:
                raise SpecError(f"interventions[{i}]: fork {fork!r} is also made by interventions[{seen[fork]}]; "
                                "give the interventions different names")
            seen[fork] = i
        if iv.from_step not in usable:
            every = spec.train.optimizer_state_every
            raise SpecError(f"interventions[{i}].from_step: {iv.from_step} is not a checkpoint a fork can start "
                            f"from (a scheduled checkpoint holding optimizer state, before the last step "
                            f"{spec.train.iters}{f'; train.optimizer_state_every: {every}' if every > 1 else ''}); "
                            f"usable steps: {', '.join(map(str, usable))}")
    return tuple(out)


def _relative_to(d: Any, base: Path) -> Any:
    """The spec dict with its relative paths made absolute against `base` (the spec file's
    folder), so a spec means the same thing from whatever directory it is used."""
    if not isinstance(d, dict):
        return d

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return os.path.normpath(base / value)  # examples/../runs/x -> runs/x
        return value

    out = dict(d)
    if isinstance(out.get("data"), dict):
        out["data"] = {k: fix(v) if k in ("train", "valid", "order_dir") else v for k, v in out["data"].items()}
    if "output" in out:
        out["output"] = fix(out["output"])
    if isinstance(out.get("interventions"), list):  # function: path/to/file.py:name
        out["interventions"] = [_relative_function(iv, fix) for iv in out["interventions"]]
    return out


def _relative_function(iv: Any, fix) -> Any:
    ref = iv.get("function") if isinstance(iv, dict) else None
    if not isinstance(ref, str) or ".py:" not in ref:
        return iv
    module, _, func = ref.rpartition(":")
    return {**iv, "function": f"{fix(module)}:{func}"}


def dataset_vocab_size(prefix: str) -> int:
    """Padded vocab for custom shapes: padded_vocab_size of the dataset's vocabulary (its
    manifest's tokenizer, else the largest token id + 1 read from the .bin in one pass)."""
    from ..data.tokenize import dataset_vocab

    return padded_vocab_size(dataset_vocab(prefix))
