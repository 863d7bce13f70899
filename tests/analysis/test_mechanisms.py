"""`icl`, `heads`, `lens` and `phase_change` on the quick demo (which runs them on every member
and step), each number recomputed independently from the artifacts it leaves: per-position
cross-entropy from transformers' `GPTNeoXForCausalLM`, head scores from transformers' eager
attention weights and from TransformerLens' patterns on the stored probe, the logit lens from
TransformerLens' `accumulated_resid`; the same numbers on a Hub cache of a member; bit-identical
reruns; bad input refused by name; `pythia.load_hooked` and the README's nnsight example."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from pythia.demo.pipeline import QUICK
from pythia.demo.studies import mechanism_options
from pythia.run import open_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = [0, 1, 2, 4, 8, 10, 20]
BASE = [f"{s.name}-seed{seed}" for s in QUICK.sizes for seed in QUICK.seeds]
TUNED = f"{QUICK.sizes[-1].name}-seed{QUICK.seeds[0]}"
MEMBER, STEP = "d64-l2-seed2", 20


@pytest.fixture(scope="module")
def demo(quick_demo):
    out, _ = quick_demo
    run = open_run(out)
    return run, run.results().rows(analysis=["icl", "heads", "lens", "phase_change"])


def pick(rows, analysis, member=None, step=None, metric=None, task=None):
    return {(r["member"], r["step"], r["task"] or "", r["metric"]): r["value"] for r in rows
            if r["analysis"] == analysis and (member is None or r["member"] == member)
            and (step is None or r["step"] == step) and (metric is None or r["metric"] == metric)
            and (task is None or (r["task"] or "") == task)}


def artifacts(run, analysis, member=MEMBER, step=STEP):
    return run.results_dir / "artifacts" / analysis / member / f"step{step}"


def held_out_windows(info: dict) -> np.ndarray:
    """The windows windows.json names, rebuilt from the dataset as it says."""
    from pythia.data.indexed import IndexedDataset

    ds = IndexedDataset(info["data"])
    stream = np.concatenate([np.asarray(ds[i], dtype=np.int64) for i in range(len(ds))])
    S = info["seq_len"]
    return np.stack([stream[j * S: j * S + S + 1] for j in info["indices"]])


def hf_model(run, member=MEMBER, step=STEP):
    from transformers import GPTNeoXForCausalLM

    path = run.member(member).checkpoint(step).path
    return GPTNeoXForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


def test_demo_ran_every_mechanism_study(demo):
    run, rows = demo
    for analysis, metric, task in (("icl", "icl_score", ""), ("heads", "induction", "max"),
                                   ("lens", "kl_to_final", "layer0"), ("lens", "prediction_depth", "")):
        got = {(m, s) for m, s, *_ in pick(rows, analysis, metric=metric, task=task)}
        assert got == {(m, s) for m in BASE for s in STEPS}, (analysis, metric)
    tuned = {(m, s) for m, s, *_ in pick(rows, "lens", metric="tuned_kl_to_final")}
    assert tuned == {(TUNED, 20)}
    heads = pick(rows, "heads", member=MEMBER, step=STEP, metric="induction")
    assert set(t for _, _, t, _ in heads) == {"max"} | {f"L{l}.H{h}" for l in range(2) for h in range(4)}
    assert heads[(MEMBER, STEP, "max", "induction")] == max(heads.values())
    phase = pick(rows, "phase_change")
    assert {m for m, *_ in phase} == set(BASE) | {f"{s.name}/*" for s in QUICK.sizes}
    assert all(v in STEPS[1:] for (m, _, _, k), v in phase.items() if k == "induction_phase_step")


def test_icl_equals_per_position_cross_entropy_of_transformers(demo):
    run, rows = demo
    folder = artifacts(run, "icl")
    info = json.loads((folder / "windows.json").read_text())
    windows = held_out_windows(info)
    opts = mechanism_options(run.spec.data.seq_len)
    assert windows.shape == (opts["held_out_windows"], run.spec.data.seq_len + 1)
    with torch.no_grad():
        logits = hf_model(run)(torch.as_tensor(windows[:, :-1])).logits.double()
    y = torch.as_tensor(windows[:, 1:])
    ce = -(logits.log_softmax(-1).gather(-1, y[..., None])[..., 0]).mean(0).numpy()  # k = 2..T
    table = np.loadtxt(folder / "loss_by_position.tsv", skiprows=1)
    assert table[:, 0].tolist() == list(range(2, windows.shape[1] + 1))
    np.testing.assert_allclose(table[:, 1], ce, atol=2e-5)
    T = windows.shape[1]
    early, late = max(2, min(50, T // 10)), min(500, T - 1)  # the spec's defaults: 6 and 64 here
    got = pick(rows, "icl", member=MEMBER, step=STEP)
    assert got[(MEMBER, STEP, "", "icl_score")] == pytest.approx(ce[late - 2] - ce[early - 2], abs=4e-5)
    for k in (2, 4, 8, 16, 32, 64, early, late, T):
        assert got[(MEMBER, STEP, str(k), "loss_at_position")] == pytest.approx(ce[k - 2], abs=2e-5)


def scores_from_patterns(patterns, probe, r):
    """prev_token, duplicate, induction (L, H) written out position by position (numpy)."""
    L, (n, H, T, _) = len(patterns), patterns[0].shape
    out = {k: np.zeros((L, H)) for k in ("prev_token", "duplicate", "induction")}
    for l, A in enumerate(patterns):
        A = np.asarray(A, dtype=np.float64)
        for b in range(n):
            x = probe[b]
            out["prev_token"][l] += np.mean([A[b, :, q, q - 1] for q in range(1, T)], axis=0)
            dup, ind = np.zeros(H), np.zeros(H)
            for q in range(r, T):
                js = [j for j in range(q) if x[j] == x[q]]
                dup += sum((A[b, :, q, j] for j in js), np.zeros(H))
                ind += sum((A[b, :, q, j + 1] for j in js), np.zeros(H))
            out["duplicate"][l] += dup / (T - r)
            out["induction"][l] += ind / (T - r)
    return {k: v / n for k, v in out.items()}


def test_head_scores_equal_transformers_eager_attention_and_transformerlens_patterns(demo):
    import pythia

    run, rows = demo
    opts = mechanism_options(run.spec.data.seq_len)
    r, n = opts["probe_len"], opts["probe_n"]
    probe = np.load(run.results_dir / "artifacts" / "heads" / f"probe_n{n}_r{r}_R4_seed0.npy")
    meta = json.loads((run.results_dir / "artifacts" / "heads" / f"probe_n{n}_r{r}_R4_seed0.json").read_text())
    assert probe.shape == (n, 4 * r) and meta["r"] == r and np.array_equal(probe[:, :r], probe[:, -r:])
    sub = probe[:16]  # every score recomputed on the whole probe; TransformerLens' patterns compared on 16
    with torch.no_grad():
        att = hf_model(run)(torch.as_tensor(probe), output_attentions=True).attentions
        tl = pythia.load_hooked(run.source, member=MEMBER, revision=f"step{STEP}")
        _, cache = tl.run_with_cache(torch.as_tensor(sub))
    expect = scores_from_patterns([a.numpy() for a in att], probe, r)
    got = pick(rows, "heads", member=MEMBER, step=STEP)
    for k, v in expect.items():
        for l in range(v.shape[0]):
            for h in range(v.shape[1]):
                assert got[(MEMBER, STEP, f"L{l}.H{h}", k)] == pytest.approx(v[l, h], abs=1e-6), (k, l, h)
        assert got[(MEMBER, STEP, "max", k)] == pytest.approx(v.max(), abs=1e-6)
    for l in range(len(att)):  # TransformerLens sees the same attention patterns
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_pattern"].float(), att[l][:16].float(), atol=1e-5, rtol=0)
    with_tl = scores_from_patterns([cache[f"blocks.{l}.attn.hook_pattern"].numpy() for l in range(len(att))], sub, r)
    np.testing.assert_allclose(with_tl["induction"], scores_from_patterns([a[:16].numpy() for a in att], sub, r)["induction"],
                               atol=1e-5)


def test_logit_lens_equals_transformerlens_accumulated_resid(demo):
    import pythia

    run, rows = demo
    info = json.loads((artifacts(run, "lens") / "windows.json").read_text())
    windows = held_out_windows(info)
    tl = pythia.load_hooked(run.source, member=MEMBER, revision=f"step{STEP}")
    x, y = torch.as_tensor(windows[:, :-1]), torch.as_tensor(windows[:, 1:])
    with torch.no_grad():
        logits, cache = tl.run_with_cache(x)
        stack = cache.accumulated_resid(apply_ln=True)  # (L+1, n, S, d): resid_pre 0..L-1, final resid_post
        layer_logits = stack @ tl.W_U + (tl.b_U if getattr(tl, "b_U", None) is not None else 0)
    final = logits.double().log_softmax(-1)
    got = pick(rows, "lens", member=MEMBER, step=STEP)
    n, tops = y.numel(), []
    for l in range(stack.shape[0]):
        lp = layer_logits[l].double().log_softmax(-1)
        kl = float((final.exp() * (final - lp)).sum()) / n
        ce = float(-lp.gather(-1, y[..., None]).sum()) / n
        assert got[(MEMBER, STEP, f"layer{l}", "kl_to_final")] == pytest.approx(kl, abs=3e-5), l
        assert got[(MEMBER, STEP, f"layer{l}", "ce")] == pytest.approx(ce, abs=3e-5), l
        tops.append(lp.argmax(-1))
    agree = torch.stack([t == tops[-1] for t in tops])  # (L+1, n, S)
    depth = np.zeros(y.shape)
    for l in range(len(tops) - 1, -1, -1):  # the first layer from which every later one agrees
        depth = np.where(agree[l:].all(0).numpy(), l, depth)
    assert got[(MEMBER, STEP, "", "prediction_depth")] == pytest.approx(depth.mean(), abs=1e-9)
    assert (artifacts(run, "lens") / "lens.tsv").read_text().startswith("layer\tkl_to_final\tce\n")


def test_tuned_lens_beats_the_logit_lens_and_its_translators_reproduce_it(demo):
    from pythia.mechanisms.lens import TunedLens, held_out_sums

    run, rows = demo
    got = pick(rows, "lens", member=TUNED, step=20)
    L = run.member(TUNED).checkpoint(20).load().config.num_layers
    assert {t for _, _, t, m in got if m == "tuned_kl_to_final"} == {f"layer{l}" for l in range(L)}
    for l in range(L):
        assert got[(TUNED, 20, f"layer{l}", "tuned_kl_to_final")] < got[(TUNED, 20, f"layer{l}", "kl_to_final")]
    folder = artifacts(run, "lens", TUNED, 20)
    lens = TunedLens.load(folder / "tuned_lens.safetensors")
    assert len(lens.translators) == L
    windows = held_out_windows(json.loads((folder / "windows.json").read_text()))
    again = held_out_sums(run.member(TUNED).checkpoint(20).load(), windows, lens=True, tuned=lens)
    for l in range(L):
        assert again.tuned_kl[l] / again.positions == pytest.approx(got[(TUNED, 20, f"layer{l}", "tuned_kl_to_final")],
                                                                    rel=1e-6)


def test_rerun_is_bit_identical_and_a_hub_cache_gives_the_same_numbers(demo, quick_demo, quick_hub, tmp_path,
                                                                      monkeypatch):
    from pythia.analysis.runner import run_analyses

    run, rows = demo
    out, _ = quick_demo
    member = sorted(m.name for m in run.members)[0]  # the member quick_hub lays out
    options = mechanism_options(run.spec.data.seq_len)
    key = lambda r: (r["analysis"], r["step"], r["task"] or "", r["metric"])  # noqa: E731
    tables = []
    for name in ("a", "b"):
        again = open_run(out, results_dir=tmp_path / name)
        assert run_analyses(again, "icl,heads,lens", members=[member], steps="0,20", options=options,
                            progress=False).ok
        tables.append({key(r): r["value"] for r in again.results().rows() if r["analysis"] in ("icl", "heads", "lens")})
    assert tables[0] == tables[1]  # same inputs, same numbers
    for rel in (f"icl/{member}/step20/loss_by_position.tsv", f"icl/{member}/step20/windows.json",
                f"lens/{member}/step0/lens.tsv", f"heads/probe_n{options['probe_n']}_r{options['probe_len']}_R4_seed0.npy"):
        assert (tmp_path / "a" / "artifacts" / rel).read_bytes() == (tmp_path / "b" / "artifacts" / rel).read_bytes()
    theirs = {key(r): r["value"] for r in rows if r["member"] == member and r["step"] in (0, 20)}
    assert tables[0] == pytest.approx(theirs, abs=1e-9)  # the demo's own sweep (its thread count may differ)

    cache, repo = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub = open_run(repo, results_dir=tmp_path / "hub")
    hub.hub_seq_len = run.spec.data.seq_len  # the demo's context (a real Pythia repo: 2048)
    hub_opts = {**options, "held_out_data": run.spec.data.valid}
    assert run_analyses(hub, "icl,heads,lens", steps="20", options=hub_opts, progress=False).ok
    on_hub = {key(r): r["value"] for r in hub.results().rows()}
    assert on_hub == {k: v for k, v in tables[0].items() if k[1] == 20}


def test_bad_input_is_refused_by_name(quick_demo, quick_hub, tmp_path, monkeypatch, capsys):
    from pythia.cli import main

    out, _ = quick_demo
    res = ["--results-dir", str(tmp_path / "res")]
    T = open_run(out).spec.data.seq_len + 1
    cases = [
        (["analyze", str(out), "icl", "--icl-late", "1000"], f"--icl-late 1000 is outside the run's context: positions are k = 2..{T}"),
        (["analyze", str(out), "icl", "--icl-early", "1"], "--icl-early 1 is outside"),
        (["analyze", str(out), "heads", "--probe-len", "40"], "longer than the context"),
        (["analyze", str(out), "heads", "--probe-repeats", "1"], "--probe-repeats must be >= 2"),
    ]
    cache, repo = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    cases += [
        (["analyze", repo, "icl"], "--held-out-data PREFIX"),
        (["analyze", repo, "lens", "--tuned", "true", "--held-out-data", str(out / "data" / "valid")],
         "lens --tuned trains on the member's training data"),
    ]
    for argv, message in cases:
        assert main(argv + res) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "res" / "units").exists()  # refused before any work

    import pythia
    from pythia.hooked import MissingExtraError

    monkeypatch.setitem(sys.modules, "transformer_lens", None)
    monkeypatch.setitem(sys.modules, "transformer_lens.model_bridge", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'pythia-suite\[interp\]'"):
        pythia.load_hooked(out, member=MEMBER)


def test_load_hooked_gives_our_logits_from_a_demo_a_step_folder_and_a_hub_cache(quick_demo, quick_hub, monkeypatch):
    import pythia

    out, _ = quick_demo
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, 1024, size=(2, 48)))
    cache, repo = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub_member = repo.split("/")[-1]
    first = sorted(p.name for p in (out / "run").iterdir() if (p / "step0").is_dir())[0]
    for source, member, revision, ours in (
            (out, MEMBER, "step10", (out / "run" / MEMBER, "step10")),
            (out / "run" / MEMBER / "step4", None, None, (out / "run" / MEMBER, "step4")),
            (repo, hub_member, "step20", (out / "run" / first, "step20"))):
        tl = pythia.load_hooked(source, member=member, revision=revision)
        with torch.no_grad():
            torch.testing.assert_close(tl(ids), pythia.load_model(*ours)(ids), atol=1e-5, rtol=0)


def test_readme_nnsight_example_on_a_step_folder(quick_demo):
    pytest.importorskip("nnsight")
    from nnsight import TransformersModel

    import pythia
    from pythia.mechanisms.internals import run_internals

    out, _ = quick_demo
    folder = out / "run" / MEMBER / "step20"
    lm = TransformersModel(str(folder), task="text-generation", dispatch=True)  # as in the README
    with lm.trace("def __init__(self"):
        resid = lm.gpt_neox.layers[1].output.save()  # the residual stream after block 2
        logits = lm.output.logits.save()
    ids = torch.as_tensor([lm.tokenizer("def __init__(self")["input_ids"]])
    ours = pythia.load_model(folder)
    got = run_internals(ours, ids)
    with torch.no_grad():
        torch.testing.assert_close(resid, got.resid[2], atol=1e-5, rtol=0)
        torch.testing.assert_close(logits, ours(ids), atol=1e-5, rtol=0)


def test_phase_change_is_the_largest_rise_between_checkpoints():
    from pythia.analysis.phase_change import largest_change

    assert largest_change({0: 0.1, 10: 0.12, 20: 0.7, 40: 0.8}, 1) == (20, pytest.approx(0.58))
    assert largest_change({0: 0.0, 10: -0.1, 20: -1.5, 40: -1.6}, -1) == (20, pytest.approx(-1.4))
    assert largest_change({5: 1.0}, 1) is None
