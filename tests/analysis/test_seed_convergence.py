"""seed_convergence on the quick demo (two sizes x two seeds): the symmetric KL against
torch.nn.functional.kl_div on the full logits of both seeds; chunking; one seed: one warning."""
from __future__ import annotations

import warnings

import pytest
import torch

from pythia.analysis.runner import run_analyses
from pythia.run import open_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def direct_symmetric_kl(run, members, step, windows) -> float:
    """Mean over seed pairs of the mean over tokens of 1/2 [KL(a||b) + KL(b||a)], from full logits."""
    ids = torch.from_numpy(windows[:, :-1])
    logp = []
    for m in members:
        model = m.checkpoint(step).load().eval()
        with torch.no_grad():
            logp.append(torch.log_softmax(model(ids).float(), -1).reshape(-1, model.config.vocab_size))
    values = []
    for i in range(len(logp)):
        for j in range(i + 1, len(logp)):
            ab = torch.nn.functional.kl_div(logp[j], logp[i], log_target=True, reduction="none").sum(-1)  # KL(i||j)
            ba = torch.nn.functional.kl_div(logp[i], logp[j], log_target=True, reduction="none").sum(-1)
            values.append(float((0.5 * (ab + ba)).mean()))
    return sum(values) / len(values)


def test_symmetric_kl_equals_kl_div_on_full_logits(quick_demo, tmp_path):
    from pythia.analysis._probe import read_probe

    run = open_run(quick_demo[0], results_dir=tmp_path / "res")
    summary = run_analyses(run, "seed_convergence", options={"convergence_steps": "0,20"}, progress=False)
    assert summary.ok and summary.computed == ["seed_convergence"]
    rows = run.results().rows(analysis="seed_convergence")
    sizes = {m.shape for m in run.members}
    assert {(r["size"], r["step"]) for r in rows} == {(s, t) for s in sizes for t in (0, 20)}
    assert all(r["member"] == "" and r["metric"] == "symmetric_kl" and r["task"] == r["size"] for r in rows)
    windows = read_probe(run, {}, {}).windows
    for r in rows:
        seeds = [m for m in run.members if m.shape == r["size"] and m.base is None]
        assert len(seeds) == 2
        assert r["value"] == pytest.approx(direct_symmetric_kl(run, seeds, r["step"], windows), rel=1e-5)
        assert r["tokens"] == r["step"] * seeds[0].global_batch * seeds[0].seq_len
    assert all(r["value"] > 0 for r in rows)
    again = run_analyses(run, "seed_convergence", options={"convergence_steps": "0,20"}, progress=False)
    assert again.cached == ["seed_convergence"]
    small = run_analyses(run, "seed_convergence", options={"convergence_steps": "0,20", "kl_memory_mb": 1},
                         force=True, progress=False)  # ~50 rows per chunk instead of all at once
    assert small.computed == ["seed_convergence"]
    by_key = {(r["size"], r["step"]): r["value"] for r in rows}
    for r in run.results().rows(analysis="seed_convergence"):
        assert r["value"] == pytest.approx(by_key[r["size"], r["step"]], rel=1e-6)


def test_chunks_of_any_size_give_the_same_divergence():
    from pythia.divergence import chunk_rows, pairwise_symmetric_kl

    g = torch.Generator().manual_seed(0)
    hidden = [torch.randn(300, 16, generator=g) for _ in range(3)]
    weight = [torch.randn(97, 16, generator=g) for _ in range(3)]
    whole = pairwise_symmetric_kl(hidden, weight, budget=2**30)
    tiny = pairwise_symmetric_kl(hidden, weight, budget=6 * 97 * 4 * 7)
    assert chunk_rows(3, 97, 6 * 97 * 4 * 7) == 7
    assert set(whole) == {(0, 1), (0, 2), (1, 2)}
    for k in whole:
        assert tiny[k] == pytest.approx(whole[k], rel=1e-9)
        assert whole[k] > 0
    same = pairwise_symmetric_kl([hidden[0], hidden[0].clone()], [weight[0], weight[0].clone()])
    assert same[0, 1] == 0.0


def test_one_seed_is_skipped_with_one_warning(quick_demo, quick_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(quick_hub[0]))
    hub = open_run(quick_hub[1], results_dir=tmp_path / "res")
    hub.hub_seq_len = open_run(quick_demo[0]).spec.data.seq_len
    valid = open_run(quick_demo[0]).spec.data.valid
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        summary = run_analyses(hub, "seed_convergence", options={"probe_data": valid}, progress=False)
    assert summary.ok
    mine = [w for w in seen if "seed_convergence" in str(w.message)]
    assert len(mine) == 1 and "no size has two seeds" in str(mine[0].message)
    assert hub.results().rows(analysis="seed_convergence") == []
