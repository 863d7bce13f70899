"""The phenomenon where it exists: a token that enters the training data only at step S is
acquired after S, its bigram is counted 0 times before S, while a bigram present from the start
is acquired before S. A tiny model is trained here on a preshuffled corpus (row k = position k)
and read back as a Hub run with data=, as real Pythia checkpoints are."""
from __future__ import annotations

import numpy as np
import pytest

from pythia.analysis.runner import run_analyses
from pythia.run import open_run
from tests.hub_cache import add_revision

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S, B, ITERS, SWITCH, V = 16, 8, 40, 20, 32
A, OLD, NEW = 5, 6, 20  # A is followed by OLD before step SWITCH, by NEW (never seen before) from then on
CHECKPOINTS = (0, 5, 10, 15, 20, 25, 30, 35, 40)


def rows_with(follower: int, rng, n: int) -> np.ndarray:
    """n rows of S+1 tokens: random ids 7..15, with A followed by `follower` at 4 places."""
    rows = rng.integers(7, 16, (n, S + 1))
    for r in rows:
        for at in rng.choice(np.arange(0, S, 2), 4, replace=False):
            r[at], r[at + 1] = A, follower
    return rows


def write_items(prefix, rows) -> str:
    from pythia.data.indexed import IndexedDatasetBuilder

    with IndexedDatasetBuilder(prefix, np.uint16) as b:
        for r in rows:
            b.add_document(np.asarray(r))
    return str(prefix)


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    import torch

    from pythia.config import ModelConfig
    from pythia.hf import save_pretrained
    from pythia.loss import token_loss
    from pythia.model import GPTNeoX

    tmp = tmp_path_factory.mktemp("canary")
    rng = np.random.default_rng(0)
    train = np.concatenate([rows_with(OLD, rng, SWITCH * B), rows_with(NEW, rng, (ITERS - SWITCH) * B)])
    data = write_items(tmp / "train", train)
    probe = write_items(tmp / "probe", rows_with(NEW, np.random.default_rng(1), 6).reshape(-1)[None])
    torch.manual_seed(0)
    model = GPTNeoX(ModelConfig(name="canary", num_layers=2, hidden_size=32, num_heads=4, vocab_size=V,
                                max_seq_len=S))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cache = tmp / "hub"
    for step in range(ITERS + 1):
        if step in CHECKPOINTS:
            folder = save_pretrained(model, tmp / "ckpt" / f"step{step}")
            add_revision(cache, "test/canary", f"step{step}", folder)
        if step < ITERS:
            opt.zero_grad()
            token_loss(model, train[step * B:(step + 1) * B]).backward()
            opt.step()
    return tmp, cache, data, probe


def test_a_token_seen_only_from_step_s_is_acquired_after_s(canary, monkeypatch):
    from pythia.data.seen_ngrams import pair_codes, probe_pairs, seen_counts

    tmp, cache, data, probe = canary
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    run = open_run("test/canary", data=data, results_dir=tmp / "results")
    run.hub_batch, run.hub_iters, run.hub_seq_len = B, ITERS, S
    summary = run_analyses(run, "token_curves", options={"probe_data": probe, "probe_windows": 6}, progress=False)
    assert summary.ok, summary.format()
    got = run.members[0].token_curves()
    assert list(got["steps"]) == list(CHECKPOINTS)
    tokens, aoa = got["tokens"], got["aoa"]
    new = tokens[:, 1:] == NEW  # surprisal position k-1 holds token k
    assert new.sum() > 10 and (aoa[new] > SWITCH).all()
    # the bigram (A, NEW) is never counted before SWITCH, and counted after
    pairs = probe_pairs(tokens)
    i = int(np.searchsorted(pairs, pair_codes(A, NEW)))
    states = seen_counts(run.members[0].order(), B, CHECKPOINTS, pairs, V)
    assert [int(s.bigram[i]) for s in states if s.step <= SWITCH] == [0] * 5
    assert all(s.bigram[i] > 0 for s in states if s.step > SWITCH)
    assert (got["count"][new] == states[-1].unigram[NEW]).all() and states[4].unigram[NEW] == 0
    # control: a pair seen from the start (A followed by OLD) is learned early by the same model
    control = open_run("test/canary", data=data, results_dir=tmp / "control")
    control.hub_batch, control.hub_iters, control.hub_seq_len = B, ITERS, S
    early = write_items(tmp / "probe-old", rows_with(OLD, np.random.default_rng(2), 6).reshape(-1)[None])
    assert run_analyses(control, "token_curves", options={"probe_data": early, "probe_windows": 6},
                        steps=",".join(str(s) for s in CHECKPOINTS if s <= SWITCH), progress=False).ok
    seen = control.members[0].token_curves()
    assert (seen["aoa"][seen["tokens"][:, 1:] == OLD] <= SWITCH).all()
    fits = {r["step"]: r["value"] for r in run.results().rows(analysis="token_curves", metric="r2_bigram")}
    assert set(fits) == set(CHECKPOINTS)
