"""Greedy generation with the static KV cache: same tokens as transformers, cached logits parity."""
from __future__ import annotations

import pytest
import torch

from pythia.config import custom_config
from pythia.generate import DecodeWeights, argmax_rows, decode_step, generate_greedy
from pythia.hf import to_hf_config
from pythia.model import GPTNeoX, KVCache

import transformers  # noqa: E402  (dev extra: the reference implementation)


def pair(gelu="exact", seed=0, **shape):
    cfg = custom_config(**(shape or dict(num_layers=2, hidden_size=64, num_heads=4, vocab_size=256)), gelu=gelu)
    torch.manual_seed(seed)
    ours = GPTNeoX(cfg).eval()
    with torch.no_grad():  # sharpen the distribution a bit so greedy paths are not all ties/repeats
        ours.embed_out.weight.mul_(8)
    hf_cfg = transformers.GPTNeoXConfig(**{k: v for k, v in to_hf_config(cfg).items() if k != "pythia_config"})
    hf = transformers.GPTNeoXForCausalLM(hf_cfg).eval()
    hf.load_state_dict({("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in ours.state_dict().items()})
    return cfg, ours, hf


@pytest.mark.parametrize("gelu", ["exact", "tanh"])
def test_greedy_tokens_identical_to_transformers(gelu):
    cfg, ours, hf = pair(gelu)
    prompts = torch.randint(0, cfg.vocab_size, (4, 12))
    out = generate_greedy(ours, prompts, 16)
    ref = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=16, min_new_tokens=16,
                      do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=None)
    assert out.shape == (4, 28)
    assert torch.equal(out[:, :12], prompts)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("gelu", ["exact", "tanh"])
def test_cached_logits_match_full_forward_and_transformers(gelu):
    cfg, ours, hf = pair(gelu, seed=1)
    ids = torch.randint(0, cfg.vocab_size, (2, 20))
    with torch.no_grad():
        full = ours(ids)  # (B, T, V) no cache
        ref = hf(ids).logits
        cache = KVCache.allocate(ours, 2, 20)
        parts = [ours.forward_cached(ids[:, :8], cache, 0, last_only=False)]  # prefill
        for t in range(8, 14):  # single-token steps
            parts.append(ours.forward_cached(ids[:, t : t + 1], cache, t, last_only=False))
        parts.append(ours.forward_cached(ids[:, 14:], cache, 14, last_only=False))  # chunk after a prefix
        cached = torch.cat(parts, dim=1)
        # transformers with its own KV cache, token by token after a prefill
        out = hf(ids[:, :8], use_cache=True)
        hf_parts, kv = [out.logits], out.cache
        for t in range(8, 20):
            out = hf(ids[:, t : t + 1], cache=kv, use_cache=True)
            hf_parts.append(out.logits)
            kv = out.cache
        hf_cached = torch.cat(hf_parts, dim=1)
    assert (full - ref).abs().max() <= 1e-4
    assert (cached - full).abs().max() <= 1e-4
    assert (cached - ref).abs().max() <= 1e-4
    assert (hf_cached - cached).abs().max() <= 1e-4


def test_generate_edge_cases_and_mode():
    cfg, ours, _ = pair()
    prompts = torch.randint(0, cfg.vocab_size, (3, 5))
    assert torch.equal(generate_greedy(ours, prompts, 0), prompts)
    ours.train()
    out = generate_greedy(ours, prompts, 3)
    assert ours.training and out.shape == (3, 8) and out.dtype == torch.long
    one = generate_greedy(ours, prompts[1:2], 3)  # batching does not change a row's continuation
    assert torch.equal(one, out[1:2])
    with pytest.raises(ValueError, match="prompt_len"):
        generate_greedy(ours, prompts[0], 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_greedy(ours, prompts, -1)


def test_generate_beyond_max_seq_len_extends_rotary():
    cfg = custom_config(num_layers=1, hidden_size=32, num_heads=2, vocab_size=64, max_seq_len=16)
    torch.manual_seed(0)
    model = GPTNeoX(cfg).eval()
    out = generate_greedy(model, torch.randint(0, 64, (2, 10)), 10)
    assert out.shape == (2, 20)


@pytest.mark.parametrize("gelu,rotary_pct", [("exact", 0.25), ("tanh", 1.0), ("exact", 0.0)])
def test_decode_step_bit_identical_to_module_path(gelu, rotary_pct):
    """The flat one-token step is the module path op for op: same logits bits, same cache."""
    cfg, ours, _ = pair(gelu, seed=2, num_layers=2, hidden_size=64, num_heads=4, vocab_size=256, rotary_pct=rotary_pct)
    ids = torch.randint(0, cfg.vocab_size, (3, 12))
    with torch.inference_mode():
        ref_cache, cache = KVCache.allocate(ours, 3, 12), KVCache.allocate(ours, 3, 12)
        ours.forward_cached(ids[:, :6], ref_cache, 0)
        ours.forward_cached(ids[:, :6], cache, 0)
        w = DecodeWeights.build(ours, 12)
        buf = torch.full((3, cfg.vocab_size), float("nan"))
        for t in range(6, 12):
            ref = ours.forward_cached(ids[:, t : t + 1], ref_cache, t)  # (B, V)
            got = decode_step(ours, w, ids[:, t], cache, t, buf)
            assert got.data_ptr() == buf.data_ptr()  # written into the caller's buffer
            assert torch.equal(got, ref)
    for (k0, v0), (k1, v1) in zip(ref_cache.layers, cache.layers):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)


def test_generate_single_new_token_and_batch_one():
    cfg, ours, hf = pair()
    prompts = torch.randint(0, cfg.vocab_size, (1, 7))
    for n in (1, 2, 9):
        out = generate_greedy(ours, prompts, n)
        ref = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=None)
        assert torch.equal(out, ref)


def naive_greedy(model, prompts, n):
    ids = prompts
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)  # (B, T+1)
    return ids


def test_cached_head_copy_follows_weight_updates():
    """The per-model (d, V) head copy is rebuilt when embed_out changes in place or is replaced."""
    from pythia.generate import _HEAD_T

    cfg, ours, _ = pair()
    prompts = torch.randint(0, cfg.vocab_size, (4, 6))
    assert torch.equal(generate_greedy(ours, prompts, 5), naive_greedy(ours, prompts, 5))
    assert ours in _HEAD_T
    with torch.no_grad():
        ours.embed_out.weight.mul_(-1)  # in place: version bump
    assert torch.equal(generate_greedy(ours, prompts, 5), naive_greedy(ours, prompts, 5))
    ours.embed_out.weight = torch.nn.Parameter(torch.randn(cfg.vocab_size, cfg.hidden_size))  # replaced
    assert torch.equal(generate_greedy(ours, prompts, 5), naive_greedy(ours, prompts, 5))
    assert torch.equal(_HEAD_T[ours][1], ours.embed_out.weight.t())


@pytest.mark.parametrize("V", [2048, 1000, 256])
def test_argmax_rows_matches_torch_argmax_with_ties_and_nan(V):
    torch.manual_seed(0)
    logits = torch.randn(6, V)
    logits[0, 3] = logits[0, V - 2] = 50.0  # tie across blocks -> first
    logits[1, 130] = logits[1, 131] = 50.0  # tie inside a block
    logits[2, :] = 7.0  # all equal -> 0
    logits[3, V // 2] = float("nan")  # NaN wins, like argmax
    logits[4, 0] = float("inf")
    logits[5, V - 1] = 99.0  # last element
    out = torch.full((6,), -1, dtype=torch.long)
    got = argmax_rows(logits, out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(out, logits.argmax(dim=-1))


def test_generating_past_max_seq_len_leaves_the_model_trainable():
    """Rotary tables extended inside generate (inference mode) must still work for backward."""
    torch.manual_seed(0)
    cfg = custom_config(num_layers=1, hidden_size=32, num_heads=4, vocab_size=128, max_seq_len=16)
    model = GPTNeoX(cfg)
    prompts = torch.randint(0, 128, (2, 10))
    out = generate_greedy(model, prompts, max_new_tokens=10)  # 20 > max_seq_len: tables grow
    assert out.shape == (2, 20)
    ids = torch.randint(0, 128, (2, 20))
    loss = model(ids[:, :-1], labels=ids[:, 1:])
    loss.backward()
    assert model.embed_out.weight.grad is not None


@pytest.mark.parametrize("gelu", ["exact", "tanh"])
def test_ragged_batch_gives_each_row_its_own_greedy_tokens(gelu):
    """Prompts of 3..12 tokens in one batch: every row equals its own unbatched generation and
    transformers' (a row alone: no padding), and the early stop cuts all rows at one step."""
    from pythia.generate import generate_greedy_ragged

    cfg, ours, hf = pair(gelu, seed=2)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, cfg.vocab_size, (n,), generator=g).tolist() for n in (7, 3, 12, 7, 5)]
    out = generate_greedy_ragged(ours, prompts, 9)
    assert out.shape == (5, 9)
    for row, p in zip(out, prompts):
        alone = generate_greedy(ours, torch.tensor([p]), 9)[0, len(p):]
        ref = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), max_new_tokens=9,
                          min_new_tokens=9, do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=None)[0, len(p):]
        assert torch.equal(row, alone) and torch.equal(row, ref)
    seen = []
    short = generate_greedy_ragged(ours, prompts, 9, stop=lambda new: seen.append(new.shape[1]) or new.shape[1] == 4)
    assert seen == [1, 2, 3, 4] and torch.equal(short, out[:, :4])
    with pytest.raises(ValueError):
        generate_greedy_ragged(ours, [[1, 2], []], 3)


def test_ragged_batch_ignores_what_the_cache_held_before(monkeypatch):
    """The empty slots left of a short prompt are masked but still read by attention: a NaN
    left there by an earlier allocation must not reach the output."""
    from pythia import generate as gen

    cfg, ours, _ = pair("exact", seed=4)
    real = KVCache.allocate

    def poisoned(model, batch, max_len):
        cache = real(model, batch, max_len)
        for k, v in cache.layers:
            k.fill_(float("nan"))
            v.fill_(float("nan"))
        return cache

    prompts = [[1, 2, 3, 4, 5, 6], [7, 8]]
    clean = gen.generate_greedy_ragged(ours, prompts, 4)
    monkeypatch.setattr(KVCache, "allocate", staticmethod(poisoned))
    assert torch.equal(gen.generate_greedy_ragged(ours, prompts, 4), clean)
    assert torch.equal(clean[1], generate_greedy(ours, torch.tensor([[7, 8]]), 4)[0, 2:])


def test_suppressed_token_matches_transformers_min_length():
    """suppress=eos is what transformers' min_length does while the sequence is short: the id
    is never generated, and every other choice is the unmasked argmax."""
    cfg, ours, hf = pair(seed=3)
    with torch.no_grad():  # favour token 0, so that masking it changes the output
        u = torch.randn(cfg.hidden_size)
        for m in (ours.gpt_neox, hf.gpt_neox):
            m.final_layer_norm.bias.copy_(0.5 * u)
        for w in (ours.embed_out.weight, hf.lm_head.weight):
            w[0].add_(0.3 * u)
    prompts = torch.randint(1, cfg.vocab_size, (6, 10))
    free = generate_greedy(ours, prompts, 12)
    out = generate_greedy(ours, prompts, 12, suppress=0)
    ref = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=12, min_new_tokens=12,
                      do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=0)
    assert (free[:, 10:] == 0).any() and not (out[:, 10:] == 0).any()
    assert torch.equal(out, ref)
    assert torch.equal(generate_greedy(ours, prompts, 12, suppress=[0, 5]), generate_greedy(ours, prompts, 12, [5, 0]))
