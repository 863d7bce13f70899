"""Memorization vs duplicates (issues 10, 12): the counts the analysis stores beside the scores
equal a brute-force count over the order's samples; its bins, fractions and rank correlation
equal an independent computation on the stored scores and counts; stored scores are reused when
only the counts are added; bad input is named."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from pythia.analysis.base import AnalysisError
from pythia.analysis.memorization import Memorization, duplicate_rows
from pythia.analysis.memorization_store import Positions, compute_chunked, compute_duplicates, load_scores
from pythia.analysis.runner import run_analyses
from pythia.run import open_run

MEMBER = "d32-l2-seed1"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def brute_counts(order, positions, until_step: int, batch: int, length: int, eod: int = 0) -> np.ndarray:
    """Per position, occurrences of its first `length` tokens in the samples of positions
    [0, until_step x batch), starting at an input token (offset < seq_len) and fitting in the
    sample; -1 where the window holds an end-of-document token before its last token (it spans
    two documents: every document ends with EOD and holds no other, checked by the caller)."""
    S = order.seq_len
    trained = order.samples(np.arange(until_step * batch))  # (N, S + 1)
    starts = min(S, S + 2 - length)  # offsets r < S with r + length <= S + 1
    windows = sliding_window_view(trained, length, axis=1)[:, :starts].reshape(-1, length)
    out = []
    for w in order.samples(np.asarray(positions))[:, :length]:
        out.append(-1 if (w[:-1] == eod).any() else int(np.all(windows == w, 1).sum()))
    return np.array(out, np.int64)


def log2_bin(c: int) -> str:
    """The analysis' task for a count, written out independently of its searchsorted."""
    if c < 0:
        return "duplicates=uncountable"
    if c == 0:
        return "duplicates=0:1"
    k = (c - 1).bit_length()  # 1 -> 0, 2 -> 1, 3..4 -> 2, 5..8 -> 3
    return f"duplicates={1 if k == 0 else 2 ** (k - 1) + 1}:{2 ** k + 1}"


def expected_rows(scores: np.ndarray, counts: np.ndarray, cont: int) -> dict:
    from scipy.stats import rankdata

    out = {}
    labels = np.array([log2_bin(int(c)) for c in counts])
    for label in set(labels.tolist()):
        sel = labels == label
        out[(label, "sequences")] = int(sel.sum())
        out[(label, "memorized_frac")] = float(np.mean(scores[sel] == cont))
        out[(label, "mean_score")] = float(np.mean(scores[sel] / cont))
    ok = counts >= 0
    out[("duplicates", "countable")] = int(ok.sum())
    rc, rs = rankdata(counts[ok]), rankdata(scores[ok])  # Spearman = Pearson of the (average) ranks
    out[("duplicates", "spearman")] = float(np.corrcoef(rc, rs)[0, 1]) if rc.std() and rs.std() else None
    return out


def check_rows(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == (None if v is None else pytest.approx(v)), k


def test_counts_match_brute_force_and_bins_match_numpy(quick_demo, tmp_path):
    """Short windows (2-token prompt, 1-token continuation) so that the counts spread over
    several bins, over positions beyond those trained (count 0 there)."""
    out, _ = quick_demo
    run = open_run(out / "run", results_dir=tmp_path / "r")
    member = run.member(MEMBER)
    order, B = member.order(), member.global_batch
    ds = order.dataset
    assert all(int(ds[i][-1]) == 0 and not (np.asarray(ds[i][:-1]) == 0).any() for i in range(len(ds)))
    opts = {"duplicates": True, "ngram_index": str(tmp_path / "sa"), "prompt_len": 2, "cont_len": 1,
            "positions": "0:400"}
    assert run_analyses(run, "memorization", members=MEMBER, steps="10,20", device="cpu", progress=False,
                        options=opts).ok
    rows = run.results().rows(analysis="memorization", member=MEMBER)
    for step in (10, 20):
        stored = load_scores(run, MEMBER, step)
        counts = stored.duplicates
        assert counts.dtype == np.int32 and stored.duplicates_meta["until_step"] == step
        assert np.array_equal(counts, brute_counts(order, stored.positions, step, B, 3))
        trained = stored.positions < step * B
        assert np.all(counts[trained & (counts >= 0)] >= 1) and (counts[~trained] == 0).any()
        assert counts.max() >= 9 and len(np.unique(counts)) >= 6  # several log2 bins, not just 0/1
        got = {(r["task"], r["metric"]): r["value"] for r in rows
               if r["step"] == step and r["task"].startswith("duplicates")}
        check_rows(got, expected_rows(stored.scores, counts.astype(np.int64), 1))
        assert got[("duplicates", "spearman")] is not None
    s10, s20 = load_scores(run, MEMBER, 10).duplicates, load_scores(run, MEMBER, 20).duplicates
    assert np.all(s10 <= s20) and (s10 < s20).any()  # counts grow with the step they run up to
    assert (tmp_path / "sa").is_dir()  # the index went where ngram_index said (the demo's own is data/train.sa)


def test_bins_over_wide_counts(tmp_path):
    """duplicate_rows on stored scores and counts from 0 to 10^6, every bin edge included."""
    rng = np.random.default_rng(0)
    edges = [1, 2, 3, 4, 5, 8, 9, 16, 17, 1024, 1025, 10 ** 6]
    counts = np.concatenate([[-1, -1, 0], edges, rng.integers(-1, 3000, 500)]).astype(np.int64)
    scores = np.minimum(32, rng.integers(0, 20, counts.size) + (np.log2(np.maximum(counts, 1)) * 2).astype(int))
    folder = tmp_path / "art"
    pos = Positions(100, 100 + counts.size)
    meta = {"member": "m", "step": 5, "prompt_len": 32, "cont_len": 32, "score": "full"}
    compute_chunked(folder, pos, meta, lambda p: scores[p - 100], chunk=64)
    compute_duplicates(folder, pos, {"until_step": 5}, lambda p: counts[p - 100], chunk=64)
    assert not list(folder.glob("*partial*"))
    stored = load_scores(folder)
    assert np.array_equal(stored.duplicates, counts)
    got = {(r.task, r.metric): r.value for r in duplicate_rows(stored)}
    want = expected_rows(scores, counts, 32)
    check_rows(got, want)
    assert got[("duplicates=1025:2049", "sequences")] >= 1 and ("duplicates=524289:1048577", "sequences") in got
    # counts of other positions are not joined to these scores
    compute_duplicates(folder, Positions(0, counts.size), {"until_step": 5}, lambda p: counts[p], chunk=64)
    assert load_scores(folder).duplicates is None


def test_stored_scores_are_reused_unless_forced(quick_demo, tmp_path, monkeypatch):
    """Adding duplicates=True to a scored checkpoint counts without loading the model; Pythia's
    64-token windows; the cache key without the option is the one from before it existed."""
    import pythia.memorization as engine

    out, _ = quick_demo
    run = open_run(out / "run", results_dir=tmp_path / "r")
    assert run_analyses(run, "memorization", members=MEMBER, steps="20", device="cpu", progress=False).ok
    plain = load_scores(run, MEMBER, 20)
    assert plain.duplicates is None
    key = Memorization().cache_key("d")
    assert set(key["options"]) == {"positions", "sample", "sample_seed", "method", "prefix_only", "prompt_len",
                                   "cont_len", "allow_eod", "when_bins"}  # unchanged: old caches stay valid

    def refuse(*a, **kw):
        raise RuntimeError("scored again")

    monkeypatch.setattr(engine, "score_sequences", refuse)
    opts = {"duplicates": True, "ngram_index": str(tmp_path / "sa")}
    done = run_analyses(run, "memorization", members=MEMBER, steps="20", device="cpu", progress=False, options=opts)
    assert done.ok and len(done.computed) == 1
    both = load_scores(run, MEMBER, 20)
    assert np.array_equal(both.scores, plain.scores)
    member = run.member(MEMBER)
    want = brute_counts(member.order(), both.positions, 20, member.global_batch, 64)
    assert np.array_equal(both.duplicates, want) and set(np.unique(want)) <= {-1, 1}
    got = {(r["task"], r["metric"]): r["value"] for r in run.results().rows(analysis="memorization", member=MEMBER)}
    check_rows({k: v for k, v in got.items() if k[0].startswith("duplicates")},
               expected_rows(both.scores, want, 32))
    assert run_analyses(run, "memorization", members=MEMBER, steps="20", device="cpu", progress=False,
                        options=opts).cached
    forced = run_analyses(run, "memorization", members=MEMBER, steps="20", device="cpu", progress=False,
                          options=opts, force=True)
    assert forced.failed and "scored again" in forced.failed[0]


def test_counting_resumes_after_a_kill(quick_demo, tmp_path, monkeypatch):
    """Killed while counting: the rerun scores nothing again and counts only the missing chunks."""
    import pythia.memorization as engine
    from pythia.data.counts import TermCounter

    real, calls, kill_at = TermCounter.sequence_counts, [], [3]

    class Killed(BaseException):
        """Stops the run like a kill -9 (the runner only catches Exception)."""

    def flaky(self, *a, **kw):
        calls.append(1)
        if len(calls) in kill_at:
            raise Killed
        return real(self, *a, **kw)

    monkeypatch.setattr(TermCounter, "sequence_counts", flaky)
    run = open_run(quick_demo[0] / "run", results_dir=tmp_path / "r")
    opts = {"duplicates": True, "ngram_index": str(tmp_path / "sa"), "mem_chunk": 32}  # 160 positions: 5 chunks
    with pytest.raises(Killed):
        run_analyses(run, "memorization", members=MEMBER, steps="20", device="cpu", progress=False, options=opts)
    folder = run.results_dir / "artifacts/memorization" / MEMBER / "step20"
    assert (folder / "scores").is_dir() and len(list(folder.glob("dup-partial-*/chunk-*.npy"))) == 2
    calls.clear()
    kill_at.clear()
    monkeypatch.setattr(engine, "score_sequences", lambda *a, **kw: pytest.fail("scored again"))
    assert run_analyses(run, "memorization", members=MEMBER, steps="20", device="cpu", progress=False,
                        options=opts).ok
    assert len(calls) == 3 and not list(folder.glob("*partial*"))
    done = load_scores(run, MEMBER, 20)
    member = run.member(MEMBER)
    assert np.array_equal(done.duplicates, brute_counts(member.order(), done.positions, 20, member.global_batch, 64))


def test_bad_input_is_named(quick_demo, quick_hub, monkeypatch, tmp_path):
    from pythia.data.preshuffle import export_preshuffled

    cache, repo = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    opts = {"duplicates": True, "ngram_index": str(tmp_path / "sa")}
    with pytest.raises(AnalysisError, match="no training dataset.*data=PREFIX"):
        run_analyses(open_run(repo, results_dir=tmp_path / "nodata"), "memorization", steps="20", progress=False,
                     options=opts)
    order = open_run(quick_demo[0] / "run").member(MEMBER).order()
    prefix = tmp_path / "pre"
    export_preshuffled(order, prefix, num_positions=160, progress=False)
    hub = open_run(repo, data=str(prefix), results_dir=tmp_path / "h")  # 160 rows, a global batch of 1024
    with pytest.raises(AnalysisError, match="--duplicates: .* step 20: .*outside 0..1"):
        run_analyses(hub, "memorization", steps="20", device="cpu", progress=False,
                     options={**opts, "positions": "0:16"})
    (tmp_path / "file").write_text("not a folder")
    run = open_run(quick_demo[0] / "run", results_dir=tmp_path / "r")
    with pytest.raises(AnalysisError, match=f"--duplicates: {MEMBER}: cannot open the n-gram index"):
        run_analyses(run, "memorization", members=MEMBER, steps="4", device="cpu", progress=False,
                     options={"duplicates": True, "ngram_index": str(tmp_path / "file")})
