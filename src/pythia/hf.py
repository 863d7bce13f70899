"""Hugging Face GPTNeoX format, both ways: config mapping, save_pretrained, load_folder.

A format only: it reads and writes one model folder. Which folder a run, member, step or Hub id
means is pythia.run's question (`resolve_checkpoint`, and `load_model` = resolve + load_folder).

Our parameter names are HF's, so conversion is a key filter, not a mapping: drop the legacy
buffers old Hub checkpoints carry (attention.bias / masked_bias / rotary_emb.inv_freq) and accept
transformers-5's `lm_head.weight` for `embed_out.weight`. Weights are read from safetensors or,
for legacy `pytorch_model*.bin`, through `torch.load(weights_only=True)`: loading never runs
pickled code.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .config import PYTHIA_SIZES, ModelConfig, TrainingRecipe
from .io import atomic_dir
from .layout import WeightsDigest

_HIDDEN_ACT = {"exact": "gelu", "tanh": "gelu_pytorch_tanh"}
# gelu_new / gelu_fast are the same tanh formula written out by hand in transformers.
_GELU_FROM_HF = {"gelu": "exact", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu_fast": "tanh"}
_LEGACY_KEY = re.compile(r"(attention\.(bias|masked_bias|rotary_emb\.inv_freq)|rotary_emb\.inv_freq)$")
SPECIAL_TOKEN = "<|endoftext|>"


class CheckpointError(ValueError):
    """A checkpoint directory or config that cannot be read as a Pythia/GPT-NeoX model."""


# ---------------------------------------------------------------------------------------------
# config.json <-> ModelConfig
# ---------------------------------------------------------------------------------------------
def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def to_hf_config(config: ModelConfig, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """config.json readable by transformers 4.x (rotary_pct/rotary_emb_base) and 5.x (rope_*)."""
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,  # class default is 24576 (gpt-neox #1208)
        "hidden_act": _HIDDEN_ACT[config.gelu],
        "rotary_pct": config.rotary_pct,
        "rotary_emb_base": _num(config.rotary_base),
        "partial_rotary_factor": config.rotary_pct,
        "rope_theta": _num(config.rotary_base),
        "max_position_embeddings": config.max_seq_len,
        "layer_norm_eps": config.layer_norm_eps,
        "initializer_range": config.init_std,
        "use_parallel_residual": True,
        "tie_word_embeddings": False,
        "attention_bias": True,
        "attention_dropout": 0.0,
        "hidden_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "use_cache": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
        # Our own fields (name, init, recipe); transformers keeps unknown keys as attributes.
        "pythia_config": config.to_dict(),
    }


def _first(d: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return default


def from_hf_config(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """ModelConfig from an HF GPTNeoX config dict; refuses what this network cannot represent."""
    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"{source}: {msg}")

    if hf.get("model_type") != "gpt_neox":
        raise bad(f"model_type is {hf.get('model_type')!r}, expected 'gpt_neox'")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in hf]
    if missing:
        raise bad(f"missing field(s) {missing}")
    d = int(hf["hidden_size"])
    if hf.get("intermediate_size") not in (None, 4 * d):
        raise bad(f"intermediate_size {hf['intermediate_size']} != 4 x hidden_size {4 * d} (Pythia MLPs are 4x)")
    if not hf.get("use_parallel_residual", True):
        raise bad("use_parallel_residual is false; only Pythia's parallel residual is supported")
    if hf.get("tie_word_embeddings", False):
        raise bad("tie_word_embeddings is true; Pythia's embed_in and embed_out are untied")
    if hf.get("attention_bias", True) is False:
        raise bad("attention_bias is false; Pythia's attention has biases")
    act = hf.get("hidden_act", "gelu")
    if act not in _GELU_FROM_HF:
        raise bad(f"hidden_act {act!r} not supported (one of {sorted(_GELU_FROM_HF)})")
    rope = _first(hf, "rope_parameters", "rope_scaling", default={}) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise bad(f"rope type {rope.get('rope_type', rope.get('type'))!r} not supported (only 'default')")
    rotary_pct = _first(rope, "partial_rotary_factor", default=None)
    rotary_pct = _first(hf, "partial_rotary_factor", "rotary_pct", default=0.25) if rotary_pct is None else rotary_pct
    rotary_base = _first(rope, "rope_theta", default=None)
    rotary_base = _first(hf, "rope_theta", "rotary_emb_base", default=10000.0) if rotary_base is None else rotary_base

    fields: dict[str, Any] = dict(
        num_layers=int(hf["num_hidden_layers"]),
        hidden_size=d,
        num_heads=int(hf["num_attention_heads"]),
        vocab_size=int(hf["vocab_size"]),
        max_seq_len=int(hf.get("max_position_embeddings", 2048)),
        rotary_pct=float(rotary_pct),
        rotary_base=float(rotary_base),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
        gelu=_GELU_FROM_HF[act],
        init_std=float(hf.get("initializer_range", 0.02)),
    )
    extra = hf.get("pythia_config")
    if isinstance(extra, dict):  # written by save_pretrained: keep name, init and recipe
        keep = {k: extra[k] for k in ("name", "init_method", "output_init_method", "training", "hf_repo") if k in extra}
        if isinstance(keep.get("training"), dict):
            try:
                keep["training"] = TrainingRecipe(**keep["training"])
            except (TypeError, ValueError) as exc:
                raise bad(f"pythia_config.training: {exc}") from exc
        fields.update(keep)
    else:  # a Hub checkpoint: adopt the published row of the same shape (name, recipe, init)
        for row in PYTHIA_SIZES.values():
            shape = (row.num_layers, row.hidden_size, row.num_heads, row.vocab_size)
            if shape == (fields["num_layers"], d, fields["num_heads"], fields["vocab_size"]):
                fields.update(name=row.name, init_method=row.init_method, output_init_method=row.output_init_method,
                              training=row.training, hf_repo=row.hf_repo)
                break
    fields.setdefault("name", "custom")
    try:
        return ModelConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise bad(str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------------------
def tokenizer_json(tokenizer: Any) -> str:
    """tokenizer.json text from a tokenizers.Tokenizer, a tokenizer.json path, or a folder with one."""
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_str(text)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise ValueError(f"{path}: not a valid tokenizer.json ({exc})") from exc
        return text
    if hasattr(tokenizer, "to_str"):
        return tokenizer.to_str()
    raise TypeError(f"tokenizer must be a tokenizers.Tokenizer or a path to tokenizer.json, got {type(tokenizer).__name__}")


def _write_tokenizer(tokenizer: Any, out: Path, max_len: int) -> None:
    (out / "tokenizer.json").write_text(tokenizer_json(tokenizer), encoding="utf-8")
    special = {"bos_token": SPECIAL_TOKEN, "eos_token": SPECIAL_TOKEN, "unk_token": SPECIAL_TOKEN}
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # tokenizer.json as-is (any model type)
        **special,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")


def save_pretrained(model, path: str | os.PathLike, tokenizer: Any = None, dtype: torch.dtype | None = None,
                    max_shard_bytes: int | None = None) -> Path:
    """Write `path/` (config.json, model.safetensors or shards + index[, tokenizer files]) atomically.

    dtype: storage dtype (default: the model's). The result loads in
    transformers.GPTNeoXForCausalLM.from_pretrained and in load_model.
    """
    path = Path(path)
    with atomic_dir(path) as tmp:
        write_pretrained(model, tmp, tokenizer=tokenizer, dtype=dtype, max_shard_bytes=max_shard_bytes)
    return path


DEFAULT_MAX_SHARD_BYTES = 2 * 10**9
"""HF weights above this size are written as model-0000k-of-0000n.safetensors + an index."""
INDEX_NAME = "model.safetensors.index.json"


def shard_plan(nbytes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Names in sorted order cut greedily into consecutive shards of at most max_shard_bytes
    (a single larger tensor gets a shard of its own), like transformers' save_pretrained."""
    shards: list[list[str]] = [[]]
    size = 0
    for name in sorted(nbytes):
        if shards[-1] and size + nbytes[name] > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes[name]
    return shards


def _full_cpu(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The whole tensor on CPU; a DTensor shard (FSDP2) is gathered first (a collective)."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return t.detach().to(device="cpu", dtype=dtype).contiguous()


def write_pretrained(model, folder: Path, tokenizer: Any = None, dtype: torch.dtype | None = None,
                     state: dict[str, torch.Tensor] | None = None, max_shard_bytes: int | None = None,
                     writer: bool = True) -> str | None:
    """The HF files into an existing (temporary) folder; for writers that own the atomic step,
    such as training checkpoints. Returns the weights digest (see WeightsDigest).

    `state` overrides model.state_dict(); it may hold FSDP2 DTensor shards, which are gathered
    one tensor at a time, so the writing rank holds at most one file's worth of weights (never
    the whole model). Then every rank must call this (the gathers are collectives) and only
    the one with writer=True writes files (the others get None). Weights larger than
    max_shard_bytes (default DEFAULT_MAX_SHARD_BYTES) go to model-0000k-of-0000n.safetensors
    files listed in model.safetensors.index.json, the layout transformers writes and reads.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    state = model.state_dict() if state is None else state
    store_dtype = dtype or next(iter(state.values())).dtype
    nbytes = {k: v.numel() * store_dtype.itemsize for k, v in state.items()}
    shards = shard_plan(nbytes, max_shard_bytes or DEFAULT_MAX_SHARD_BYTES)
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    digest = WeightsDigest()
    for file_name, keys in zip(names, shards):
        tensors = {k: _full_cpu(state[k], store_dtype) for k in keys}  # (every rank: collectives)
        if writer:
            for k in keys:
                digest.update(k, tensors[k])
            save_file(tensors, str(folder / file_name), metadata={"format": "pt"})
        del tensors
    if not writer:
        return None
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(nbytes.values())},
                 "weight_map": {k: f for f, keys in zip(names, shards) for k in keys}}
        (folder / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    hf = to_hf_config(model.config, store_dtype)
    (folder / "config.json").write_text(json.dumps(hf, indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        _write_tokenizer(tokenizer, folder, model.config.max_seq_len)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------
def _weight_files(folder: Path) -> list[Path]:
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (folder / single).is_file():
            return [folder / single]
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise CheckpointError(f"{index}: not a valid shard index ({exc})") from exc
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            for f in files:
                if not f.is_file():
                    raise FileNotFoundError(f"{f}: shard listed in {index} is missing")
            return files
    raise FileNotFoundError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model*.bin")


def _read_weights(files: list[Path], hashed: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of `files`; with `hashed`, each safetensors file is read once, as bytes that
    are both hashed (sha256 into hashed[file name]) and parsed, so a manifest check needs no
    second read of the weights."""
    from safetensors.torch import load, load_file

    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors" and hashed is not None:
            data = f.read_bytes()
            hashed[f.name] = hashlib.sha256(data).hexdigest()
            part = load(data)
            del data
        elif f.suffix == ".safetensors":
            part = load_file(str(f), device="cpu")
        else:  # legacy pickle: tensors only, no code execution
            try:
                part = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
                raise CheckpointError(f"{f}: cannot be read as a plain tensor dict with weights_only=True ({exc})") from exc
            if not isinstance(part, dict):
                raise CheckpointError(f"{f}: expected a dict of tensors, got {type(part).__name__}")
        state.update(part)
    return state


def _normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if _LEGACY_KEY.search(k):
            continue
        out["embed_out.weight" if k == "lm_head.weight" else k] = v
    return out


def _torch_dtype(dtype: Any) -> torch.dtype:
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in names:
        raise ValueError(f"dtype must be a torch dtype or one of {', '.join(names)}, got {dtype!r}")
    return names[dtype]


def _device(device: Any) -> torch.device:
    try:
        dev = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device (use device='cpu')")
    return dev


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """A model folder's config.json as a dict (named error when it is not JSON)."""
    config_file = Path(folder) / "config.json"
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: invalid JSON ({exc})") from exc


def load_folder(
    folder: str | os.PathLike,
    dtype: Any = None,
    device: str | torch.device | None = None,
    *,
    hf_config: dict[str, Any] | None = None,
    hashed: dict[str, str] | None = None,
):
    """Load one Hugging Face GPTNeoX model folder as our GPTNeoX (eval mode).

    dtype defaults to float32 (Hub weights are fp16; fp16 analysis of Pythia is known to
    overflow). `hf_config`: the folder's config.json already parsed (read_config), not read
    again. `hashed`: a dict that receives the sha256 of every weight file, computed from the
    same bytes the weights are parsed from (see pythia.layout.check_manifest). To load a run,
    member, step or Hub id, use pythia.load_model (pythia.run), which resolves the folder first.
    """
    from .model import GPTNeoX

    folder = Path(folder)
    config_file = folder / "config.json"
    hf = read_config(folder) if hf_config is None else hf_config
    config = from_hf_config(hf, source=str(config_file))
    files = _weight_files(folder)
    state = _normalise_keys(_read_weights(files, hashed))
    dtype = _torch_dtype(dtype)
    device = _device(device)

    model = GPTNeoX(config, device="meta", dtype=dtype)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    where = ", ".join(str(f) for f in files)
    if missing or unexpected:
        raise CheckpointError(f"{where}: missing keys {missing[:6]}{'...' if len(missing) > 6 else ''}, "
                              f"unexpected keys {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
    for k, shape in expected.items():
        if state[k].shape != shape:
            raise CheckpointError(f"{where}: {k} has shape {tuple(state[k].shape)}, config.json implies {tuple(shape)}")
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.gpt_neox.rotary_emb.to_empty(device=device)  # rebuild the cos/sin tables on the device
    return model.eval()


__all__ = [
    "CheckpointError", "from_hf_config", "load_folder", "read_config", "save_pretrained", "to_hf_config",
    "tokenizer_json", "write_pretrained",
]
