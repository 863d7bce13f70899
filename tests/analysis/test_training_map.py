"""Training maps: the published PolyPythias map as data (detours = seeds 3 and 4), the HMM fit on
sequences with known phases, and the `training_map` analysis through the runner."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pythia.analysis import AnalysisError
from pythia.analysis._hmm import fit_map, held_out_rows
from pythia.analysis._mapdata import MapFormatError
from pythia.analysis.runner import run_analyses
from pythia.analysis.training_map import TrainingMap, plot_training_map
from pythia.analysis.weights import FEATURES

from .synthetic import put_series, put_unit, synthetic_run

PUBLISHED = Path(__file__).resolve().parents[1] / "fixtures" / "polypythias" / "training-maps.tsv"
PNG = b"\x89PNG\r\n\x1a\n"


def test_published_map_reads_and_singles_out_seeds_3_and_4(tmp_path):
    tm = TrainingMap.from_tsv(PUBLISHED)
    assert list(tm.seqs) == list(range(10)) and all(len(s.steps) == 27 for s in tm.seqs.values())
    assert tm.n_states == 5
    states = {seed: "".join(map(str, s.states)) for seed, s in tm.seqs.items()}
    assert states[0] == "000000000000011222233334444"  # the spec's test vectors
    assert states[3] == "000000000001122444441111111"
    assert states[4] == "000000000000112222244444000"
    assert tm.detours() == [3, 4]
    assert tm.majority() == frozenset(range(5))
    assert tm.seqs[4].scores[-1] == pytest.approx(0.22710477070400917)
    # the group column is exactly "the seeds that visit the same states"
    published = {}
    for line in PUBLISHED.read_text().splitlines()[1:]:
        f = line.split("\t")
        published[int(f[4])] = f[5]
    assert {seed: str(g) for seed, g in tm.groups().items()} == published
    assert tm.to_tsv().splitlines() == PUBLISHED.read_text().splitlines()
    assert plot_training_map(tm, tmp_path / "published.png").read_bytes().startswith(PNG)


def test_empirical_transitions_of_the_published_map():
    trans = TrainingMap.from_tsv(PUBLISHED).transitions()
    np.testing.assert_allclose(trans.sum(axis=1), 1.0)
    seq = TrainingMap.from_tsv(PUBLISHED).seqs
    leaving_0 = sum(int(a == 0) for s in seq.values() for a in s.states[:-1])
    zero_to_1 = sum(int(a == 0 and b == 1) for s in seq.values() for a, b in zip(s.states[:-1], s.states[1:]))
    assert trans[0, 1] == pytest.approx(zero_to_1 / leaving_0)


def test_no_majority_means_no_detours():
    from pythia.analysis._mapdata import Sequence

    seqs = {k: Sequence(np.arange(3), np.array(s), np.zeros(3)) for k, s in enumerate([[0, 1, 1], [0, 2, 2]])}
    assert TrainingMap(seqs).majority() is None and TrainingMap(seqs).detours() == []


def test_bad_map_files_are_named(tmp_path):
    bad = tmp_path / "map.tsv"
    bad.write_text("\tscore\tstate\tstep\tgroup\n0\t1.0\t0\t0\t[0]\n")
    with pytest.raises(MapFormatError, match=r"map\.tsv:1: header lacks column\(s\) \['seed'\]"):
        TrainingMap.from_tsv(bad)
    bad.write_text("\tscore\tstate\tstep\tseed\tgroup\n0\t1.0\t0\t0\t0\t[0]\n1\t1.0\tx\t1\t0\t[0]\n")
    with pytest.raises(MapFormatError, match=r"map\.tsv:3: field state: cannot read 'x'"):
        TrainingMap.from_tsv(bad)


def test_held_out_rows_are_sklearns_split():
    from sklearn.model_selection import train_test_split

    for n in (14, 105, 270):
        _, test = train_test_split(np.arange(n), test_size=0.2, random_state=2546)
        assert set(np.flatnonzero(held_out_rows(n))) == set(test)


def phased_sequences(seeds=6, steps=15, detour=(2, 4), features=14, seed=0):
    """Three phases (steps 0-9, 10-19, 20-29) with distinct feature means; `detour` seeds spend
    their middle phase in a fourth regime instead."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, size=(4, features))
    out = []
    for s in range(seeds):
        phase = np.repeat([0, 1, 2], steps // 3)
        if s in detour:
            phase[steps // 3: 2 * steps // 3] = 3
        out.append(means[phase] + rng.normal(0, 0.3, size=(steps, features)))
    return out


def test_hmm_recovers_three_clean_phases():
    fit = fit_map(phased_sequences(seeds=5, steps=15, features=4, detour=()), max_states=4)
    assert fit.n_states == 3
    assert all("".join(map(str, s)) == "000001111122222" for s in fit.states)  # numbered by first visit
    np.testing.assert_allclose(fit.transmat.sum(axis=1), 1.0)
    assert fit.transmat[0, 2] < 1e-6 and fit.transmat[1, 0] < 1e-6  # left to right
    assert {r["n"] for r in fit.selection} == {1, 2, 3, 4} and len(fit.selection) == 4 * 5
    assert fit_map(phased_sequences(seeds=5, steps=15, features=4, detour=()), n_states=2).n_states == 2


def test_forward_pass_matches_hmmlearn():
    """Our forward pass (used for held-out rows) against hmmlearn's own score on full sequences."""
    from pythia.analysis._hmm import _fit_one, _forward, _log_emission, held_out_loglik, zscore_within

    seqs = [zscore_within(s) for s in phased_sequences(seeds=3, steps=12, features=3, detour=())]
    model = _fit_one(3, 5329, (np.concatenate(seqs), [len(s) for s in seqs]))
    for x in seqs:
        assert _forward(model, _log_emission(model, x)) == pytest.approx(model.score(x), rel=1e-9)
    everything = [np.ones(len(x), dtype=bool) for x in seqs]
    np.testing.assert_allclose(held_out_loglik(model, seqs, everything), 0.0, atol=1e-9)  # nothing held out


def put_features(run, sequences, steps):
    for m, seq in zip(run.members, sequences):
        for step, row in zip(steps, seq):
            put_unit(run, "weights", m.name, step, dict(zip(FEATURES, row)))


def test_training_map_through_the_runner(tmp_path):
    run = synthetic_run(tmp_path, {"toy": list(range(6))})
    steps = list(range(0, 150, 10))
    put_features(run, phased_sequences(seeds=6, steps=15, detour=(2, 4), seed=2), steps)
    for m in run.members:
        put_series(run, "val_loss", m.name, "val_loss", {t: 5.0 / (1 + t) + 0.01 * m.seed for t in steps})
    assert run_analyses(run, "training_map", options={"hmm_max_states": 4}, progress=False).ok
    art = run.results_dir / "artifacts" / "training_map"
    tm = TrainingMap.from_tsv(art / "toy.tsv")
    assert tm.detours() == [2, 4]
    info = json.loads((art / "toy.json").read_text())
    assert info["n_states"] == 4 and info["detours"] == [2, 4]
    assert (art / "toy.png").read_bytes().startswith(PNG)
    rows = run.results().rows(analysis="training_map")
    detour = {r["member"]: r["value"] for r in rows if r["metric"] == "detour"}
    assert detour == {f"toy-seed{s}": float(s in (2, 4)) for s in range(6)}
    states = [r for r in rows if r["metric"] == "state" and r["member"] == "toy-seed0"]
    assert [r["step"] for r in states] == steps and [r["value"] for r in states][::5] == [0.0, 1.0, 3.0]
    scores = {(r["member"], r["step"]): r["value"] for r in rows if r["metric"] == "score"}
    loss = np.array([5.0 / (1 + t) + 0.01 * s for s in range(6) for t in steps])
    z = -(loss - loss.mean()) / loss.std()  # higher is better: the loss z-score flipped
    assert scores[("toy-seed3", 20)] == pytest.approx(z[3 * len(steps) + 2])
    first = (art / "toy.tsv").read_bytes()
    run_analyses(run, "training_map", options={"hmm_max_states": 4}, progress=False, force=True)
    assert (art / "toy.tsv").read_bytes() == first  # deterministic


def test_training_map_needs_weights_rows(tmp_path):
    run = synthetic_run(tmp_path, {"toy": [1, 2]})
    put_series(run, "val_loss", "toy-seed1", "val_loss", {0: 1.0})
    with pytest.raises(AnalysisError, match="no `weights` rows .* run the weights analysis first"):
        run_analyses(run, "training_map", progress=False)


def test_a_state_that_is_only_ever_last_is_not_decoded():
    """A state entered only at the last checkpoint of every seed is never left, so EM leaves its
    transition row all zero and hmmlearn refuses to decode with that model. The map skips such a
    fit (as it skips failed ones) and picks among the usable ones."""
    from hmmlearn.hmm import GaussianHMM

    from pythia.analysis._hmm import usable, zscore_within

    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(5):
        x = np.concatenate([np.zeros((6, 3)), np.full((5, 3), 5.0), np.full((1, 3), -9.0)])
        seqs.append(x + 0.05 * rng.standard_normal(x.shape))
    train = np.concatenate([zscore_within(s) for s in seqs]), [len(s) for s in seqs]
    model = GaussianHMM(n_components=3, covariance_type="diag", n_iter=50, random_state=0).fit(*train)
    assert not np.allclose(model.transmat_.sum(axis=1), 1.0)  # the dead end this guards against
    with pytest.raises(ValueError, match="transmat_"):
        model.predict(train[0])
    assert not usable(model)
    fit = fit_map(seqs, max_states=3)
    np.testing.assert_allclose(fit.transmat.sum(axis=1), 1.0)
    assert all(len(s) == 12 for s in fit.states)


def test_batched_logsumexp_is_scipys_bits():
    """The forward pass steps all sequences at once; each step must give scipy's logsumexp bit
    for bit (so held-out scores, hence the chosen number of states, are what one call per
    sequence gave), impossible transitions (log 0) and ties at the maximum included."""
    from scipy.special import logsumexp

    from pythia.analysis._hmm import _logsumexp_over_previous

    rng = np.random.default_rng(3)
    for trial in range(400):
        n, batch = int(rng.integers(1, 9)), int(rng.integers(1, 6))
        alpha = rng.normal(size=(batch, n)) * 10 ** rng.uniform(-2, 3)
        trans = rng.random((n, n)) * (rng.random((n, n)) > 0.3)
        alpha[:, 0] = -np.inf if trial % 5 == 0 else alpha[:, 0]
        alpha[:, -1] = alpha[:, 0] if trial % 3 == 0 else alpha[:, -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_a = np.log(trans / np.maximum(trans.sum(axis=1, keepdims=True), 1e-300))
            want = np.stack([logsumexp(a[:, None] + log_a, axis=0) for a in alpha])
        got = _logsumexp_over_previous(alpha[:, :, None] + log_a[None])
        np.testing.assert_array_equal(got, want)


def test_map_hmm_fits_hmmlearns_model_bit_for_bit():
    """The map's GaussianHMM (posteriors normalised without scipy's dispatch) ends EM with
    hmmlearn's very parameters, and its row-wise logsumexp is scipy's, -inf rows included."""
    from hmmlearn.hmm import GaussianHMM
    from scipy.special import logsumexp

    from pythia.analysis._hmm import _gaussian_hmm, logsumexp_rows, zscore_within

    rng = np.random.default_rng(5)
    for n in (1, 3, 8):
        a = rng.normal(size=(50, n)) * 30
        a[rng.random(a.shape) < 0.2] = -np.inf
        a[7] = -np.inf
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(logsumexp_rows(a), logsumexp(a, axis=1, keepdims=True))
    seqs = [zscore_within(s) for s in phased_sequences(seeds=4, steps=15, features=4, detour=(1,))]
    train = np.concatenate(seqs), [len(s) for s in seqs]
    for n in (2, 4):
        ours = _gaussian_hmm()(n_components=n, covariance_type="diag", n_iter=200, random_state=4642).fit(*train)
        theirs = GaussianHMM(n_components=n, covariance_type="diag", n_iter=200, random_state=4642).fit(*train)
        assert list(ours.monitor_.history) == list(theirs.monitor_.history)
        for name in ("startprob_", "transmat_", "means_", "covars_"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
