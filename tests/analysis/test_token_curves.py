"""token_curves on the quick demo: surprisals against transformers, the member statistics
against a plain loop over the stored matrix, the n-gram fits against numpy's least squares on
counts brute-forced from the batches, the pass shared with val_loss, resumable per checkpoint."""
from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from pythia.analysis.base import AnalysisError
from pythia.analysis.runner import run_analyses
from pythia.run import open_run
from tests.data.ngram_brute import training_stream

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MEMBER = "d32-l2-seed1"


@pytest.fixture(scope="module")
def curves(quick_demo, tmp_path_factory):
    """token_curves and val_loss on two members of the quick demo, into a results folder of its own."""
    out, _ = quick_demo
    run = open_run(out, results_dir=tmp_path_factory.mktemp("curves") / "results")
    summary = run_analyses(run, "val_loss,token_curves", members=[MEMBER, "d64-l2-seed2"], progress=False)
    assert summary.ok, summary.format()
    return run


def rows_of(run, member=MEMBER, **kw):
    return [r for r in run.results().rows(analysis="token_curves", **kw) if r["member"] == member]


def test_surprisals_equal_transformers_cross_entropy(curves):
    import torch
    import transformers

    member = curves.member(MEMBER)
    got = member.token_curves()
    windows = got["tokens"]
    assert got["surprisal"].dtype == np.float16 and got["surprisal"].shape == (len(member.steps),) + (
        windows.shape[0], windows.shape[1] - 1)
    assert list(got["steps"]) == member.steps
    for i in (0, len(member.steps) - 1):
        hf = transformers.GPTNeoXForCausalLM.from_pretrained(member.checkpoint(member.steps[i]).path).eval()
        ids = torch.from_numpy(windows)
        with torch.no_grad():
            logits = hf(ids[:, :-1]).logits.float()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                               reduction="none").reshape(windows.shape[0], -1).numpy()
        np.testing.assert_allclose(got["surprisal"][i].astype(np.float32), ce, rtol=2e-3, atol=2e-3)
        mean = [r["value"] for r in rows_of(curves, metric="mean_surprisal") if r["step"] == member.steps[i]]
        assert mean == [pytest.approx(float(ce.mean()), rel=1e-5)]


def test_val_loss_is_the_same_pass(curves):
    """On val_loss's windows, mean_surprisal is val_loss's number, summed as validation sums it."""
    import torch

    from pythia.loss import token_loss_sum

    val = {r["step"]: r["value"] for r in curves.results().rows(analysis="val_loss") if r["member"] == MEMBER}
    mean = {r["step"]: r["value"] for r in rows_of(curves, metric="mean_surprisal")}
    assert val == mean and len(val) == len(curves.member(MEMBER).steps)
    windows = curves.member(MEMBER).token_curves()["tokens"]
    model = curves.member(MEMBER).checkpoint(20).load()
    total = 0.0
    with torch.no_grad():
        for a in range(0, len(windows), 8):
            total += float(token_loss_sum(model, windows[a:a + 8])[0])
    assert val[20] == total / (windows.shape[0] * (windows.shape[1] - 1))  # bit for bit


def test_one_forward_pass_for_both(quick_demo, tmp_path, monkeypatch):
    import pythia.loss

    calls = []
    real = pythia.loss.token_losses
    monkeypatch.setattr(pythia.loss, "token_losses", lambda *a, **k: calls.append(1) or real(*a, **k))
    run = open_run(quick_demo[0], results_dir=tmp_path / "res")
    assert run_analyses(run, "token_curves,val_loss", members=[MEMBER], steps="0", progress=False).ok
    windows = run.member(MEMBER).token_curves()["tokens"]
    assert len(calls) == math.ceil(len(windows) / 8)


def test_member_statistics_equal_a_plain_loop(curves):
    member = curves.member(MEMBER)
    got = member.token_curves()
    steps, s = [int(x) for x in got["steps"]], got["surprisal"]
    late = max(1, math.ceil(len(steps) / 4))
    W, P = s.shape[1:]
    aoa, forg, var = np.zeros((W, P), np.int64), np.zeros((W, P)), np.zeros((W, P))
    for w in range(W):
        for p in range(P):
            curve = [float(s[k, w, p]) for k in range(len(steps))]
            half = curve[0] - (curve[0] - min(curve)) / 2
            aoa[w, p] = next(t for t, v in zip(steps, curve) if v <= half)
            forg[w, p] = curve[-1] - min(curve)
            tail = curve[-late:]
            mean = sum(tail) / len(tail)
            var[w, p] = math.sqrt(sum((v - mean) ** 2 for v in tail) / len(tail))
    assert np.array_equal(got["aoa"], aoa)
    np.testing.assert_allclose(got["forgettability"], forg, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["variability"], var, rtol=1e-5, atol=1e-6)
    assert len(set(aoa.reshape(-1).tolist())) > 2  # tokens are learned at different steps
    acquired = {r["step"]: r["value"] for r in rows_of(curves, metric="acquired_frac")}
    assert acquired == {t: pytest.approx(float(np.mean(aoa <= t))) for t in steps}
    # per frequency bucket: the median age and mean forgettability of the tokens seen 2^k..2^(k+1) times
    count = got["count"]
    assert (count >= 0).all()
    buckets = {}
    for c, a, f in zip(count.reshape(-1), aoa.reshape(-1), forg.reshape(-1)):
        label = "freq=0" if c == 0 else f"freq=2^{int(math.log2(c))}:2^{int(math.log2(c)) + 1}"
        buckets.setdefault(label, []).append((a, f))
    medians = {r["task"]: r["value"] for r in rows_of(curves, metric="aoa_median")}
    means = {r["task"]: r["value"] for r in rows_of(curves, metric="forgettability_mean")}
    assert set(medians) == set(buckets) | {""} and len(buckets) > 3
    for label, pts in buckets.items():
        assert medians[label] == pytest.approx(float(np.median([a for a, _ in pts])))
        assert means[label] == pytest.approx(sum(f for _, f in pts) / len(pts), rel=1e-5)
    forgotten = rows_of(curves, metric="forgotten")
    assert len(forgotten) == 10 and forgotten[0]["value"] == pytest.approx(float(forg.max()))
    assert all("⟦" in r["task"] for r in forgotten)


def brute_ngram_counts(member, until: int, windows: np.ndarray):
    """Unigram counts (every id) and the probe's bigram counts, scanning each sample the member
    trained on in updates 0..until-1 (bigrams inside one document of the stream)."""
    order = member.order()
    toks, slot = training_stream(order)
    S, B = order.seq_len, member.global_batch
    uni = np.zeros(1 << 16, np.int64)  # uint16 token ids
    wanted = {(int(a), int(b)) for a, b in zip(windows[:, :-1].reshape(-1), windows[:, 1:].reshape(-1))}
    bi = {}
    for k in range(until * B):
        j = int(order.shuffle_idx[k])
        w, sl = toks[j * S:j * S + S + 1], slot[j * S:j * S + S + 1]
        np.add.at(uni, w[:S], 1)
        for i in range(S):
            pair = (int(w[i]), int(w[i + 1]))
            if pair in wanted and sl[i] == sl[i + 1]:
                bi[pair] = bi.get(pair, 0) + 1
    return uni, bi, until * B * S


@pytest.mark.parametrize("step", [10, 20])
def test_ngram_fits_equal_numpy_lstsq_on_brute_force_counts(curves, step):
    member = curves.member(MEMBER)
    got = member.token_curves()
    windows = got["tokens"]
    V = member.checkpoint(step).load().config.vocab_size
    uni, bi, total = brute_ngram_counts(member, step, windows)
    ctx, tok = windows[:, :-1].reshape(-1), windows[:, 1:].reshape(-1)
    u = -np.log((uni[tok] + 1) / (total + V))
    b = -np.log((np.array([bi.get((int(c), int(t)), 0) for c, t in zip(ctx, tok)]) + 1) / (uni[ctx] + V))
    y = got["surprisal"][list(got["steps"]).index(step)].astype(np.float64).reshape(-1)
    rows = {r["metric"]: r["value"] for r in rows_of(curves) if r["step"] == step}

    def r2(X):
        beta, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = y - X @ beta
        return 1 - resid @ resid / ((y - y.mean()) @ (y - y.mean())), beta

    one = np.ones_like(y)
    r2_u, _ = r2(np.stack([one, u], 1))
    r2_b, beta = r2(np.stack([one, u, b], 1))
    assert rows["r2_unigram"] == pytest.approx(r2_u, rel=1e-6, abs=1e-9)
    assert rows["r2_bigram"] == pytest.approx(r2_b, rel=1e-6, abs=1e-9)
    assert rows["coef_unigram"] == pytest.approx(beta[1], rel=1e-6)
    assert rows["coef_bigram"] == pytest.approx(beta[2], rel=1e-6)
    assert 0 < rows["r2_unigram"] <= rows["r2_bigram"] < 1


def test_step_zero_has_no_slopes(curves):
    rows = {r["metric"]: r["value"] for r in rows_of(curves) if r["step"] == 0}
    assert rows["r2_unigram"] == 0.0 and rows["coef_unigram"] is None and rows["coef_bigram"] is None


def test_recomputing_one_checkpoint_keeps_the_others_and_the_bytes(curves):
    path = Path(curves.results_dir) / "artifacts" / "token_curves" / f"{MEMBER}.npz"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    rows_before = rows_of(curves)
    summary = run_analyses(curves, "token_curves", members=[MEMBER], steps="10", force=True, progress=False)
    assert summary.computed == ["token_curves d32-l2-seed1/step10", "token_curves d32-l2-seed1 (member)"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # every step kept, same bytes
    assert rows_of(curves) == rows_before
    again = run_analyses(curves, "token_curves", members=[MEMBER], progress=False)
    assert again.computed == [] and "token_curves d32-l2-seed1 (member)" in again.cached


def test_several_members_and_the_fork(quick_demo, curves, tmp_path):
    """Members of one order share its count snapshots; a fork counts what it was fed."""
    from pythia.data.seen_ngrams import SeenNgramCounter, probe_pairs

    other = curves.member("d64-l2-seed2").token_curves()
    mine = curves.member(MEMBER).token_curves()
    assert np.array_equal(other["tokens"], mine["tokens"]) and np.array_equal(other["count"], mine["count"])
    assert not np.array_equal(other["surprisal"], mine["surprisal"])
    assert len(list((Path(curves.results_dir) / "artifacts" / "token_curves" / "_counts").iterdir())) == 1
    run = open_run(quick_demo[0], results_dir=tmp_path / "res")
    fork = [m for m in run.members if m.base][0]
    assert run_analyses(run, "token_curves", members=[fork.name], progress=False).ok
    got = fork.token_curves()
    assert list(got["steps"]) == fork.steps and fork.steps[0] > 0
    counter = SeenNgramCounter(fork.order(), fork.global_batch, probe_pairs(got["tokens"]),
                               fork.checkpoint(fork.steps[0]).load().config.vocab_size)
    assert np.array_equal(got["count"], counter.advance(fork.steps[-1]).unigram[got["tokens"][:, 1:]])


def test_bad_probes_are_named(quick_demo, tmp_path):
    run = open_run(quick_demo[0], results_dir=tmp_path / "res")
    with pytest.raises(AnalysisError, match=r"a probe of 100000 windows needs .* holds only \d+ windows"):
        run_analyses(run, "token_curves", options={"probe_windows": 100000}, progress=False)
    with pytest.raises(AnalysisError, match="--probe-windows must be >= 1"):
        run_analyses(run, "token_curves", options={"probe_windows": 0}, progress=False)
    with pytest.raises(AnalysisError, match="probe data .*nowhere"):
        run_analyses(run, "token_curves", options={"probe_data": str(tmp_path / "nowhere")}, progress=False)
    assert not (tmp_path / "res" / "units").exists()  # nothing half-written


def test_hub_runs(quick_demo, quick_hub, curves, tmp_path, monkeypatch):
    """A Hub repo: with its preshuffled data, curves and fits; without, curves only (one warning);
    without validation data, an error naming --probe-data."""
    from tests.hub_cache import hub_run_on_preshuffled

    out, _ = quick_demo
    local = open_run(out)
    member = local.member(sorted(m.name for m in local.members if m.base is None)[0])
    valid = local.spec.data.valid
    hub = hub_run_on_preshuffled(member, *quick_hub, tmp_path, monkeypatch, results="hub")
    same = {"probe_data": valid, "probe_windows": local.spec.eval_samples}  # the local run's probe
    assert run_analyses(hub, "token_curves", options=same, progress=False).ok
    (repo_member,) = hub.members
    got = repo_member.token_curves()
    assert list(got["steps"]) == member.steps and (got["count"] >= 0).all()
    fits = [r for r in hub.results().rows(analysis="token_curves", metric="r2_bigram") if r["step"] == 20]
    assert len(fits) == 1 and 0 < fits[0]["value"] < 1
    assert member.name == MEMBER
    np.testing.assert_array_equal(got["surprisal"], curves.member(MEMBER).token_curves()["surprisal"])

    blind = open_run(quick_hub[1], results_dir=tmp_path / "blind")
    blind.hub_seq_len = member.seq_len
    with pytest.raises(AnalysisError, match="--probe-data PREFIX"):
        run_analyses(blind, "token_curves", progress=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert run_analyses(blind, "token_curves", options={"probe_data": valid}, progress=False).ok
    assert len([w for w in seen if "no training data known" in str(w.message)]) == 1
    rows = blind.results().rows(analysis="token_curves")
    assert not [r for r in rows if r["metric"].startswith(("r2_", "coef_"))]
    assert {r["task"] for r in rows if r["metric"] == "aoa_median"} == {""}
    assert (blind.members[0].token_curves()["count"] == -1).all()
