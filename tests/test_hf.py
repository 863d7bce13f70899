"""Hugging Face format both ways: save -> transformers, Hub-style and legacy checkpoints -> ours,
sharded files, the local Hub cache, our run layout, and clear errors."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import pythia
from pythia.config import custom_config
from pythia.hf import CheckpointError, from_hf_config, save_pretrained, to_hf_config
from pythia.model import GPTNeoX
from pythia.run import load_model

import transformers  # noqa: E402  (dev extra: the reference implementation)
SHAPE = dict(num_layers=2, hidden_size=64, num_heads=4, vocab_size=256)


def make_model(gelu="exact", seed=0):
    torch.manual_seed(seed)
    return GPTNeoX(custom_config(**SHAPE, gelu=gelu, name="tiny")).eval()


def logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out.logits if hasattr(out, "logits") else out


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<|padding|>": 1, **{w: i + 2 for i, w in enumerate("hello world the a of".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def old_style_config(cfg) -> dict:
    """A 2023 Hub config.json: old rotary keys only, no use_parallel_residual."""
    return {"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
            "hidden_size": cfg.hidden_size, "initializer_range": 0.02, "intermediate_size": 4 * cfg.hidden_size,
            "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "gpt_neox",
            "num_attention_heads": cfg.num_heads, "num_hidden_layers": cfg.num_layers, "rotary_emb_base": 10000,
            "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float16",
            "transformers_version": "4.24.0", "use_cache": True, "vocab_size": cfg.vocab_size}


def legacy_state(model) -> dict[str, torch.Tensor]:
    """State dict as old Hub .bin files carried it: embed_out naming plus non-parameter buffers."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    r = model.config.rotary_dims
    for i in range(model.config.num_layers):
        sd[f"gpt_neox.layers.{i}.attention.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()
        sd[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        sd[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = torch.rand(r // 2)
    return sd


@pytest.mark.parametrize("gelu", ["exact", "tanh"])
def test_save_pretrained_loads_in_transformers(tmp_path, gelu):
    model = make_model(gelu)
    out = save_pretrained(model, tmp_path / "m", tokenizer=tiny_tokenizer())
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "gpt_neox"
    assert cfg["hidden_act"] == {"exact": "gelu", "tanh": "gelu_pytorch_tanh"}[gelu]
    assert cfg["rotary_pct"] == cfg["partial_rotary_factor"] == 0.25
    assert cfg["rotary_emb_base"] == cfg["rope_theta"] == 10000
    assert (cfg["intermediate_size"], cfg["bos_token_id"], cfg["eos_token_id"]) == (256, 0, 0)
    assert cfg["tie_word_embeddings"] is False and cfg["use_parallel_residual"] is True
    assert cfg["torch_dtype"] == "float32"
    assert not list(tmp_path.glob(".*"))  # no temp leftovers
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, 256, (2, 24))
    assert (logits(hf, ids) - logits(model, ids)).abs().max() <= 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == tok.bos_token == tok.unk_token == "<|endoftext|>"
    assert tok("hello world").input_ids == [2, 3]
    special = json.loads((out / "special_tokens_map.json").read_text())
    assert special == {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    # ... and round-trips through our loader with the same config
    again = load_model(out)
    assert again.config == model.config
    assert torch.equal(logits(again, ids), logits(model, ids))


def test_tokenizer_from_path(tmp_path):
    tok_file = tmp_path / "tok.json"
    tiny_tokenizer().save(str(tok_file))
    out = save_pretrained(make_model(), tmp_path / "m", tokenizer=tok_file)
    assert json.loads((out / "tokenizer.json").read_text())["model"]["type"] == "WordLevel"
    with pytest.raises(FileNotFoundError):
        save_pretrained(make_model(), tmp_path / "m2", tokenizer=tmp_path / "missing.json")
    assert not (tmp_path / "m2").exists()


def test_transformers_checkpoint_loads(tmp_path):
    model = make_model("tanh")
    hf_cfg = transformers.GPTNeoXConfig(**{k: v for k, v in to_hf_config(model.config).items() if k != "pythia_config"})
    hf = transformers.GPTNeoXForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    ours = pythia.load_model(tmp_path / "hf")
    assert ours.config.gelu == "tanh"
    ids = torch.randint(0, 256, (2, 24))
    assert (logits(ours, ids) - logits(hf, ids)).abs().max() <= 1e-4
    bf16 = load_model(tmp_path / "hf", dtype=torch.bfloat16)
    assert bf16.embed_out.weight.dtype == torch.bfloat16


def test_legacy_safetensors_and_bin_load(tmp_path):
    model = make_model()
    ids = torch.randint(0, 256, (2, 16))
    want = logits(model, ids)
    for name in ("st", "bin"):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(old_style_config(model.config)))
        sd = legacy_state(model)
        if name == "st":
            save_file(sd, str(d / "model.safetensors"))
        else:
            torch.save(sd, d / "pytorch_model.bin")
        loaded = load_model(d)
        assert loaded.config.gelu == "exact" and loaded.config.rotary_pct == 0.25
        assert (logits(loaded, ids) - want).abs().max() <= 1e-6
    # lm_head naming (transformers >= 5) is accepted too
    d = tmp_path / "lm_head"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(old_style_config(model.config)))
    sd = {("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in model.state_dict().items()}
    save_file(sd, str(d / "model.safetensors"))
    assert (logits(load_model(d), ids) - want).abs().max() <= 1e-6


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_bin_with_pickled_code_is_refused(tmp_path):
    model = make_model()
    (tmp_path / "config.json").write_text(json.dumps(old_style_config(model.config)))
    torch.save({**model.state_dict(), "evil": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(tmp_path)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_load(tmp_path, fmt):
    model = make_model()
    sd = legacy_state(model)
    keys = sorted(sd)
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    shards = {f"{stem}-00001-of-00002.{fmt}": keys[::2], f"{stem}-00002-of-00002.{fmt}": keys[1::2]}
    weight_map = {}
    for fname, ks in shards.items():
        part = {k: sd[k].contiguous() for k in ks}
        save_file(part, str(tmp_path / fname)) if fmt == "safetensors" else torch.save(part, tmp_path / fname)
        weight_map.update({k: fname for k in ks})
    index = {"metadata": {}, "weight_map": weight_map}
    (tmp_path / f"{stem}.{fmt}.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps(to_hf_config(model.config)))
    ids = torch.randint(0, 256, (1, 10))
    assert torch.equal(logits(load_model(tmp_path), ids), logits(model, ids))
    (tmp_path / f"{stem}-00002-of-00002.{fmt}").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_model(tmp_path)


def _fake_cache(root, model, sha="0123456789abcdef0123456789abcdef01234567"):
    repo = root / "models--EleutherAI--pythia-70m"
    snap = repo / "snapshots" / sha
    save_pretrained(model, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "step3000").write_text(sha)
    return repo


def test_hub_cache_by_repo_id_and_revision(tmp_path, monkeypatch):
    model = make_model(seed=4)
    ids = torch.randint(0, 256, (1, 12))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = _fake_cache(tmp_path / "hub", model)
    loaded = pythia.load_model("EleutherAI/pythia-70m", revision="step3000")
    assert torch.equal(logits(loaded, ids), logits(model, ids))
    with pytest.raises(FileNotFoundError, match="step9000"):
        load_model("EleutherAI/pythia-70m", revision="step9000")
    with pytest.raises(FileNotFoundError, match="local Hugging Face cache"):
        load_model("EleutherAI/pythia-160m", revision="step3000")
    # by commit sha, and through HF_HOME/hub
    sha = (repo / "refs" / "step3000").read_text()
    assert torch.equal(logits(load_model("EleutherAI/pythia-70m", revision=sha), ids), logits(model, ids))
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert torch.equal(logits(load_model("EleutherAI/pythia-70m", revision="step3000"), ids), logits(model, ids))


def test_run_layout_revision(tmp_path):
    model = make_model(seed=7)
    save_pretrained(model, tmp_path / "tiny-seed1" / "step40")
    loaded = load_model(tmp_path / "tiny-seed1", revision="step40")
    ids = torch.randint(0, 256, (1, 8))
    assert torch.equal(logits(loaded, ids), logits(model, ids))
    with pytest.raises(FileNotFoundError, match="step40"):
        load_model(tmp_path / "tiny-seed1", revision="step80")
    save_pretrained(model, tmp_path / "tiny-seed1" / "step5")
    assert torch.equal(logits(load_model(tmp_path / "tiny-seed1"), ids), logits(model, ids))  # last = step40
    assert torch.equal(logits(load_model(tmp_path / "tiny-seed1", revision=40), ids), logits(model, ids))
    assert torch.equal(logits(load_model(tmp_path / "tiny-seed1", revision="main"), ids), logits(model, ids))
    with pytest.raises(FileNotFoundError, match=r"\['step5', 'step40'\]"):  # numeric order, not text order
        load_model(tmp_path / "tiny-seed1", revision="step80")
    (tmp_path / "other" / "step20").mkdir(parents=True)
    for bad in ("../other/step20", "step20/..", "best", 2.5):
        with pytest.raises(ValueError, match="revision"):
            load_model(tmp_path / "tiny-seed1", revision=bad)
    with pytest.raises(ValueError, match="revision= only with a member folder"):
        load_model(tmp_path / "tiny-seed1" / "step40", revision="step40")
    half = load_model(tmp_path / "tiny-seed1", revision="step40", dtype="float16")
    assert next(half.parameters()).dtype == torch.float16
    with pytest.raises(ValueError, match="dtype"):
        load_model(tmp_path / "tiny-seed1", dtype="half-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            load_model(tmp_path / "tiny-seed1", device="cuda")


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_model(tmp_path / "nope")
    model = make_model()
    good = to_hf_config(model.config)
    for change, match in (
        ({"model_type": "llama"}, "model_type"),
        ({"use_parallel_residual": False}, "use_parallel_residual"),
        ({"tie_word_embeddings": True}, "tie_word_embeddings"),
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"intermediate_size": 100}, "intermediate_size"),
    ):
        with pytest.raises(ValueError, match=match):
            from_hf_config({**good, **change})
    d = tmp_path / "wrong"
    save_pretrained(model, d)
    (d / "config.json").write_text(json.dumps({**good, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"config\.json.*gpt_neox"):
        load_model(d)
    (d / "config.json").write_text(json.dumps({**good, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_model(d)


def test_hub_config_adopts_published_row():
    cfg = json.loads(json.dumps(old_style_config(custom_config(num_layers=6, hidden_size=512, num_heads=8, vocab_size=50304))))
    got = from_hf_config(cfg)
    assert got.name == "pythia-70m" and got.gelu == "exact" and got.training.lr == 1e-3
    v5 = {k: v for k, v in cfg.items() if k not in ("rotary_pct", "rotary_emb_base")}
    v5["rope_parameters"] = {"rope_theta": 500.0, "partial_rotary_factor": 0.5, "rope_type": "default"}
    got = from_hf_config(v5)
    assert (got.rotary_base, got.rotary_pct) == (500.0, 0.5)
