"""The analysis runner on the quick demo: val_loss against transformers, caching, recompute on a
changed checkpoint, kill -9, ranks, the CLI, and a toy plug-in written as the docs show."""
from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pythia.analysis import Analysis, Option, Row, register
from pythia.analysis.runner import CRASH_ENV, run_analyses
from pythia.cli import main as cli_main
from pythia.run import open_run
from tests.test_demo import QUICK_CHECKPOINTS, QUICK_FORK_STEPS, QUICK_MEMBERS, QUICK_STEPS


def _reference_val_loss(step_dir, windows) -> float:
    """Independent computation: transformers' GPTNeoXForCausalLM, full logits, token mean."""
    from transformers import GPTNeoXForCausalLM

    hf = GPTNeoXForCausalLM.from_pretrained(step_dir, torch_dtype=torch.float32).eval()
    x = torch.as_tensor(windows)
    with torch.no_grad():
        logits = hf(x[:, :-1]).logits.double()  # (N, S, V)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)).item()


def test_trainer_val_loss_equals_transformers(quick_demo):
    from pythia.data.indexed import validation_windows

    out, _ = quick_demo
    run = open_run(out)
    spec = run.spec
    windows = validation_windows(spec.data.valid, spec.data.seq_len, spec.eval_samples)
    rows = {(r["member"], r["step"]): r["value"] for r in run.results().rows(analysis="val_loss")}
    assert set(rows) == QUICK_CHECKPOINTS
    for member, step in ((QUICK_MEMBERS[0], 0), (QUICK_MEMBERS[3], 20)):
        ref = _reference_val_loss(run.member(member).checkpoint(step).path, windows)
        assert rows[(member, step)] == pytest.approx(ref, rel=2e-6, abs=0)


def test_cache_recompute_and_identical_tables(demo_copy):
    run = open_run(demo_copy)
    first = run_analyses(run, "val_loss", progress=False)
    assert first.ok and not first.computed  # the trainer already computed every checkpoint
    table = (run.results_dir / "results.csv").read_bytes()
    assert table.startswith(b"suite,member,size,seed,step,tokens,analysis,task,metric,value,stderr\n")
    again = run_analyses(run, "val_loss", progress=False)
    assert not again.computed and len(again.cached) == len(QUICK_CHECKPOINTS)
    # a checkpoint whose weights changed is recomputed (and fails its manifest, so it is named)
    target = demo_copy / "run" / QUICK_MEMBERS[0] / "step4" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    w = load_file(target)
    w["embed_out.weight"] = w["embed_out.weight"] * 1.5
    save_file(w, target, metadata={"format": "pt"})
    from pythia.layout import digest_of_checkpoint, write_manifest

    # the cache trusts manifests (re-hashing every checkpoint is `pythia verify`'s job); a checkpoint that
    # must be computed is checked against its manifest first, and a failing one is named and skipped
    bad = run_analyses(run, "val_loss", members=QUICK_MEMBERS[0], steps="step4", force=True, progress=False)
    assert not bad.ok and bad.computed == [] and "step4: checkpoint fails its manifest" in bad.failed[0]
    write_manifest(target.parent, 4, digest_of_checkpoint(target.parent))  # re-sign: now a changed checkpoint
    redo = run_analyses(open_run(demo_copy), "val_loss", progress=False)
    assert redo.computed == [f"val_loss {QUICK_MEMBERS[0]}/step4"]
    changed = [r for r in run.results().rows(analysis="val_loss") if r["member"] == QUICK_MEMBERS[0] and r["step"] == 4]
    assert len(changed) == 1  # replaced, not duplicated
    assert (run.results_dir / "results.csv").read_bytes() != table


def test_kill_9_loses_at_most_the_checkpoint_in_progress(demo_copy):
    shutil.rmtree(demo_copy / "run" / "results")
    cmd = [sys.executable, "-m", "pythia.cli", "analyze", str(demo_copy), "val_loss", "--no-progress"]
    killed = subprocess.run(cmd, env={**os.environ, CRASH_ENV: "3"}, capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr
    assert len(open_run(demo_copy).results().rows()) == 3
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"{len(QUICK_CHECKPOINTS) - 3} computed, 3 already up to date" in done.stdout
    # the same table as computed in one go
    ref = demo_copy.parent / "ref"
    shutil.copytree(demo_copy, ref)
    shutil.rmtree(ref / "run" / "results")
    assert cli_main(["analyze", str(ref), "val_loss", "--no-progress"]) == 0
    strip = lambda p: p.read_text().replace(str(p.parents[2]), "")  # noqa: E731
    assert strip(ref / "run" / "results" / "results.csv") == strip(demo_copy / "run" / "results" / "results.csv")


@pytest.mark.slow
def test_torchrun_splits_checkpoints_and_writes_one_table(demo_copy, quick_demo):
    shutil.rmtree(demo_copy / "run" / "results")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "pythia.cli", "analyze", str(demo_copy), "val_loss", "--no-progress", "--device", "cpu"]
    subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    got = {(r["member"], r["step"]): r["value"] for r in open_run(demo_copy).results().rows()}
    ref = {(r["member"], r["step"]): r["value"] for r in open_run(quick_demo[0]).results().rows(analysis="val_loss")}
    assert set(got) == set(ref) == QUICK_CHECKPOINTS
    assert all(got[k] == pytest.approx(ref[k], rel=1e-6) for k in ref)  # the trainer's own values
    assert (demo_copy / "run" / "results" / "results.csv").is_file()


def test_cli_analyze_results_and_list(demo_copy, capsys):
    assert cli_main(["analyze", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "val_loss" in listing and "[checkpoint]" in listing and "train_loss" in listing
    assert cli_main(["analyze", str(demo_copy / "run" / QUICK_MEMBERS[2]), "val_loss,train_loss", "--steps", "last",
                     "--val-samples", "4", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli_main(["results", str(demo_copy), "--analysis", "val_loss", "--member", QUICK_MEMBERS[2],
                     "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in rows] == QUICK_STEPS  # key (member, step, analysis, task, metric): replaced
    assert cli_main(["results", str(demo_copy), "--metric", "train_loss", "--format", "csv"]) == 0
    csv_text = capsys.readouterr().out
    assert csv_text.splitlines()[0] == "suite,member,size,seed,step,tokens,analysis,task,metric,value,stderr"
    assert len(csv_text.splitlines()) == 1 + 20 * len(QUICK_MEMBERS) + 20 - QUICK_FORK_STEPS[0]  # the fork's updates
    assert cli_main(["analyze", str(demo_copy), "nope"]) == 2
    assert "unknown analysis 'nope'; available:" in capsys.readouterr().err


# --------------------------------------------------------------------------- a toy plug-in
@register
class MeanEmbeddingNorm(Analysis):
    """The worked example of docs/analyses.md: one number per checkpoint."""

    name = "toy_embedding_norm"
    summary = "mean L2 norm of the input embedding rows"
    options = (Option("rows", int, None, "only the first N rows"),)

    def compute(self, ctx):
        w = ctx.model.gpt_neox.embed_in.weight  # (V, d)
        if self.opts["rows"]:
            w = w[: self.opts["rows"]]
        return [Row("embedding_norm", w.norm(dim=1).mean().item())]


def test_toy_plugin_runs_through_the_runner(demo_copy):
    from safetensors.torch import load_file

    run = open_run(demo_copy)
    s = run_analyses(run, "toy_embedding_norm", members=QUICK_MEMBERS[1], steps="0,20", options={"rows": 10},
                     progress=False)
    assert len(s.computed) == 2
    rows = run.results().rows(analysis="toy_embedding_norm")
    w = load_file(demo_copy / "run" / QUICK_MEMBERS[1] / "step20" / "model.safetensors")["gpt_neox.embed_in.weight"]
    expected = float(np.linalg.norm(w[:10].numpy().astype(np.float64), axis=1).mean())
    assert rows[-1]["step"] == 20 and rows[-1]["value"] == pytest.approx(expected, rel=1e-6)
    assert rows[-1]["tokens"] == 20 * 8 * 64 and rows[-1]["size"] == "d32-l2" and rows[-1]["seed"] == 2


def test_second_writer_of_a_results_table_is_refused(demo_copy):
    from pythia.lock import LockedError, RunLock

    run = open_run(demo_copy)
    with RunLock(run.results_dir, "another pythia analyze", name=".analyze.lock"):
        with pytest.raises(LockedError, match="another pythia analyze"):
            run_analyses(run, "val_loss", steps="last", progress=False)
    assert run_analyses(run, "val_loss", steps="last", progress=False).ok  # released: no stale lock


def test_listed_steps_a_fork_lacks_are_skipped_for_it_with_a_warning(quick_demo, tmp_path):
    """`--steps 0,20` over a run with a fork (which starts at step 10): the fork is scored at 20
    only, with one warning naming it; a step no member has, or a single member lacking a listed
    step, is an error naming the member and its steps."""
    from pythia.run import RunError

    out, _ = quick_demo
    run = open_run(out / "run", results_dir=tmp_path / "r")
    fork = next(m.name for m in run.members if m.base is not None)
    with pytest.warns(UserWarning, match=rf"steps skipped for members without those checkpoints: {re.escape(fork)}: \[0\]"):
        summary = run_analyses(run, "val_loss", steps="0,20", device="cpu", progress=False)
    assert summary.ok and len(summary.computed) == 2 * len(QUICK_MEMBERS) + 1
    rows = {(r["member"], r["step"]) for r in run.results().rows(analysis="val_loss")}
    assert rows == {(m, s) for m in QUICK_MEMBERS for s in (0, 20)} | {(fork, 20)}
    with pytest.raises(RunError, match=rf"{re.escape(fork)} \(lacks \[0\]; has 10, 20\)"):
        run_analyses(run, "val_loss", members=fork, steps="0,20", device="cpu", progress=False)
    with pytest.raises(RunError, match=r"lacks \[3\]"):
        run_analyses(run, "val_loss", steps="3", device="cpu", progress=False)
