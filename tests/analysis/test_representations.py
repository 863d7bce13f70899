"""`representations` and `optimizer_state` on the quick demo (a suite of 2 sizes x 2 seeds and a
fork, whose studies ran both), on copies of it and on its first member laid out as a Hub cache.

Numbers are checked against direct numpy implementations (tests/test_matrix_stats.py) on the
stored activations and the checkpoints' weights, and the probe's activations, loss and
gradients against transformers' GPTNeoXForCausalLM."""
from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file as np_load

from pythia.analysis.base import AnalysisError
from pythia.analysis.runner import run_analyses
from pythia.results import ResultsStore
from pythia.run import open_run
from tests.test_matrix_stats import np_cka, np_condition, np_gini, np_hoyer, np_per

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPS = "representations"


def _rows(results_dir, analysis=REPS) -> dict:
    return {(r["member"], r["step"], r["task"], r["metric"]): r["value"]
            for r in ResultsStore(results_dir).rows(analysis=analysis)}


def _acts(results_dir, member, step) -> dict:
    return np_load(str(results_dir / "artifacts" / REPS / member / f"step{step}" / "activations.safetensors"))


def _base(run):
    return [m for m in run.members if m.base is None]


def _config(member) -> dict:
    """The checkpoint's config.json (HF names): num_hidden_layers, hidden_size."""
    return json.loads((member.checkpoint(0).path / "config.json").read_text())


def test_cka_rows_equal_numpy_on_the_stored_activations(quick_demo):
    out, _ = quick_demo
    run = open_run(out)
    res = run.results_dir
    rows = _rows(res)
    members = _base(run)  # the demo studies the base members (the fork has its own study)
    acts = {(m.name, s): _acts(res, m.name, s) for m in members for s in m.steps}
    layers = {m.name: _config(m)["num_hidden_layers"] + 1 for m in members}
    checked = 0
    for m in members:
        final = m.steps[-1]
        others = [o for o in members if o.shape == m.shape and o is not m]
        for i, s in enumerate(m.steps):
            for k in range(layers[m.name]):
                layer = f"layer{k}"
                x = acts[(m.name, s)][layer]
                assert x.dtype == np.float16 and x.shape == (32, _config(m)["hidden_size"])  # the demo's probe
                assert rows[(m.name, s, layer, "cka_final")] == pytest.approx(
                    np_cka(x, acts[(m.name, final)][layer]), rel=1e-9, abs=1e-12)
                if i:
                    assert rows[(m.name, s, layer, "cka_previous")] == pytest.approx(
                        np_cka(x, acts[(m.name, m.steps[i - 1])][layer]), rel=1e-9)
                else:
                    assert (m.name, s, layer, "cka_previous") not in rows
                want = np.mean([np_cka(x, acts[(o.name, s)][layer]) for o in others])
                assert rows[(m.name, s, layer, "cka_seeds")] == pytest.approx(want, rel=1e-9)
                checked += 1
        for k in range(layers[m.name]):
            assert rows[(m.name, final, f"layer{k}", "cka_final")] == pytest.approx(1.0, abs=1e-12)
    assert checked == sum(len(m.steps) * layers[m.name] for m in members)
    assert not any(k[0] not in layers for k in rows)  # nothing for the fork, which was not analysed
    # a canary: representations grow alike over training, the embeddings' first
    m = _base(run)[0]
    last = _config(m)["num_hidden_layers"]
    assert rows[(m.name, m.steps[-2], f"layer{last}", "cka_final")] > rows[(m.name, 0, f"layer{last}", "cka_final")]


def test_weight_statistics_equal_numpy(quick_demo):
    out, _ = quick_demo
    run = open_run(out)
    rows = _rows(run.results_dir)
    for m in _base(run)[:2]:
        for s in (0, m.steps[-1]):
            weights = np_load(str(m.checkpoint(s).path / "model.safetensors"))
            matrices = [n for n, w in weights.items() if n.endswith(".weight") and w.ndim == 2]
            assert len(matrices) == 2 + 4 * _config(m)["num_hidden_layers"]
            for name in matrices:
                w = weights[name]
                for metric, f, rel in (("per", np_per, 1e-5), ("condition", np_condition, 1e-3),
                                       ("hoyer", np_hoyer, 1e-9), ("gini", np_gini, 1e-9)):
                    assert rows[(m.name, s, name, metric)] == pytest.approx(f(w), rel=rel), (m.name, s, name, metric)


def test_probe_activations_loss_and_gradients_equal_transformers(quick_demo):
    """The probe (the first 32 held-out windows of 32 + 1 tokens), forward and backward in
    transformers: the stored last-position residuals, the loss and the gradient statistics."""
    import torch
    import transformers

    from pythia.data.indexed import IndexedDataset

    out, _ = quick_demo
    run = open_run(out)
    m = _base(run)[-1]
    step = m.steps[-2]
    ds = IndexedDataset(run.spec.data.valid)
    stream, i = [], 0
    while len(stream) < 32 * 32 + 1:
        stream += list(ds[i])
        i += 1
    windows = torch.tensor([stream[j * 32: j * 32 + 33] for j in range(32)], dtype=torch.long)
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(m.checkpoint(step).path).float().eval()
    last = []
    hook = hf.gpt_neox.layers[-1].register_forward_hook(
        lambda _m, _i, o: last.append((o[0] if isinstance(o, tuple) else o)[:, -1].detach()))
    result = hf(windows[:, :-1], output_hidden_states=True)
    hook.remove()
    logits = result.logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    loss.backward()
    acts = _acts(run.results_dir, m.name, step)
    want = [h[:, -1].detach() for h in result.hidden_states[:-1]] + last  # HF's last entry is after the final norm
    assert len(acts) == len(want) == _config(m)["num_hidden_layers"] + 1
    for k, w in enumerate(want):
        np.testing.assert_allclose(acts[f"layer{k}"].astype(np.float32), w.numpy(), rtol=2e-3, atol=2e-3)
    rows = _rows(run.results_dir)
    assert rows[(m.name, step, "", "probe_loss")] == pytest.approx(float(loss.detach()), rel=1e-5)
    params = dict(hf.named_parameters())
    params.setdefault("embed_out.weight", params.get("lm_head.weight"))  # transformers 5 names the head lm_head
    for name in ("gpt_neox.embed_in.weight", "gpt_neox.layers.0.attention.dense.weight",
                 "gpt_neox.layers.1.mlp.dense_h_to_4h.weight", "embed_out.weight"):
        g = params[name].grad.double().numpy()
        assert rows[(m.name, step, name, "grad_norm")] == pytest.approx(np.linalg.norm(g), rel=1e-4)
        assert rows[(m.name, step, name, "grad_hoyer")] == pytest.approx(np_hoyer(g), rel=1e-4)
        assert rows[(m.name, step, name, "grad_per")] == pytest.approx(np_per(g), rel=1e-4)


def test_rerun_computes_nothing_and_activations_are_deterministic(quick_demo, tmp_path):
    out, _ = quick_demo
    run = open_run(out)
    summary = run_analyses(run, f"{REPS},optimizer_state", members=[m.name for m in _base(run)], progress=False,
                           options={"probe_windows": 32, "probe_len": 32})
    assert summary.computed == [] and f"{REPS} (run)" in summary.cached
    m = _base(run)[0]
    fresh = open_run(out, results_dir=tmp_path / "res")
    assert run_analyses(fresh, REPS, members=[m.name], steps="4", progress=False,
                        options={"probe_windows": 32, "probe_len": 32}).ok
    rel = f"artifacts/{REPS}/{m.name}/step4/activations.safetensors"
    assert (tmp_path / "res" / rel).read_bytes() == (run.results_dir / rel).read_bytes()


def test_a_changed_checkpoint_recomputes_only_what_depends_on_it(quick_demo, tmp_path, monkeypatch):
    """A run whose step 4 of one member is replaced by that member's final weights: a re-run
    recomputes that checkpoint and only the CKA pairs it is part of; its cka_final becomes 1."""
    import pythia.analysis.representations as reps

    out, _ = quick_demo
    copy = tmp_path / "demo"
    shutil.copytree(out, copy, copy_function=os.link, ignore=shutil.ignore_patterns("report", "results"))
    shutil.copytree(out / "run" / "results", copy / "run" / "results")  # rewritten: a real copy
    member = _base(open_run(copy))[0]
    final = member.steps[-1]
    changed = copy / "run" / member.name / "step4"
    shutil.rmtree(changed)  # hard links: removing them leaves the demo's files alone
    shutil.copytree(copy / "run" / member.name / f"step{final}", changed, copy_function=os.link)
    calls = []
    real = reps.gram_cka
    monkeypatch.setattr(reps, "gram_cka", lambda a, b: calls.append(1) or real(a, b))
    run = open_run(copy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_analyses(run, REPS, members=[m.name for m in _base(run)], progress=False,
                               options={"probe_windows": 32, "probe_len": 32})
    assert summary.ok, summary.format() + "".join(str(w.message) for w in caught)
    assert summary.computed == [f"{REPS} {member.name}/step4", f"{REPS} (run)"]
    layers = _config(member)["num_hidden_layers"] + 1
    # step 4's activations are now the final's, so its pairs with the final (the final with itself),
    # with step 2 and with step 8 are pairs the final already had: one pair is new, with the other seed
    assert len(calls) == layers
    rows = _rows(copy / "run" / "results")
    for k in range(layers):
        assert rows[(member.name, 4, f"layer{k}", "cka_final")] == pytest.approx(1.0, abs=1e-12)
    before = _rows(out / "run" / "results")
    same = [k for k in rows if k[0] != member.name and k[3].startswith("cka_") and k[3] != "cka_seeds"]
    assert same and all(rows[k] == before[k] for k in same)  # other members' own CKA untouched


def test_probe_too_large_or_missing_is_refused_before_any_work(quick_demo, tmp_path):
    out, _ = quick_demo
    run = open_run(out, results_dir=tmp_path / "res")
    with pytest.raises(AnalysisError, match=r"--probe-windows 400 windows of 64 \+ 1 tokens is larger than the "
                                            r"validation split data.valid .* which holds \d+"):
        run_analyses(run, REPS, progress=False, options={"probe_windows": 400})
    with pytest.raises(AnalysisError, match="cannot read probe windows from --probe-data"):
        run_analyses(run, REPS, progress=False, options={"probe_data": str(tmp_path / "nope")})
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").rglob("*.json"))


def test_optimizer_state_skips_checkpoints_without_moments_with_one_warning(quick_demo, tmp_path):
    out, _ = quick_demo
    run = open_run(out, results_dir=tmp_path / "res")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_analyses(run, "optimizer_state", progress=False).ok
    skipped = [str(w.message) for w in caught if "optimizer_state" in str(w.message)]
    assert len(skipped) == 2  # one per reason: step 0 ("empty"), and those train.optimizer_state_every left out
    omitted = next(s for s in skipped if "optimizer_state_every" in s)
    assert "16 checkpoint(s)" in omitted and "d32-l2-seed1/step1" in omitted
    rows = _rows(tmp_path / "res", "optimizer_state")
    assert {(m, s) for m, s, _, _ in rows} == {(m.name, s) for m in run.members for s in (10, 20)}
    # the demo's own table holds the same rows (its studies ran the analysis on the base members)
    demo = _rows(out / "run" / "results", "optimizer_state")
    assert demo and all(rows[k] == pytest.approx(v, rel=1e-12) for k, v in demo.items())  # other thread counts


def test_on_a_hub_repo(quick_hub, quick_demo, tmp_path, monkeypatch):
    """Hub checkpoints: representations need a probe (--probe-data) and give the run folder's
    numbers; they keep no optimizer state, so optimizer_state skips them all with one warning."""
    cache, repo = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    out, _ = quick_demo
    hub = open_run(repo, results_dir=tmp_path / "hub")
    with pytest.raises(AnalysisError, match="--probe-data"):
        run_analyses(hub, REPS, progress=False)
    opts = {"probe_data": str(out / "data" / "valid"), "probe_windows": 32, "probe_len": 32}
    assert run_analyses(hub, REPS, steps="0,10,20", progress=False, options=opts).ok
    got = _rows(tmp_path / "hub")
    local = open_run(out)
    name = hub.member().name
    want = _rows(local.results_dir)
    first = _base(local)[0].name
    for (member, step, task, metric), value in got.items():
        if metric == "cka_previous":  # the previous analysed step differs: 0 here, 8 in the demo
            continue
        assert member == name
        # float32 SVDs on this test's one thread vs the demo's two: condition numbers agree to ~1e-7
        assert value == pytest.approx(want[(first, step, task, metric)], rel=1e-6, abs=1e-12), (step, task, metric)
    assert {s for _, s, _, m in got if m == "cka_final"} == {0, 10, 20}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_analyses(hub, "optimizer_state", progress=False).ok
    skipped = [str(w.message) for w in caught if "optimizer_state" in str(w.message)]
    assert len(skipped) == 1 and "7 checkpoint(s) skipped" in skipped[0] and "state.json" in skipped[0]
    assert _rows(tmp_path / "hub", "optimizer_state") == {}
