"""`pythia demo --quick` end to end through the CLI, plus the corpus it is built from."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pythia.demo.corpus import CorpusSettings, build_corpus, chunk_source, is_validation
from pythia.demo.pipeline import QUICK
from pythia.demo.studies import DEMO_TERMS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK_STEPS = [0, 1, 2, 4, 8, 10, 20]  # 20 iters, interval 10, log-spaced below it
QUICK_MEMBERS = [f"{s.name}-seed{seed}" for s in QUICK.sizes for seed in QUICK.seeds]
QUICK_FORK = f"{QUICK.intervention.member}+{QUICK.intervention.name}"  # the demo's data intervention
QUICK_FORK_STEPS = [s for s in QUICK_STEPS if s >= QUICK.intervention.from_step]
QUICK_CHECKPOINTS = {(m, s) for m in QUICK_MEMBERS for s in QUICK_STEPS} | {(QUICK_FORK, s) for s in QUICK_FORK_STEPS}


# ---------------------------------------------------------------------------------- corpus
def test_corpus_is_deterministic_and_split_by_file(tmp_path):
    settings = CorpusSettings(max_bytes=300_000)
    a = build_corpus(tmp_path / "a", settings)
    b = build_corpus(tmp_path / "b", settings)
    assert a["sha256"] == b["sha256"] and len(a["sha256"]) == 64
    assert a["python_version"] == sys.version.split()[0]
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()

    def paths(split):
        with open(tmp_path / "a" / f"{split}.jsonl", encoding="utf-8") as f:
            return [json.loads(line)["meta"]["path"] for line in f]

    train, valid = paths("train"), paths("valid")
    assert len(train) == a["splits"]["train"]["documents"] > 50
    assert valid and not set(train) & set(valid)  # no file is in both splits
    assert all(is_validation(p, settings.valid_per_mille) for p in valid)
    assert not any("/test/" in f"/{p}" or "site-packages" in p for p in train + valid)


def test_corpus_reuse_is_a_no_op_and_settings_change_rebuilds(tmp_path):
    settings = CorpusSettings(max_bytes=200_000)
    first = build_corpus(tmp_path, settings)
    mtime = (tmp_path / "train.jsonl").stat().st_mtime_ns
    assert build_corpus(tmp_path, settings) == first
    assert (tmp_path / "train.jsonl").stat().st_mtime_ns == mtime
    other = build_corpus(tmp_path, CorpusSettings(max_bytes=100_000))
    assert other["sha256"] != first["sha256"]


def test_chunks_cut_only_at_block_starts():
    src = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(200))
    chunks = chunk_source(src, 500)
    assert "".join(chunks) == src
    assert len(chunks) > 5
    assert all(c.startswith("def f") for c in chunks)


# ---------------------------------------------------------------------------------- demo
def test_demo_prints_where_everything_is(quick_demo):
    out, stdout = quick_demo
    for part in ("corpus", "suite.yaml", "results.csv", "learning_curves.png", "d64-l2", QUICK_FORK,
                 f"compare_{QUICK_FORK}.png", f"--member {QUICK_FORK} --step 10 --diff"):
        assert part in stdout
    manifest = json.loads((out / "corpus" / "manifest.json").read_text())
    assert manifest["python_version"] == sys.version.split()[0]
    assert manifest["sha256"][:16] in stdout


def test_demo_checkpoint_grid(quick_demo):
    out, _ = quick_demo
    run = out / "run"
    members = sorted(p.name for p in run.iterdir() if p.is_dir() and (p / "metrics.jsonl").exists())
    assert members == sorted(QUICK_MEMBERS + [QUICK_FORK])
    for member in members:
        steps = sorted(int(p.name[4:]) for p in (run / member).glob("step*") if p.name[4:].isdigit())
        assert steps == (QUICK_FORK_STEPS if member == QUICK_FORK else QUICK_STEPS), member
        for step in steps:
            ckpt = run / member / f"step{step}"
            assert (ckpt / "config.json").is_file() and (ckpt / "manifest.json").is_file()
            # AdamW moments only where QUICK.optimizer_state_every keeps them: the fork's start and the last
            assert (ckpt / "training_state" / "optimizer.safetensors").is_file() == (step in (10, 20)), (member, step)


def test_demo_checkpoints_load_in_transformers_and_pythia(quick_demo):
    import torch
    import transformers

    import pythia

    out, _ = quick_demo
    member_dir = out / "run" / QUICK_MEMBERS[-1]
    ids = torch.tensor([[0, 5, 17, 300, 42, 7, 99, 1000]])  # (1, 8)
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(member_dir / "step20").eval()
    ours = pythia.load_model(member_dir, revision="step20").eval()
    with torch.no_grad():
        hf_logits = hf(ids).logits  # (1, 8, V)
        our_logits = ours(ids)  # (1, 8, V)
    assert hf_logits.shape == our_logits.shape
    torch.testing.assert_close(our_logits.float(), hf_logits.float(), atol=1e-4, rtol=1e-4)
    # each checkpoint carries the tokenizer it was trained with: a complete HF model + tokenizer
    tok = transformers.AutoTokenizer.from_pretrained(member_dir / "step20")
    assert tok("def main():")["input_ids"] and tok.eos_token_id == 0
    # step 0 is the initialisation: a different model from step 20
    first = pythia.load_model(member_dir, revision="step0")
    with torch.no_grad():
        assert not torch.allclose(first(ids), our_logits)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_demo_metrics_and_validation_loss(quick_demo):
    out, _ = quick_demo
    for member in QUICK_MEMBERS:
        metrics = _jsonl(out / "run" / member / "metrics.jsonl")
        assert [m["step"] for m in metrics] == list(range(1, QUICK.train_iters + 1))
        assert all(math.isfinite(m["loss"]) for m in metrics)
        evals = {e["step"]: e["val_loss"] for e in _jsonl(out / "run" / member / "evals.jsonl")}
        assert sorted(evals) == QUICK_STEPS
        assert evals[QUICK_STEPS[-1]] < evals[0]  # it learned something in 20 steps


def test_demo_fork_trained_on_this_for_self(quick_demo):
    """The fork starts from its base's step10 and reads " this" wherever its base read " self"."""
    from pythia.data.tokenizer import load_tokenizer
    from pythia.run import open_run
    from pythia.train.metrics import batch_fingerprint

    out, _ = quick_demo
    run = open_run(out)
    fork, base = run.member(QUICK_FORK), run.member(QUICK.intervention.member)
    start = QUICK.intervention.from_step
    assert fork.base == base.name and fork.from_step == start and fork.checkpoint(start).digest == base.checkpoint(start).digest
    metrics = fork.metrics()
    assert [m["step"] for m in metrics] == list(range(start + 1, QUICK.train_iters + 1))
    tok = load_tokenizer(out / "data" / "tokenizer.json")
    (self_id,), (this_id,) = (tok.encode(w).ids for w in QUICK.intervention.token_map[0])  # one token each
    order, fork_order = base.order(), fork.order()
    for m in metrics:
        a, b = order.batch(m["step"] - 1, QUICK.global_batch), fork_order.batch(m["step"] - 1, QUICK.global_batch)
        assert m["changed_tokens"] == int((a == self_id).sum()) and not (b == self_id).any()
        assert (b[a == self_id] == this_id).all() and (b[a != self_id] == a[a != self_id]).all()
        assert m["batch_fp"] == batch_fingerprint(b)
    assert sum(m["changed_tokens"] for m in metrics) > 20  # " self" is frequent in the corpus


def test_demo_batches_are_the_rebuilt_training_order(quick_demo, tmp_path):
    """The data tools, rebuilding the order from scratch, give the batches the trainer saw."""
    from pythia.data.order import TrainingOrder, num_samples_for
    from pythia.train.metrics import batch_fingerprint

    out, _ = quick_demo
    order = TrainingOrder.build(str(out / "data" / "train"), QUICK.seq_len, QUICK.data_seed,
                                num_samples_for(QUICK.train_iters, QUICK.global_batch),
                                out_dir=str(tmp_path), progress=False)
    metrics = _jsonl(out / "run" / QUICK_MEMBERS[0] / "metrics.jsonl")
    for step in (0, 7, QUICK.train_iters - 1):  # metrics line `step` = updates done after it
        batch = order.batch(step, QUICK.global_batch)  # (B, S+1)
        assert batch.shape == (QUICK.global_batch, QUICK.seq_len + 1)
        assert batch_fingerprint(batch) == metrics[step]["batch_fp"]


def test_demo_report_plot_and_table(quick_demo):
    out, _ = quick_demo
    png = (out / "report" / "learning_curves.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 10_000
    with open(out / "report" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["suite", "member", "size", "seed", "step", "tokens", "analysis", "task", "metric",
                             "value", "stderr"]
    val = [r for r in rows if r["metric"] == "val_loss"]
    assert {(r["member"], int(r["step"])) for r in val} == QUICK_CHECKPOINTS
    assert len(val) == len(QUICK_CHECKPOINTS)
    compared = {(r["metric"], int(r["step"])) for r in rows if r["analysis"] == "compare"}
    assert {("val_loss:diff", s) for s in QUICK_FORK_STEPS} <= compared
    assert {("logp_self_minus_this:diff", s) for s in QUICK_FORK_STEPS} <= compared  # the probe of the fork
    assert (out / "report" / f"compare_{QUICK_FORK}.png").read_bytes()[:8] == PNG_MAGIC
    assert QUICK_FORK in (out / "report" / "summary.txt").read_text()
    assert {r["size"] for r in val} == {s.name for s in QUICK.sizes}
    assert {int(r["seed"]) for r in val} == set(QUICK.seeds)
    per_step = QUICK.global_batch * QUICK.seq_len
    assert all(int(r["tokens"]) == int(r["step"]) * per_step for r in val)


STUDIES = ("eval", "memorization", "memorization_predictability", "weights", "seeds", "training_map", "term_counts",
           "term_frequency", "pronoun_probe", "val_loss", "scaling", "trace", "trace_contamination", "icl", "heads",
           "lens", "phase_change", "token_curves", "seed_convergence", "representations", "optimizer_state")


def test_demo_runs_every_study_and_reports_it(quick_demo):
    """The demo's studies stage: every analysis wrote rows for the members it covers, and the
    report has a section for each family."""
    out, stdout = quick_demo
    assert "[5/6] studies" in stdout and "[6/6] report" in stdout
    with open(out / "report" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by = {}
    for r in rows:
        by.setdefault(r["analysis"], []).append(r)
    assert set(STUDIES) <= set(by), sorted(by)
    studies = QUICK.studies
    evaluated = {(r["member"], int(r["step"])) for r in by["eval"] if r["task"].startswith("pythia_demo_")}
    assert evaluated == {(m, s) for m in QUICK_MEMBERS for s in QUICK_STEPS}  # eval_steps="all"
    mem = [r for r in by["memorization"] if r["metric"] == "memorized_frac" and r["task"].startswith("positions=")]
    trained = [s for s in QUICK_STEPS if s > 0]  # step 0 has trained on nothing: no positions to score
    assert {(r["member"], int(r["step"])) for r in mem} == {(m, s) for m in QUICK_MEMBERS for s in trained}
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in mem)
    assert {r["task"] for r in by["memorization"]} & {"duplicates", "duplicates=1:2"}  # the duplicate counts join
    hist = [r for r in by["memorization"] if r["metric"].startswith("score_hist_")]
    assert max(int(r["metric"].rsplit("_", 1)[1]) for r in hist) == studies.memorization_cont_len
    assert {r["metric"] for r in by["weights"]} >= {"L1", "L2", "lambda_max", "sigma_lambda"}
    assert {r["metric"] for r in by["training_map"]} >= {"state"}
    counted = {r["task"] for r in by["term_counts"]}
    assert counted == set(DEMO_TERMS)
    arith = {(r["member"], int(r["step"])) for r in by["term_frequency"]}
    assert arith == {(f"{s.name}-seed1", step) for s in QUICK.sizes for step in (10, 20)}
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    traced = {(r["member"], int(r["step"])) for r in by["trace"]}
    assert traced == {(f"{s.name}-seed1", QUICK_STEPS[-1]) for s in QUICK.sizes}
    assert {r["task"] for r in by["trace"]} >= {"generation0", "generation2"}
    contaminated = {(r["member"], int(r["step"])) for r in by["trace_contamination"] if r["metric"] == "contaminated"}
    assert contaminated == {(f"{s.name}-seed1", step) for s in QUICK.sizes for step in QUICK_STEPS}
    curves = {(r["member"], int(r["step"])) for r in by["token_curves"] if r["metric"] == "mean_surprisal"}
    assert curves == {(m, s) for m in QUICK_MEMBERS for s in QUICK_STEPS}
    assert {r["size"] for r in by["seed_convergence"]} == {s.name for s in QUICK.sizes}
    reps = {r["metric"] for r in by["representations"]}
    assert {"cka_final", "cka_previous", "cka_seeds", "per", "condition", "hoyer", "gini", "grad_per"} <= reps
    kept = {int(r["step"]) for r in by["optimizer_state"]}
    assert kept == {10, 20}  # the steps that keep optimizer state (QUICK.optimizer_state_every)
    for section in ("learning-curves", "benchmarks", "scaling", "memorization", "seeds", "term-frequency", "interventions",
                    "tracing", "mechanisms", "token-dynamics",
                    "representations"):
        assert f'id="{section}"' in page, section


def test_demo_rerun_continues_without_retraining(quick_demo, capsys):
    from pythia.cli import main

    out, _ = quick_demo
    before = {m: (out / "run" / m / "metrics.jsonl").read_text() for m in QUICK_MEMBERS + [QUICK_FORK]}
    ckpt_mtimes = {p: p.stat().st_mtime_ns for p in (out / "run").glob("*/step*/manifest.json")}
    tok_mtime = (out / "data" / "tokenizer.json").stat().st_mtime_ns
    scored = {p: p.stat().st_mtime_ns for p in (out / "run" / "results" / "artifacts" / "eval").rglob("*")
              if p.is_file() and p.name != "results.json"}  # lm-eval's per-task outputs and items
    assert len(scored) > 100
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert {m: (out / "run" / m / "metrics.jsonl").read_text() for m in before} == before
    assert {p: p.stat().st_mtime_ns for p in ckpt_mtimes} == ckpt_mtimes
    assert (out / "data" / "tokenizer.json").stat().st_mtime_ns == tok_mtime
    assert {p: p.stat().st_mtime_ns for p in scored} == scored  # no task scored again
    studies = [line.split() for line in capsys.readouterr().out.splitlines() if " computed, " in line]
    per_checkpoint = [w for w in studies if w[1] in ("memorization", "weights,token_curves", "representations",
                                                     "optimizer_state")]
    assert len(per_checkpoint) == 4 and all(w[2] == "0" for w in per_checkpoint), studies  # nothing recomputed
    mechanisms = [w for w in studies if w[0] == "mechanisms" and w[1] != "phase_change"]
    assert len(mechanisms) == 3 and all(w[2] == "0" for w in mechanisms), studies  # the tuned lens kept too


def test_demo_killed_mid_training_continues_to_the_same_result(quick_demo, tmp_path):
    """Kill the demo right after update 5 of its first member; the re-run finishes the suite
    and ends with exactly the validation losses of the uninterrupted run."""
    import os

    from pythia.analysis.runner import CRASH_ENV as ANALYZE_CRASH_ENV
    from pythia.train.checkpoint import CRASH_ENV

    reference, _ = quick_demo
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "import sys; from pythia.cli import main; sys.exit(main())",
           "demo", "--quick", "--out", str(out), "--no-progress"]
    killed = subprocess.run(cmd, env={**os.environ, CRASH_ENV: "step:5"}, capture_output=True,
                            text=True)
    assert killed.returncode == 137, killed.stderr
    first = out / "run" / QUICK_MEMBERS[0]
    assert (first / "step4").is_dir() and not (first / "step8").exists()
    # the second try finishes training and is killed in the studies, after 5 checkpoints' benchmarks
    killed = subprocess.run(cmd, env={**os.environ, ANALYZE_CRASH_ENV: "5"}, capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr
    assert "[5/6] studies" in killed.stdout and "[6/6]" not in killed.stdout
    assert len(list((out / "run" / "results" / "units" / "eval").glob("*/step*.json"))) == 5
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for member in QUICK_MEMBERS + [QUICK_FORK]:
        assert (out / "run" / member / "evals.jsonl").read_text() == \
            (reference / "run" / member / "evals.jsonl").read_text()

    def table(root, analyses=("eval", "memorization", "weights")):
        with open(root / "report" / "results.csv", newline="") as f:
            return sorted((r["member"], r["step"], r["analysis"], r["task"], r["metric"], r["value"])
                          for r in csv.DictReader(f) if r["analysis"] in analyses)

    assert table(out) == table(reference)  # the resumed studies give the uninterrupted numbers


def test_demo_refuses_folder_of_another_mode(quick_demo, capsys):
    from pythia.cli import main

    out, _ = quick_demo
    assert main(["demo", "--out", str(out)]) == 2  # full demo into a quick demo's folder
    assert "other settings" in capsys.readouterr().err


def test_console_script_help_explains_commands():
    exe = Path(sys.executable).with_name("pythia")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pythia.cli"]
    top = subprocess.run(cmd + ["--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in top and "examples:" in top
    demo = subprocess.run(cmd + ["demo", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--quick" in demo and "examples:" in demo and "standard library" in demo
