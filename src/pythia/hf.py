"""Hugging Face GPTNeoX format, both ways: config mapping, save_pretrained, load_model.

Our parameter names are HF's, so conversion is a key filter, not a mapping: drop the legacy
buffers old Hub checkpoints carry (attention.bias / masked_bias / rotary_emb.inv_freq) and accept
transformers-5's `lm_head.weight` for `embed_out.weight`. Weights are read from safetensors or,
for legacy `pytorch_model*.bin`, through `torch.load(weights_only=True)`: loading never runs
pickled code. Hub repo ids resolve from the local HF cache only (no network).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .config import PYTHIA_SIZES, ModelConfig, TrainingRecipe
from .io import atomic_dir

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
def _tokenizer_json(tokenizer: Any) -> str:
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
    (out / "tokenizer.json").write_text(_tokenizer_json(tokenizer), encoding="utf-8")
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


class WeightsDigest:
    """sha256 over (name, dtype, shape, bytes) of tensors fed in name order: the checkpoint
    manifest's `weights_digest`, computed while the weights stream to disk."""

    def __init__(self):
        import hashlib

        self._h = hashlib.sha256()

    def update(self, name: str, t: torch.Tensor) -> None:
        t = t.detach().cpu().contiguous()
        self._h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        self._h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


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
# resolve (directory, run layout, local Hub cache)
# ---------------------------------------------------------------------------------------------
def hub_cache_dir() -> Path:
    """$HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub (~/.cache/huggingface/hub),
    read at call time so tests and users can point it anywhere."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def resolve_hub_cache(repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Snapshot folder of `repo_id` at `revision` (branch, tag or commit) in the local HF cache.

    Layout: CACHE/models--ORG--NAME/refs/REV holds a commit sha; the files are under
    snapshots/SHA/. Never touches the network.
    """
    revision = revision or "main"
    cache = Path(cache_dir) if cache_dir else hub_cache_dir()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    if not repo_dir.is_dir():
        raise FileNotFoundError(
            f"{repo_id!r} is neither a directory nor in the local Hugging Face cache ({repo_dir} not found; "
            f"download it first, e.g. huggingface-cli download {repo_id} --revision {revision})"
        )
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        sha = ref.read_text(encoding="utf-8").strip()
    elif re.fullmatch(r"[0-9a-f]{40}", revision):
        sha = revision
    else:
        known = sorted(p.name for p in (repo_dir / "refs").glob("*")) if (repo_dir / "refs").is_dir() else []
        raise FileNotFoundError(f"revision {revision!r} of {repo_id!r} is not in the local cache {repo_dir} (cached refs: {known})")
    snapshot = repo_dir / "snapshots" / sha
    if not (snapshot / "config.json").is_file():
        raise FileNotFoundError(f"{snapshot}: cached snapshot of {repo_id}@{revision} has no config.json")
    return snapshot


def resolve_checkpoint(path_or_repo_id: str | os.PathLike, revision: Any = None) -> Path:
    """The HF folder to load: a checkpoint folder; a run, demo output or member folder at
    `revision` ("stepN", N, or "main"/None = the last step; via pythia.run); a models--ORG--NAME
    cache folder or an ORG/NAME Hub id from the local cache."""
    from .run import RunError, open_run, parse_revision
    from .train.checkpoint import parse_step

    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        if (path / "refs").is_dir() and (path / "snapshots").is_dir():  # a models--ORG--NAME folder
            return resolve_hub_cache(path.name.removeprefix("models--").replace("--", "/"), _hub_revision(revision),
                                     path.parent)
        if (path / "config.json").is_file():
            if revision is not None:
                raise ValueError(f"{path} is one checkpoint; pass revision= only with a member folder "
                                 f"(e.g. load_model({str(path.parent)!r}, revision={revision!r})) or drop it")
            return path
        try:
            view = open_run(path)
        except RunError:
            view = None
        if view is not None:
            if view.kind == "step":
                raise ValueError(f"{path} is a step folder without config.json (incomplete checkpoint?)")
            return view.member().checkpoint(revision).path
        step = parse_revision(revision)  # refuses paths and odd names before touching the disk
        have = sorted((p.name for p in path.iterdir() if (p / "config.json").is_file()),
                      key=lambda n: (parse_step(n) is None, parse_step(n) or 0, n))
        if step is None and have:
            step = parse_step(have[-1]) if parse_step(have[-1]) is not None else None
        if step is None:
            hint = f"; pass revision= one of {have}" if have else ""
            raise FileNotFoundError(f"{path}: no config.json, not a Hugging Face model directory{hint}")
        sub = path / f"step{step}"
        if not (sub / "config.json").is_file():
            raise FileNotFoundError(f"{sub}: no checkpoint for revision {revision!r} (available: {have})")
        return sub
    text = str(path_or_repo_id)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith((".", "/")) and not path.exists():
        return resolve_hub_cache(text, _hub_revision(revision))
    raise FileNotFoundError(f"{text}: no such directory (and not an ORG/NAME Hub repo id)")


def _hub_revision(revision: Any) -> str | None:
    """Hub revisions are branch names; an integer step means its `stepN` branch."""
    if isinstance(revision, int) and not isinstance(revision, bool):
        return f"step{revision}"
    if revision is not None and not isinstance(revision, str):
        raise ValueError(f"revision must be a string like 'step3000' or an integer step, got {revision!r}")
    return revision


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


def _read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
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


def load_model(
    path_or_repo_id: str | os.PathLike,
    revision: Any = None,
    dtype: Any = None,
    device: str | torch.device | None = None,
):
    """Load a GPTNeoX checkpoint as our GPTNeoX (eval mode).

    path_or_repo_id: an HF directory; a directory whose `revision` subfolder is one (our runs:
    `RUN/{member}/step{N}`); or a Hub id like "EleutherAI/pythia-70m" found in the local HF
    cache at `revision` ("step3000", "main", or a commit sha). dtype defaults to float32
    (Hub weights are fp16; fp16 analysis of Pythia is known to overflow).
    """
    from .model import GPTNeoX

    folder = resolve_checkpoint(path_or_repo_id, revision)
    config_file = folder / "config.json"
    try:
        hf = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: invalid JSON ({exc})") from exc
    config = from_hf_config(hf, source=str(config_file))
    files = _weight_files(folder)
    state = _normalise_keys(_read_weights(files))
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
    "CheckpointError", "from_hf_config", "hub_cache_dir", "load_model", "resolve_checkpoint",
    "resolve_hub_cache", "save_pretrained", "to_hf_config",
]
