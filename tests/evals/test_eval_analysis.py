"""The `eval` analysis: a sweep through the runner, rows, lm-eval JSON and per-item outcomes,
the per-task cache, Hub runs, and bad input."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from pythia.analysis.base import AnalysisError
from pythia.analysis.runner import run_analyses
from pythia.run import open_run

TASKS = "t_mc,t_lambada,t_rolling,t_gen"
MEMBER = "d64-l2-seed1"


def _sweep(source, results, eval_tasks, tasks=TASKS, steps="0,20", **opts):
    run = open_run(source, results_dir=results)
    summary = run_analyses(run, "eval", members=MEMBER if run.kind != "hub" else None, steps=steps, device="cpu",
                           options={"tasks": tasks, "include_path": str(eval_tasks), **opts}, progress=False)
    return run, summary


def _reference(quick_demo, eval_tasks, shots):
    """lm-eval's simple_evaluate with the pythia model (equal to hf: test_lm_parity)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from pythia.evals.lm import PythiaLM

    out, _ = quick_demo
    lm = PythiaLM(pretrained=str(out / "run"), member=MEMBER, revision="step20")
    return simple_evaluate(model=lm, tasks=TASKS.split(","), num_fewshot=shots, bootstrap_iters=1000,
                           task_manager=TaskManager(include_path=str(eval_tasks), include_defaults=False),
                           log_samples=True)


def test_sweep_rows_json_and_items(quick_demo, eval_tasks, tmp_path):
    """Two-shot sweep of two checkpoints: rows named task@2shot equal simple_evaluate's numbers,
    results.json and per-item outcomes are written, and a second sweep gives the same bytes."""
    out, _ = quick_demo
    run, summary = _sweep(out, tmp_path / "a", eval_tasks, num_fewshot=2)
    assert summary.ok and len(summary.computed) == 2
    rows = run.results().rows(analysis="eval")
    assert {r["step"] for r in rows} == {0, 20} and all(r["member"] == MEMBER for r in rows)
    tasks = {r["task"] for r in rows}
    assert tasks == {"t_mc@2shot", "t_lambada@2shot", "t_gen@2shot", "t_rolling"}  # t_rolling fixes 0 shots
    ref = _reference(quick_demo, eval_tasks, 2)
    got = {(r["task"], r["metric"]): (r["value"], r["stderr"]) for r in rows if r["step"] == 20}
    assert got[("t_mc@2shot", "acc_norm")] == (ref["results"]["t_mc"]["acc_norm,none"],
                                              ref["results"]["t_mc"]["acc_norm_stderr,none"])
    assert got[("t_lambada@2shot", "perplexity")] == (ref["results"]["t_lambada"]["perplexity,none"],
                                                     ref["results"]["t_lambada"]["perplexity_stderr,none"])
    assert got[("t_gen@2shot", "exact_match,first_word")][0] == ref["results"]["t_gen"]["exact_match,first_word"]
    assert got[("t_rolling", "bits_per_byte")] == (ref["results"]["t_rolling"]["bits_per_byte,none"], None)

    art = tmp_path / "a" / "artifacts" / "eval" / MEMBER / "step20"
    data = json.loads((art / "results.json").read_text())
    assert data["results"]["t_mc"] == json.loads(json.dumps(ref["results"]["t_mc"]))
    assert data["config"]["model_revision"] == "step20" and data["n-shot"]["t_mc"] == 2

    items = np.load(art / "t_mc@2shot.items.npz")
    samples = sorted(ref["samples"]["t_mc"], key=lambda s: s["doc_id"])
    assert items["metric"].tolist() == ["acc"] and items["doc_id"].tolist() == [s["doc_id"] for s in samples]
    assert items["correct"].dtype == np.uint8 and items["correct"].tolist() == [int(s["acc"]) for s in samples]
    assert items["pred"].tolist() == [int(np.argmax([r[0] for r in s["filtered_resps"]])) for s in samples]
    gen = np.load(art / "t_gen@2shot.items.npz")
    assert gen["metric"].tolist() == ["exact_match"] and (gen["pred"] == -1).all()
    assert not (art / "t_rolling.items.npz").exists()  # no 0/1 metric

    run_analyses(open_run(out, results_dir=tmp_path / "b"), "eval", members=MEMBER, steps="20", device="cpu",
                 options={"tasks": TASKS, "include_path": str(eval_tasks), "num_fewshot": 2, "batch_size": 3},
                 progress=False)
    written = [p for p in (tmp_path / "a").rglob("*") if p.is_file() and "step20" in p.as_posix()]
    assert len(written) == 9  # 4 task JSONs, 3 item files, results.json, the unit
    for f in written:
        twin = tmp_path / "b" / f.relative_to(tmp_path / "a")
        assert twin.read_bytes() == f.read_bytes(), f  # deterministic, and batch size changes nothing


def test_task_list_change_recomputes_only_new_tasks(quick_demo, eval_tasks, tmp_path, caplog, monkeypatch):
    out, _ = quick_demo
    caplog.set_level(logging.INFO, logger="pythia.evals")
    _sweep(out, tmp_path, eval_tasks, tasks="t_mc,t_lambada", steps="20")
    caplog.clear()
    run, summary = _sweep(out, tmp_path, eval_tasks, tasks="t_mc,t_lambada,t_gen", steps="20")
    assert summary.ok and "1 task(s) computed, 2 reused" in caplog.text
    assert {r["task"] for r in run.results().rows(analysis="eval")} == {"t_mc", "t_lambada", "t_gen"}

    from pythia.run import Checkpoint

    def no_load(*a, **k):
        raise AssertionError("a checkpoint whose tasks are all stored must not be loaded")

    monkeypatch.setattr(Checkpoint, "load", no_load)
    caplog.clear()
    run, summary = _sweep(out, tmp_path, eval_tasks, tasks="t_gen,t_mc", steps="20")  # new list, nothing new
    assert summary.ok and summary.computed and "computed" not in caplog.text
    # the table keeps every task scored on these weights, asked for now or not (one unit per checkpoint)
    assert {r["task"] for r in run.results().rows(analysis="eval")} == {"t_mc", "t_lambada", "t_gen"}
    run, summary = _sweep(out, tmp_path, eval_tasks, tasks="t_gen,t_mc", steps="20")  # same list: runner's cache
    assert summary.cached and not summary.computed


def test_hub_repo_in_local_cache(quick_hub, quick_demo, eval_tasks, tmp_path, monkeypatch):
    """A Hub repo id with stepN revisions: same numbers as the run folder it was made from."""
    cache, repo = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub, summary = _sweep(repo, tmp_path / "hub", eval_tasks, tasks="t_mc,t_lambada", steps="20", limit=4)
    assert summary.ok
    out, _ = quick_demo
    local, _ = _sweep(out, tmp_path / "local", eval_tasks, tasks="t_mc,t_lambada", steps="20", limit=4)
    member = sorted(p.name for p in (out / "run").iterdir() if (p / "step0").is_dir())[0]
    want = {(r["task"], r["metric"]): r["value"] for r in local.results().rows(analysis="eval")}
    got = {(r["task"], r["metric"]): r["value"] for r in hub.results().rows(analysis="eval")}
    if member == MEMBER:
        assert got == want
    assert len(got) == 4 and {r["member"] for r in hub.results().rows(analysis="eval")} == {"pythia-quick-test"}


def test_bad_task_yaml_and_download_are_named(quick_demo, eval_tasks, tmp_path):
    out, _ = quick_demo
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "typo.yaml").write_text((eval_tasks / "t_lambada.yaml").read_text().replace("task: t_lambada", "task: typo")
                                   .replace("output_type: loglikelihood", "output_type: loglikelihod"))
    (bad / "hub.yaml").write_text("task: wants_hub\ndataset_path: EleutherAI/not_here\noutput_type: loglikelihood\n"
                                  "test_split: test\ndoc_to_text: '{{text}}'\ndoc_to_target: ' x'\n")
    run = open_run(out, results_dir=tmp_path / "r")
    with pytest.raises(AnalysisError, match=r"typo \(.*typo\.yaml\).*invalid output_type 'loglikelihod'"):
        run_analyses(run, "eval", options={"tasks": "typo", "include_path": str(bad)}, progress=False)
    with pytest.raises(AnalysisError, match=r"wants_hub \(.*hub\.yaml\) needs data that is not on this machine"):
        run_analyses(run, "eval", options={"tasks": "wants_hub", "include_path": str(bad)}, progress=False)
    with pytest.raises(AnalysisError, match="--limit must be >= 1"):
        run_analyses(run, "eval", options={"tasks": "t_mc", "include_path": str(eval_tasks), "limit": 0},
                     progress=False)
    assert not (tmp_path / "r").exists()  # nothing written before the check


@pytest.mark.slow  # indexes lm-eval's ~15k built-in task YAMLs (~15 s)
def test_unknown_task_lists_available(quick_demo, eval_tasks, tmp_path):
    out, _ = quick_demo
    (eval_tasks.parent / "broken").mkdir(exist_ok=True)
    broken = eval_tasks.parent / "broken" / "broken.yaml"
    broken.write_text("task: broken\n  oops: [\n")
    run = open_run(out, results_dir=tmp_path)
    with pytest.raises(AnalysisError) as err:
        run_analyses(run, "eval", options={"tasks": "t_mcq", "include_path": f"{eval_tasks},{broken.parent}"},
                     progress=False)
    msg = str(err.value)
    assert "unknown lm-eval task(s): t_mcq" in msg and "t_gen, t_lambada, t_mc, t_rolling" in msg
    assert "close names: " in msg and "t_mc" in msg.split("close names: ")[1]
    assert f"not read (bad YAML): {broken}" in msg and "built-in tasks" in msg


def test_failing_checkpoint_is_named_and_skipped(quick_demo, eval_tasks, tmp_path):
    out, _ = quick_demo
    run_dir = tmp_path / "run"
    shutil.copytree(out / "run", run_dir, ignore=shutil.ignore_patterns("d32-*", "results"))
    weights = run_dir / MEMBER / "step0" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    run, summary = _sweep(run_dir, tmp_path / "res", eval_tasks, tasks="t_mc", steps="0,20", limit=2)
    assert not summary.ok and len(summary.failed) == 1 and f"{MEMBER}/step0" in summary.failed[0]
    assert "manifest" in summary.failed[0]
    assert {r["step"] for r in run.results().rows(analysis="eval")} == {20}


def test_demo_default_tasks_and_cli(quick_demo, tmp_path, capsys):
    """`pythia eval DEMO` on a demo with built tasks evaluates them without --tasks."""
    import argparse

    from pythia.cli.eval import register
    from pythia.evals.demo_tasks import DEMO_TASKS, build_demo_tasks

    out, _ = quick_demo
    demo = tmp_path / "demo"
    shutil.copytree(out, demo, ignore=shutil.ignore_patterns("d32-*", "results", "report"))
    build_demo_tasks(demo)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", str(demo), "--steps", "20", "--members", MEMBER, "--limit", "3",
                              "--device", "cpu", "--no-progress"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert all(t in printed for t in DEMO_TASKS) and "exact_match,first_word" in printed
