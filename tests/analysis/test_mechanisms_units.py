"""Mechanisms on small random models and synthetic patterns: the hooked pass against transformers'
eager attention and hidden states, head scores against hand-made patterns and a direct numpy
eigen-decomposition of the full OV circuit, the lens and loss by position against transformers'
logits, and the canary: a tiny model trained on repeated random tokens grows an induction head
that `heads` finds, and its ICL score turns negative."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pythia.config import custom_config
from pythia.hf import save_pretrained
from pythia.mechanisms.heads import copying_scores, head_scores, ordinary_token_ids, pattern_scores, repeated_tokens
from pythia.mechanisms.internals import run_internals
from pythia.mechanisms.lens import held_out_sums
from pythia.model import GPTNeoX

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_model(seed=0, layers=2, hidden=32, heads=4, vocab=96, ctx=64):
    torch.manual_seed(seed)
    m = GPTNeoX(custom_config(num_layers=layers, hidden_size=hidden, num_heads=heads, vocab_size=vocab, max_seq_len=ctx))
    with torch.no_grad():  # non-trivial LayerNorms and biases, so that a missing term shows
        for name, p in m.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    from transformers import GPTNeoXForCausalLM

    m = random_model()
    folder = save_pretrained(m, tmp_path_factory.mktemp("ckpt") / "step0")
    hf = GPTNeoXForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return m, hf


def test_hooked_pass_equals_transformers_eager_attention_and_hidden_states(hf_pair):
    m, hf = hf_pair
    ids = torch.randint(0, 96, (3, 40), generator=torch.Generator().manual_seed(1))
    got = run_internals(m, ids, patterns=True)
    with torch.no_grad():
        ref = hf(ids, output_attentions=True, output_hidden_states=True)
    assert len(got.resid) == 3 and len(got.patterns) == 2
    for l in range(2):
        torch.testing.assert_close(got.patterns[l], ref.attentions[l].float(), atol=2e-6, rtol=0)
    for l in range(2):  # transformers' last hidden state is the normed one
        torch.testing.assert_close(got.resid[l], ref.hidden_states[l], atol=2e-6, rtol=0)
    torch.testing.assert_close(got.final, ref.hidden_states[2], atol=2e-6, rtol=0)
    torch.testing.assert_close(hf.gpt_neox.final_layer_norm(got.resid[2]), ref.hidden_states[2], atol=2e-6, rtol=0)


def one_hot_pattern(T, targets):
    """(1, 1, T, T): row q puts all its weight on key targets[q]."""
    p = torch.zeros(1, 1, T, T)
    for q, j in enumerate(targets):
        p[0, 0, q, j] = 1.0
    return p


def test_head_scores_use_the_token_after_the_earlier_copy():
    r, R = 5, 3
    tokens = torch.as_tensor(repeated_tokens(1, r, R, np.arange(100), 0))
    T = r * R
    induction = [q - r + 1 if q >= r else 0 for q in range(T)]  # the token after the copy one repeat back
    copy = [q - r if q >= r else 0 for q in range(T)]  # the copy itself
    prev = [max(q - 1, 0) for q in range(T)]
    s_ind = pattern_scores(one_hot_pattern(T, induction), tokens, r)
    s_dup = pattern_scores(one_hot_pattern(T, copy), tokens, r)
    s_prev = pattern_scores(one_hot_pattern(T, prev), tokens, r)
    assert s_ind["induction"].item() == pytest.approx(1.0) and s_ind["duplicate"].item() == pytest.approx(0.0)
    assert s_dup["duplicate"].item() == pytest.approx(1.0) and s_dup["induction"].item() == pytest.approx(0.0)
    assert s_prev["prev_token"].item() == pytest.approx(1.0) and s_ind["prev_token"].item() < 0.2
    # attention split between every earlier copy's successor (repeat 3 sees two): the total counts
    split = torch.zeros(1, 1, T, T)
    for q in range(T):
        succ = [j + 1 for j in range(q) if tokens[0, j] == tokens[0, q]]
        for j in succ or [0]:
            split[0, 0, q, j] = 1.0 / len(succ or [0])
    assert pattern_scores(split, tokens, r)["induction"].item() == pytest.approx(1.0)


def test_copying_score_equals_eigenvalues_of_the_full_ov_circuit():
    m = random_model(seed=3, vocab=40, hidden=16, heads=2)
    got = copying_scores(m).numpy()
    sd = {k: v.double().numpy() for k, v in m.state_dict().items()}
    W_E = sd["gpt_neox.embed_in.weight"].T  # (d, V): token -> embedding
    W_U = sd["embed_out.weight"]  # (V, d)
    H, d = 2, 16
    dh = d // H
    for l in range(2):
        qkv = sd[f"gpt_neox.layers.{l}.attention.query_key_value.weight"]  # rows: head h: q, k, v blocks of dh
        dense = sd[f"gpt_neox.layers.{l}.attention.dense.weight"]
        for h in range(H):
            W_V = qkv[h * 3 * dh + 2 * dh: h * 3 * dh + 3 * dh]  # (dh, d)
            W_O = dense[:, h * dh:(h + 1) * dh]  # (d, dh)
            lam = np.linalg.eigvals(W_U @ W_O @ W_V @ W_E)  # (V, V), rank <= dh
            assert got[l, h] == pytest.approx(lam.real.sum() / np.abs(lam).sum(), abs=1e-9)
    # a head whose OV circuit copies (W_U W_O W_V W_E positive definite) scores 1, its negation -1
    with torch.no_grad():
        w = m.gpt_neox.layers[0].attention.query_key_value.weight.view(H, 3, dh, d)
        e, u = m.gpt_neox.embed_in.weight.double(), m.embed_out.weight.double()
        w_o = m.gpt_neox.layers[0].attention.dense.weight.view(d, H, dh)[:, 0].double()
        w[0, 2] = torch.linalg.pinv(e.t() @ u @ w_o).float()  # W_V (e^T u W_O) = I
    assert copying_scores(m)[0, 0].item() == pytest.approx(1.0, abs=1e-4)
    with torch.no_grad():
        m.gpt_neox.layers[0].attention.query_key_value.weight.view(H, 3, dh, d)[0, 2].neg_()
    assert copying_scores(m)[0, 0].item() == pytest.approx(-1.0, abs=1e-4)


def test_probe_is_seeded_random_ordinary_tokens_repeated(gpt_neox_20b_tokenizer):
    ids = ordinary_token_ids(gpt_neox_20b_tokenizer, 50304)
    assert 0 not in ids and 1 not in ids  # <|endoftext|>, <|padding|>
    assert ids.max() < 50277 and len(ids) > 50000
    a = repeated_tokens(8, 25, 4, ids, 0)
    assert a.shape == (8, 100) and np.isin(a, ids).all()
    assert np.array_equal(a[:, :25], a[:, 75:]) and np.array_equal(a, repeated_tokens(8, 25, 4, ids, 0))
    assert not np.array_equal(a, repeated_tokens(8, 25, 4, ids, 1))


def test_lens_and_loss_by_position_equal_transformers_logits(hf_pair):
    m, hf = hf_pair
    windows = np.random.default_rng(2).integers(0, 96, size=(5, 33))
    got = held_out_sums(m, windows, lens=True, batch=2)
    x, y = torch.as_tensor(windows[:, :-1]), torch.as_tensor(windows[:, 1:])
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True)
        head, ln = hf.get_output_embeddings(), hf.gpt_neox.final_layer_norm
        logps = [head(ln(h)).log_softmax(-1) for h in ref.hidden_states[:-1]] + [ref.logits.log_softmax(-1)]
    final = logps[-1]
    ce_k = -final.gather(-1, y[..., None])[..., 0]  # (n, S): k = 2..T
    np.testing.assert_allclose(got.ce_by_position / got.windows, ce_k.mean(0).numpy(), atol=2e-5)
    n = y.numel()
    kl = [float((final.exp() * (final - lp)).sum()) / n for lp in logps]
    ce = [float(-lp.gather(-1, y[..., None]).sum()) / n for lp in logps]
    np.testing.assert_allclose(got.kl / n, kl, atol=2e-5)
    np.testing.assert_allclose(got.ce / n, ce, atol=2e-5)
    assert got.kl[-1] == 0.0
    top = [lp.argmax(-1) for lp in logps]  # prediction depth, position by position
    depth = 0
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            d = len(top) - 1
            while d > 0 and top[d - 1][b, t] == top[-1][b, t]:
                d -= 1
            depth += d
    assert got.depth / n == pytest.approx(depth / n)


# ---------------------------------------------------------------------------------------------
# the canary: an induction head forms on repeated random tokens, and `heads` and `icl` see it

V, R_LEN, REPEATS = 64, 12, 3


def canary_ctx(tmp_path, model, step, held_out):
    from pythia.analysis.base import CheckpointContext

    run = SimpleNamespace(results_dir=tmp_path / "results", spec=None, source="canary")
    member = SimpleNamespace(name="canary", seq_len=R_LEN * REPEATS - 1, tokenizer_path=None, shape="canary", seed=0,
                             dataset=None, config=model.config)
    ck = SimpleNamespace(step=step, revision=f"step{step}")
    return CheckpointContext(run=run, member=member, checkpoint=ck, device=torch.device("cpu"), model_override=model,
                             analyses=("icl", "heads"))


def test_canary_induction_head_forms_and_heads_and_icl_find_it(tmp_path):
    from pythia.analysis.heads import Heads
    from pythia.analysis.icl import ICL
    from pythia.data.indexed import IndexedDatasetBuilder

    S = R_LEN * REPEATS - 1  # windows: one repeated sequence of S tokens + the next one's first
    prefix = tmp_path / "held_out"
    with IndexedDatasetBuilder(prefix) as b:
        for row in repeated_tokens(48, R_LEN, REPEATS, np.arange(V), 7):
            b.add_document(row[:S])
    torch.manual_seed(0)
    model = GPTNeoX(custom_config(num_layers=2, hidden_size=32, num_heads=4, vocab_size=V, max_seq_len=S + 1,
                                  rotary_pct=1.0))
    heads = Heads(probe_n=32, probe_len=R_LEN, probe_repeats=REPEATS)
    icl = ICL(held_out_data=str(prefix), held_out_windows=32)
    icl.check(canary_ctx(tmp_path, model, 0, prefix).run, [canary_ctx(tmp_path, model, 0, prefix).member])

    def measure(step):
        model.eval()
        ctx = canary_ctx(tmp_path, model, step, prefix)
        rows = {(r.task, r.metric): r.value for r in heads.compute(ctx) + icl.compute(ctx)}
        model.train()
        return rows

    before = measure(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(123)
    for _ in range(150):
        x = torch.as_tensor(repeated_tokens(32, R_LEN, REPEATS, np.arange(V), int(rng.integers(1 << 30))))
        loss = model(x[:, :-1], labels=x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = measure(150)
    assert before[("max", "induction")] < 0.2, before
    assert after[("max", "induction")] > 0.6, after  # the token after the copy, not the copy itself:
    assert after[("max", "duplicate")] < 0.4, after  # a score on the wrong offset stays low and fails above
    assert after[("", "icl_score")] < -1.0 and after[("", "icl_score")] < before[("", "icl_score")] - 1.0
    # the strongest induction head sits in the second layer (it needs a previous-token head below)
    best = max((v, t) for (t, m), v in after.items() if m == "induction" and t != "max")[1]
    assert best.startswith("L1."), best
    assert (tmp_path / "results" / "artifacts" / "heads" / "probe_n32_r12_R3_seed0.npy").is_file()
