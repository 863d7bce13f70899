"""Memorization (issue 10): the two scoring methods agree with each other and with transformers'
generate; the analysis stores, resumes, exports and imports per-sequence scores; predictability;
Hub runs; bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from pythia.analysis.base import AnalysisError
from pythia.analysis.memorization import MemorizationPredictability, fraction_over_steps, predictability_matrix
from pythia.analysis.memorization_store import (Positions, compute_chunked, load_scores, precision_recall,
                                                read_memorized_parquet)
from pythia.analysis.runner import run_analyses
from pythia.config import custom_config
from pythia.generate import generate_greedy
from pythia.hf import to_hf_config
from pythia.memorization import score_sequences
from pythia.model import GPTNeoX
from pythia.run import open_run

V = 128


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_model(dtype=torch.float32):
    """A random model whose greedy choice is often the end-of-document id 0 unless suppressed."""
    torch.manual_seed(0)
    cfg = custom_config(num_layers=2, hidden_size=32, num_heads=4, vocab_size=V, gelu="exact")
    model = GPTNeoX(cfg).eval()
    with torch.no_grad():
        model.embed_out.weight.mul_(8)  # sharper logits: fewer repeats and near ties
        u = torch.randn(32)
        model.gpt_neox.final_layer_norm.bias.copy_(0.5 * u)
        model.embed_out.weight[0].add_(0.4 * u)  # token 0 favoured
    return cfg, model.to(dtype)


def to_hf(cfg, model):
    hf_cfg = transformers.GPTNeoXConfig(**{k: v for k, v in to_hf_config(cfg).items() if k != "pythia_config"})
    hf = transformers.GPTNeoXForCausalLM(hf_cfg).to(model.embed_out.weight.dtype).eval()
    hf.load_state_dict({("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in model.state_dict().items()})
    return hf


def constructed(model, n: int, seed: int = 1) -> torch.Tensor:
    """(n, 64): prompts with the model's own greedy continuation (memorized), then with one token
    changed at a random place, an end-of-document token placed, or a random continuation."""
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, V, (n, 32), generator=g)
    target = generate_greedy(model, prompts, 32, suppress=0)[:, 32:].clone()  # (inference tensor)
    r, k = torch.rand(n, generator=g), torch.randint(0, 32, (n,), generator=g)
    one = (r >= 0.15) & (r < 0.7)
    target[one, k[one]] = torch.randint(1, V, (int(one.sum()),), generator=g)
    eod = (r >= 0.7) & (r < 0.8)
    target[eod, k[eod]] = 0
    rnd = r >= 0.8
    target[rnd] = torch.randint(0, V, (int(rnd.sum()), 32), generator=g)
    return torch.cat([prompts, target], 1)


def batched(model, tokens, batch=256, **kw):
    return torch.cat([score_sequences(model, tokens[i:i + batch], **kw) for i in range(0, len(tokens), batch)])


def test_exact_equals_generate_on_thousands_of_sequences():
    """float64, so no near tie can flip an argmax between the two computation orders."""
    _, model = tiny_model(torch.float64)
    tokens = constructed(model, 2048)
    greedy = torch.cat([generate_greedy(model, tokens[i:i + 512, :32], 32, suppress=0)[:, 32:]
                        for i in range(0, 2048, 512)])  # the plain decoder, as the reference
    equal = greedy == tokens[:, 32:]
    want_full, want_prefix = equal.sum(1), equal.long().cumprod(1).sum(1)
    full = batched(model, tokens, method="exact", score="full")
    prefix = batched(model, tokens, method="exact", score="prefix")
    assert torch.equal(full, want_full)
    assert torch.equal(prefix, want_prefix)
    assert torch.equal(batched(model, tokens[:512], method="generate"), want_full[:512])
    top = torch.argsort(want_full, descending=True, stable=True)[:400]  # mostly memorized rows in one batch:
    assert torch.equal(score_sequences(model, tokens[top]), want_full[top])  # only the others are decoded
    assert torch.equal(full == 32, prefix == 32) and 250 < int((full == 32).sum()) < 400
    assert len(torch.unique(prefix)) == 33  # every first-mismatch position 0..31 occurs
    assert int(((full > prefix) & (prefix < 31)).sum()) > 500  # rows whose score needed decoding past m


def test_scores_match_transformers_generate():
    """Pythia's procedure itself: transformers generate(use_cache=False, min_length=64)."""
    cfg, model = tiny_model()
    hf = to_hf(cfg, model)
    tokens = constructed(model, 96, seed=2)
    prompts = tokens[:, :32]
    with torch.inference_mode():
        ref = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_length=64, min_length=64,
                          do_sample=False, use_cache=False, eos_token_id=0, pad_token_id=0)
        free = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=32, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    want = (ref[:, 32:] == tokens[:, 32:]).sum(1)
    want_free = (free[:, 32:] == tokens[:, 32:]).sum(1)
    assert (free[:, 32:] == 0).any() and not (ref[:, 32:] == 0).any()  # the suppression matters here
    after = [row[row.tolist().index(0):] for row in free[:, 32:] if 0 in row.tolist()]
    assert any((a != 0).any() for a in after)  # and transformers decodes on past an EOD, like ours
    for method in ("exact", "generate"):
        assert torch.equal(score_sequences(model, tokens, method=method), want), method
        assert torch.equal(score_sequences(model, tokens, method=method, suppress=None), want_free), method
    # other lengths: 8-token prompts, 16-token continuations (min_length = 24)
    with torch.inference_mode():
        short = hf.generate(tokens[:, :8], attention_mask=torch.ones_like(tokens[:, :8]), max_length=24,
                            min_length=24, do_sample=False, eos_token_id=0, pad_token_id=0)
    want_short = (short[:, 8:] == tokens[:, 8:24]).sum(1)
    for method in ("exact", "generate"):
        assert torch.equal(score_sequences(model, tokens[:, :24], 8, 16, method=method), want_short)


def test_score_arguments_are_checked():
    _, model = tiny_model()
    with pytest.raises(ValueError, match="tokens must be"):
        score_sequences(model, torch.zeros(2, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="method"):
        score_sequences(model, torch.zeros(2, 64, dtype=torch.long), method="beam")


# ---------------------------------------------------------------------------------------------
# the analysis on the quick demo


@pytest.fixture(scope="module")
def demo_results(quick_demo, tmp_path_factory):
    """The quick demo's run scored at steps 10 and 20 by both methods, in separate results folders."""
    out, _ = quick_demo
    base = tmp_path_factory.mktemp("mem")
    runs = {}
    for method in ("exact", "generate"):
        run = open_run(out / "run", results_dir=base / method)
        members = [m.name for m in run.members if m.base is None]  # the 4 trained members, not the fork
        summary = run_analyses(run, "memorization", members=members, steps="10,20", device="cpu", progress=False,
                               options={"method": method, "mem_batch": 64})
        assert summary.ok and len(summary.computed) == 8, summary.format()
        runs[method] = run
    return runs


def test_demo_methods_agree_and_match_transformers(demo_results):
    exact, generate = demo_results["exact"], demo_results["generate"]
    for m in (m for m in exact.members if m.base is None):
        for step in (10, 20):
            a, b = load_scores(exact, m.name, step), load_scores(generate, m.name, step)
            assert np.array_equal(a.positions, np.arange(step * 8))  # default: all trained positions
            assert a.scores.dtype == np.uint8 and np.array_equal(a.scores, b.scores)
            assert a.meta["method"] == "exact" and b.meta["method"] == "generate" and a.meta["eod_id"] == 0
    m = exact.member("d64-l2-seed1")
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(m.checkpoint(20).path).eval()
    tokens = torch.from_numpy(m.order().samples(np.arange(160))[:, :64])
    with torch.inference_mode():
        gen = hf.generate(tokens[:, :32], attention_mask=torch.ones_like(tokens[:, :32]), max_length=64,
                          min_length=64, do_sample=False, use_cache=False, eos_token_id=0, pad_token_id=0)
    want = (gen[:, 32:] == tokens[:, 32:]).sum(1).numpy()
    assert np.array_equal(load_scores(exact, m.name, 20).scores, want)


def test_demo_summary_rows(demo_results):
    run = demo_results["exact"]
    scores = load_scores(run, "d32-l2-seed2", 20)
    rows = {(r["task"], r["metric"]): r for r in run.results().rows(analysis="memorization", member="d32-l2-seed2")
            if r["step"] == 20}
    task = "positions=0:160"
    assert rows[(task, "sequences")]["value"] == 160
    assert rows[(task, "memorized_frac")]["value"] == pytest.approx(float((scores.scores == 32).mean()))
    assert rows[(task, "mean_score")]["value"] == pytest.approx(float(scores.scores.mean() / 32))
    hist = [rows[(task, f"score_hist_{k}")]["value"] for k in range(33)]
    assert hist == np.bincount(scores.scores, minlength=33).tolist()
    when = {t: r["value"] for (t, metric), r in rows.items() if t.startswith("trained_step=") and metric == "sequences"}
    assert sum(when.values()) == 160 and len(when) == 16
    first = min(when, key=lambda t: int(t.split("=")[1].split(":")[0]))
    assert first == "trained_step=0:1" and when[first] == 8  # positions 0..7 = the first batch
    assert rows[(first, "mean_score")]["value"] == pytest.approx(float(scores.scores[:8].mean() / 32))
    curve = fraction_over_steps(run.results())
    assert set(curve) == {"d32-l2", "d64-l2"} and [s for s, *_ in curve["d32-l2"]] == [10, 20]


def test_rerun_is_cached_and_deterministic(demo_results, quick_demo, tmp_path):
    run = demo_results["exact"]
    again = run_analyses(run, "memorization", members=[m.name for m in run.members if m.base is None], steps="20",
                         device="cpu", progress=False,
                         options={"mem_batch": 7, "mem_chunk": 50})  # how work is cut is not part of the key
    assert not again.computed and len(again.cached) == 4
    fresh = open_run(quick_demo[0] / "run", results_dir=tmp_path / "r")
    run_analyses(fresh, "memorization", members="d64-l2-seed1", steps="20", device="cpu", progress=False,
                 options={"mem_batch": 7, "mem_chunk": 50})
    same = ("artifacts/memorization/d64-l2-seed1/step20/scores/scores.npy",
            "units/memorization/d64-l2-seed1/step20.json")
    for rel in same:
        assert (fresh.results_dir / rel).read_bytes() == (run.results_dir / rel).read_bytes(), rel


def test_sample_and_positions_options(demo_results, quick_demo, tmp_path):
    full = load_scores(demo_results["exact"], "d32-l2-seed1", 20)
    run = open_run(quick_demo[0] / "run", results_dir=tmp_path / "r")
    opts = {"positions": "40:150", "sample": 30, "sample_seed": 3, "prefix_only": True}
    run_analyses(run, "memorization", members="d32-l2-seed1", steps="20", device="cpu", progress=False, options=opts)
    part = load_scores(run, "d32-l2-seed1", 20)
    pos = part.positions
    assert len(pos) == 30 and np.all(np.diff(pos) > 0) and pos.min() >= 40 and pos.max() < 150
    assert np.array_equal(part.memorized, full.memorized[pos])  # prefix and full agree on the memorized set
    assert np.all(part.scores <= full.scores[pos])
    tasks = {r["task"] for r in run.results().rows(analysis="memorization")}
    assert "positions=40:150,sample=30,seed=3" in tasks
    assert {r["metric"] for r in run.results().rows(analysis="memorization")} >= {"mean_prefix", "prefix_hist_0"}
    run_analyses(run, "memorization", members="d32-l2-seed1", steps="0", device="cpu", progress=False)
    assert len(load_scores(run, "d32-l2-seed1", 0).scores) == 0  # step 0 has trained on nothing
    step0 = [(r["task"], r["metric"], r["value"]) for r in run.results().rows(analysis="memorization") if r["step"] == 0]
    assert step0 == [("positions=0:0", "sequences", 0)]


def test_resume_after_interruption_loses_at_most_one_chunk(quick_demo, demo_results, tmp_path, monkeypatch):
    import pythia.memorization as engine

    real, calls, kill_at = engine.score_sequences, [], [3]

    class Killed(BaseException):
        """Stops the run like a kill -9 between two chunks' atomic writes (the runner only
        catches Exception)."""

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) in kill_at:
            raise Killed
        return real(*a, **kw)

    monkeypatch.setattr(engine, "score_sequences", flaky)
    run = open_run(quick_demo[0] / "run", results_dir=tmp_path / "r")
    opts = {"mem_batch": 32, "mem_chunk": 32}  # 160 positions = 5 chunks of one batch
    with pytest.raises(Killed):
        run_analyses(run, "memorization", members="d64-l2-seed1", steps="20", device="cpu", progress=False,
                     options=opts)
    folder = run.results_dir / "artifacts/memorization/d64-l2-seed1/step20"
    assert not (folder / "scores").exists() and len(list(folder.glob("partial-*/chunk-*.npy"))) == 2
    calls.clear()
    kill_at.clear()
    run_analyses(run, "memorization", members="d64-l2-seed1", steps="20", device="cpu", progress=False, options=opts)
    assert len(calls) == 3 and not list(folder.glob("partial-*"))
    done = load_scores(run, "d64-l2-seed1", 20)
    assert np.array_equal(done.scores, load_scores(demo_results["exact"], "d64-l2-seed1", 20).scores)


# ---------------------------------------------------------------------------------------------
# predictability, export, import


def fake_scores(results_dir, member, step, scores, lo=0):
    folder = results_dir / "artifacts" / "memorization" / member / f"step{step}"
    arr = np.asarray(scores, np.uint8)
    meta = {"member": member, "step": step, "prompt_len": 32, "cont_len": 32, "score": "full"}
    return compute_chunked(folder, Positions(lo, lo + len(arr)), meta, lambda pos: arr[pos - lo], chunk=4)


def test_predictability_precision_recall_orientation(quick_demo, tmp_path):
    run = open_run(quick_demo[0] / "run", results_dir=tmp_path / "r")
    small, big = "d32-l2-seed1", "d64-l2-seed1"
    fake_scores(run.results_dir, small, 20, [32, 32, 0, 5, 0, 0, 31, 0])  # memorized {0, 1}
    fake_scores(run.results_dir, big, 20, [32, 32, 32, 32, 0, 0, 0, 0])  # memorized {0, 1, 2, 3}
    fake_scores(run.results_dir, big, 10, [0, 32, 32, 32])  # an earlier checkpoint: {1, 2, 3}
    rows = MemorizationPredictability().compute_run(run, run.results(), [run.member(small), run.member(big)])
    got = {(r["member"], r["step"], r["task"], r["metric"]): r["value"] for r in rows}
    # the small model predicting the big one: all it flags are right (precision 1), half found (recall 0.5)
    assert got[(big, 20, f"predictor={small}@step20", "precision")] == 1.0
    assert got[(big, 20, f"predictor={small}@step20", "recall")] == 0.5
    assert got[(small, 20, f"predictor={big}@step20", "precision")] == 0.5
    # the earlier checkpoint predicting the final one, over the 4 positions both scored
    assert got[(big, 20, f"predictor={big}@step10", "positions")] == 4
    assert got[(big, 20, f"predictor={big}@step10", "precision")] == 1.0
    assert got[(big, 20, f"predictor={big}@step10", "recall")] == pytest.approx(3 / 4)
    assert (small, 20, f"predictor={big}@step10", "recall") not in got  # neither same size nor same step
    for (b, t, task, metric), value in got.items():  # brute force over sets of every pair
        a, s = task.removeprefix("predictor=").split("@step")
        pa, pb = load_scores(run, a, int(s)), load_scores(run, b, t)
        common = set(pa.positions) & set(pb.positions)
        pred = {int(p) for p in pa.memorized_positions() if p in common}
        true = {int(p) for p in pb.memorized_positions() if p in common}
        want = {"positions": len(common), "tp": len(pred & true), "predicted": len(pred), "target": len(true),
                "precision": len(pred & true) / len(pred) if pred else None,
                "recall": len(pred & true) / len(true) if true else None}[metric]
        assert value == want, (b, t, task, metric)
    at = precision_recall(load_scores(run, small, 20), load_scores(run, big, 20), at=5)
    assert (at["predicted"], at["target"], at["tp"]) == (4, 4, 3)  # {0, 1, 3, 6} vs {0, 1, 2, 3}


def test_predictability_through_the_runner(demo_results):
    run = demo_results["exact"]
    summary = run_analyses(run, "memorization_predictability", progress=False, options={"memorized_at": 2})
    assert summary.ok
    rows = run.results().rows(analysis="memorization_predictability")
    pairs = {(r["member"], r["step"], r["task"]) for r in rows}
    assert len(pairs) == 8 * 3 + 4 * 2  # per step 4 members x 3 others; per member 2 steps x 1 other
    for r in rows:
        if r["metric"] == "positions":
            assert r["value"] == (80 if "@step10" in r["task"] or r["step"] == 10 else 160)
    members, sizes = predictability_matrix(run.results(), "precision", step=20)
    steps, times = predictability_matrix(run.results(), "recall", member="d64-l2-seed1")
    assert members == [m.name for m in run.members if m.base is None] and sizes.shape == (4, 4) and steps == [10, 20]
    want = {(r["member"], r["step"], r["task"], r["metric"]): r["value"] for r in rows}
    cell = want[("d64-l2-seed1", 20, "predictor=d32-l2-seed2@step20", "precision")]
    assert sizes[2, 1] == cell or (cell is None and np.isnan(sizes[2, 1]))
    cell = want[("d64-l2-seed1", 10, "predictor=d64-l2-seed1@step20", "recall")]
    assert times[0, 1] == cell or (cell is None and np.isnan(times[0, 1]))
    assert np.all(np.diag(sizes) == 1) and np.all(np.diag(times) == 1)


def test_export_pythia_csv_and_import_parquet(demo_results, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = demo_results["exact"]
    out = tmp_path / "csv"
    assert run_analyses(run, "memorization_export", members="d32-l2-seed1", progress=False,
                        options={"export": str(out)}).ok
    assert sorted(p.name for p in out.iterdir()) == ["memorization_d32-l2-seed1_10.csv",
                                                     "memorization_d32-l2-seed1_20.csv"]
    lines = (out / "memorization_d32-l2-seed1_20.csv").read_text().splitlines()
    scores = load_scores(run, "d32-l2-seed1", 20)
    assert [line.split(",") for line in lines] == [[str(i), repr(k / 32)] for i, k in enumerate(scores.scores.tolist())]
    with pytest.raises(AnalysisError, match="--export"):
        run_analyses(run, "memorization_export", progress=False)

    order = run.member("d32-l2-seed1").order()
    index = [3, 7, 150]
    tokens = [order.sample(i)[:64].tolist() for i in index]
    path = tmp_path / "duped.70m.parquet"
    pq.write_table(pa.table({"index": index, "tokens": tokens}), path)
    assert read_memorized_parquet(path, order).tolist() == index
    tokens[1][40] = (tokens[1][40] + 1) % 1024
    pq.write_table(pa.table({"index": index, "tokens": tokens}), path)
    with pytest.raises(ValueError, match="row 1 \\(index 7\\)"):
        read_memorized_parquet(path, order)
    assert read_memorized_parquet(path).tolist() == index  # without an order: the set alone
    pq.write_table(pa.table({"idx": index}), path)
    with pytest.raises(ValueError, match="no column"):
        read_memorized_parquet(path)


# ---------------------------------------------------------------------------------------------
# Hub runs and bad input


@pytest.fixture
def hub_data(quick_demo, quick_hub, monkeypatch, tmp_path):
    """The Hub-cache copy of the first member and the demo's order exported as preshuffled rows."""
    from pythia.data.preshuffle import export_preshuffled

    cache, repo = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    order = open_run(quick_demo[0] / "run").member("d32-l2-seed1").order()
    prefix = tmp_path / "preshuffled"
    export_preshuffled(order, prefix, num_positions=160, progress=False)
    return repo, str(prefix)


def test_hub_repo_with_preshuffled_data(hub_data, demo_results, tmp_path):
    repo, prefix = hub_data
    run = open_run(repo, data=prefix, results_dir=tmp_path / "hub")
    assert run_analyses(run, "memorization", steps="20", device="cpu", progress=False,
                        options={"positions": "0:160"}).ok
    hub = load_scores(run, run.members[0].name, 20)
    assert np.array_equal(hub.scores, load_scores(demo_results["exact"], "d32-l2-seed1", 20).scores)
    with pytest.raises(AnalysisError, match="beyond the order's 160 positions"):  # default: 20 x 1024 positions
        run_analyses(run, "memorization", steps="20", device="cpu", progress=False, force=True)
    with pytest.raises(AnalysisError, match="no training dataset"):
        run_analyses(open_run(repo, results_dir=tmp_path / "nodata"), "memorization", steps="20", progress=False)


def test_bad_input_is_named_before_any_work(quick_demo, hub_data, tmp_path):
    from pythia.data.indexed import IndexedDatasetBuilder
    from pythia.data.tokenize import manifest_path
    from pythia.data.tokenizer import train_tokenizer
    from pythia.io import sha256_file

    run = open_run(quick_demo[0] / "run", results_dir=tmp_path / "r")
    for opts, message in (({"positions": "100:100000"}, "beyond the d32-l2-seed1 order's"),
                          ({"positions": "5"}, "A:B"), ({"positions": "0:50", "sample": 60}, "more than"),
                          ({"prompt_len": 40}, "shorter than prompt"), ({"cont_len": 300}, "1..255")):
        with pytest.raises(AnalysisError, match=message):
            run_analyses(run, "memorization", steps="20", device="cpu", progress=False, options=opts)
    assert not (run.results_dir / "artifacts").exists()

    repo, _ = hub_data
    rows = np.random.default_rng(0).integers(1, 1024, (16, 65))
    rows[9, 40] = 2000  # a token the model's 1024-token vocabulary does not have
    with IndexedDatasetBuilder(tmp_path / "wide") as b:
        b.add_rows(rows)
    hub = open_run(repo, data=str(tmp_path / "wide"), results_dir=tmp_path / "h")
    with pytest.raises(AnalysisError, match="position 9 holds token 2000.*vocab"):
        run_analyses(hub, "memorization", steps="20", device="cpu", progress=False, options={"positions": "0:16"})

    other = train_tokenizer(["some other text " * 20, "tokens tokens"] * 5, 300, tmp_path / "other.json")
    assert other.get_vocab_size() <= 300
    for vocab, message in ((300, "tokenizer .* differ"), (5000, "tokenized with 5000 tokens")):
        manifest = {"tokenizer": {"path": str(tmp_path / "other.json"), "sha256": sha256_file(tmp_path / "other.json"),
                                  "vocab_size": vocab}}
        manifest_path(tmp_path / "wide").write_text(json.dumps(manifest))
        with pytest.raises(AnalysisError, match=message):
            run_analyses(hub, "memorization", steps="20", device="cpu", progress=False, options={"positions": "0:8"})
    assert not (tmp_path / "h" / "artifacts" / "memorization" / repo.split("/")[1] / "step20" / "scores").exists()
