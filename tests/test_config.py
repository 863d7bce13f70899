"""Pythia size table: exact parameter counts, vocab padding, recipes, init defaults, CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pythia.config import PYTHIA_SIZES, ModelConfig, TrainingRecipe, custom_config, model_config, padded_vocab_size

# Published totals / non-embedding counts (HF model cards; spec section 1).
PUBLISHED = {
    "pythia-14m": (14_067_712, 1_189_888),
    "pythia-31m": (30_494_720, 4_739_072),
    "pythia-70m": (70_426_624, 18_915_328),
    "pythia-160m": (162_322_944, 85_056_000),
    "pythia-410m": (405_334_016, 302_311_424),
    "pythia-1b": (1_011_781_632, 805_736_448),
    "pythia-1.4b": (1_414_647_808, 1_208_602_624),
    "pythia-2.8b": (2_775_208_960, 2_517_652_480),
    "pythia-6.9b": (6_857_302_016, 6_444_163_072),
    "pythia-12b": (11_846_072_320, 11_327_027_200),
}
LR = {"pythia-14m": 1e-3, "pythia-31m": 1e-3, "pythia-70m": 1e-3, "pythia-160m": 6e-4, "pythia-410m": 3e-4,
      "pythia-1b": 2.5e-4, "pythia-1.4b": 2e-4, "pythia-2.8b": 1.6e-4, "pythia-6.9b": 1.2e-4, "pythia-12b": 1.2e-4}


def test_table_has_the_ten_sizes_in_order():
    assert list(PYTHIA_SIZES) == list(PUBLISHED)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_counts_equal_published(name):
    total, non_emb = PUBLISHED[name]
    cfg = model_config(name)
    assert cfg.num_params() == total
    assert cfg.num_params(non_embedding=True) == non_emb


def test_padded_vocab():
    assert padded_vocab_size(50277) == 50304
    assert padded_vocab_size(50277, model_parallel=2) == 50432
    assert padded_vocab_size(50277, model_parallel=4) == 50688
    assert padded_vocab_size(128) == 128
    vocab = {n: c.vocab_size for n, c in PYTHIA_SIZES.items()}
    assert vocab["pythia-6.9b"] == 50432 and vocab["pythia-12b"] == 50688
    assert {v for n, v in vocab.items() if n not in ("pythia-6.9b", "pythia-12b")} == {50304}
    with pytest.raises(ValueError):
        padded_vocab_size(0)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_training_recipe(name):
    cfg = model_config(name)
    t = cfg.training
    assert t.lr == pytest.approx(LR[name]) and t.min_lr == pytest.approx(LR[name] / 10)
    assert (t.global_batch, t.seq_len, t.train_iters, t.warmup_iters) == (1024, 2048, 143_000, 1430)
    assert t.adam_betas == (0.9, 0.95) and t.adam_eps == 1e-8
    assert t.weight_decay == 0.1 and t.grad_clip == 1.0
    assert t.precision == ("bf16" if name == "pythia-1b" else "fp16")
    assert (cfg.rotary_pct, cfg.rotary_base, cfg.layer_norm_eps, cfg.max_seq_len) == (0.25, 10000.0, 1e-5, 2048)


def test_init_defaults_and_erratum():
    for name, cfg in PYTHIA_SIZES.items():
        expected = ("normal", "scaled_normal") if name in ("pythia-6.9b", "pythia-12b") else ("small_init", "wang_init")
        assert (cfg.init_method, cfg.output_init_method) == expected
    c70 = model_config("70m")
    assert c70.input_init_std == pytest.approx(0.027951, abs=1e-6)
    assert c70.output_init_std == pytest.approx(0.014731, abs=1e-6)
    c69 = model_config("6.9b")
    assert c69.input_init_std == 0.02 and c69.output_init_std == pytest.approx(0.0025)
    intended = c69.replace(init_method="small_init", output_init_method="wang_init")
    assert intended.input_init_std == pytest.approx(0.009882, abs=1e-6)


def test_name_aliases():
    base = model_config("pythia-410m")
    for alias in ("410m", "410M", "pythia-410m-deduped", "EleutherAI/pythia-410m-deduped", "410m-deduped"):
        c = model_config(alias)
        assert (c.num_layers, c.hidden_size, c.num_heads, c.vocab_size) == (24, 1024, 16, 50304)
        assert c.num_params() == base.num_params()
    assert model_config("pythia-70m-deduped").name == "pythia-70m-deduped"
    assert model_config("1b-deduped").training.precision == "fp16"
    with pytest.raises(ValueError, match="unknown Pythia size"):
        model_config("pythia-3b")


def test_round_trip_and_replace():
    cfg = model_config("160m")
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert cfg.replace(gelu="exact").gelu == "exact"
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_custom_and_validation():
    c = custom_config(num_layers=2, hidden_size=64, num_heads=4, vocab_size=128, name="tiny")
    assert (c.head_dim, c.rotary_dims, c.intermediate_size) == (16, 4, 256)
    assert c.num_params() == 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64 + 2 * 128 * 64
    assert isinstance(c.training, TrainingRecipe)
    with pytest.raises(ValueError, match="divisible"):
        custom_config(num_layers=2, hidden_size=64, num_heads=5, vocab_size=128)
    with pytest.raises(ValueError, match="gelu"):
        custom_config(num_layers=2, hidden_size=64, num_heads=4, vocab_size=128, gelu="relu")
    with pytest.raises(ValueError, match="rotary dims"):
        custom_config(num_layers=2, hidden_size=48, num_heads=4, vocab_size=128)  # dh 12 -> r 3
    with pytest.raises(ValueError, match="precision"):
        TrainingRecipe(lr=1e-3, min_lr=1e-4, micro_batch=2, precision="fp8")


def test_counts_match_module_on_meta_device():
    import torch

    from pythia.model import GPTNeoX

    for name in ("pythia-160m", "pythia-1b"):
        cfg = model_config(name)
        model = GPTNeoX(cfg, device="meta")
        assert model.num_params() == cfg.num_params()
        assert model.num_params(non_embedding=True) == cfg.num_params(non_embedding=True)
        assert all(p.device == torch.device("meta") for p in model.parameters())


def test_cli_models(capsys):
    from pythia.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "11,846,072,320" in out and "1,189,888" in out and "pythia-6.9b" in out
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: (r["params"], r["non_embedding_params"]) for r in rows} == PUBLISHED
    assert main(["models", "--json", "--name", "70m-deduped"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "pythia-70m-deduped"


def test_import_pythia_is_light():
    code = "import sys, pythia; pythia.model_config('70m'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
