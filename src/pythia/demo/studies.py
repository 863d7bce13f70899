"""The studies `pythia demo` runs on its trained suite before the report: every analysis of the
toolkit once, through the same runner as `pythia analyze` (so each is cached per checkpoint and
a re-run after an interruption computes only what is missing).

    benchmarks       eval: the demo's lm-eval tasks (cut from held-out documents) at `eval_steps`
    memorization     Pythia's score of trained sequences at `memorization_steps` (32-token prompt,
                     `memorization_cont_len` tokens to reproduce), with how often each occurs in
                     the data seen; which earlier checkpoints and smaller sizes predict a memorized set
    seeds            checkpoint weight statistics at every step, spread over seeds, outliers,
                     per-item agreement, and the PolyPythias training map (Gaussian HMM)
    term frequency   counts of a few terms by step, and the arithmetic study (accuracy per x1
                     against how often x1 was seen) for the `arithmetic_seeds` at `arithmetic_steps`
    representations  per-layer CKA across checkpoints and seeds, spectra and sparsity of weights and
                     probe gradients at `representation_steps` (a probe of `probe_windows` x
                     `probe_len` held-out tokens); the optimizer-state statistics at every
                     checkpoint that keeps AdamW moments (the others are skipped with one warning)
    intervention     the fork's pronoun probe (pipeline.run_probe)

The demo corpus is Python code: arithmetic accuracy stays near zero and the benchmarks near
chance for models this small. The pipeline, not the numbers, is what those sections show.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pythia.io import write_text_atomic

# Terms whose counts the report follows over training steps: Python's most frequent identifier,
# the intervention's replacement, and two keywords.
DEMO_TERMS = (" self", " this", "import", " None")


@dataclass(frozen=True)
class DemoStudies:
    """Which checkpoints each study reads (every study runs on every seed and size unless said)."""

    eval_steps: str
    """Steps of the benchmark sweep ("all" or a list): per-item outcomes feed seed agreement."""
    eval_limit: int | None
    """Documents per benchmark task (the held-out perplexity task alone reads every valid token)."""
    memorization_steps: str
    memorization_positions: str | None
    """Training positions A:B scored at every memorization step (None: all trained by the step)."""
    memorization_cont_len: int
    """Tokens to reproduce after the 32-token prompt (Pythia: 32; models this small reproduce
    32 tokens of nothing, but a few sequences' next 4 tokens)."""
    arithmetic_steps: str
    arithmetic_x2_max: int
    """Items x2 = 1..N per x1 (the study: 50); few, because lm-eval runs a hundred tasks per step."""
    arithmetic_seeds: tuple[int, ...]
    """Seeds whose members (every size) answer the arithmetic tasks."""
    representation_steps: str = "all"
    """Steps of the representations study (the last one is every CKA's reference)."""
    probe_windows: int = 64
    probe_len: int | None = None
    """Probe tokens per window (None: the run's sequence length)."""


def run_studies(studies: DemoStudies, out_dir: Path, run_dir: Path, progress: bool = False,
                log: Callable[[str], None] = print) -> None:
    """Every analysis on the demo's run, each logged with what it computed and its seconds."""
    from pythia.analysis.runner import run_analyses
    from pythia.analysis.term_frequency import TASK_PREFIX, write_arithmetic_tasks
    from pythia.evals.demo_tasks import build_demo_tasks
    from pythia.run import open_run

    run = open_run(run_dir)
    base = [m.name for m in run.members if m.base is None]  # the fork has its own study (pipeline.run_probe)

    def analyze(label: str, names: str, **kw) -> None:
        t0 = time.monotonic()
        summary = run_analyses(run, names, device="cpu", progress=progress, **kw)
        if not summary.ok:
            raise RuntimeError(f"demo study {label}: {summary.format()}")
        took = time.monotonic() - t0
        log(f"      {label:<15s} {names:<28s} {len(summary.computed):4d} computed, "
            f"{len(summary.cached):4d} up to date, {took:5.1f} s")

    build_demo_tasks(out_dir)  # OUT/tasks: the eval analysis finds them on its own
    analyze("benchmarks", "eval", members=base, steps=studies.eval_steps, options={"limit": studies.eval_limit})
    analyze("memorization", "memorization", members=base, steps=studies.memorization_steps,
            options={"positions": studies.memorization_positions, "cont_len": studies.memorization_cont_len,
                     "duplicates": True})
    analyze("memorization", "memorization_predictability")
    analyze("seeds", "weights", members=base)
    analyze("seeds", "seeds,training_map", members=base)
    analyze("representations", "representations", members=base, steps=studies.representation_steps,
            options={"probe_windows": studies.probe_windows, "probe_len": studies.probe_len})
    analyze("representations", "optimizer_state", members=base)

    terms = out_dir / "terms.txt"
    write_text_atomic(terms, "\n".join(DEMO_TERMS) + "\n")
    analyze("term frequency", "term_counts", members=base, options={"terms": str(terms)})
    arith = out_dir / "tasks-arithmetic"
    if not (arith / "tasks.json").is_file():
        write_arithmetic_tasks(arith, ops=("addition",), x2_max=studies.arithmetic_x2_max)
    arith_members = [m.name for m in run.members if m.name in base and m.seed in studies.arithmetic_seeds]
    analyze("term frequency", "eval", members=arith_members, steps=studies.arithmetic_steps,
            options={"tasks": f"{TASK_PREFIX}_addition", "include_path": str(arith), "num_fewshot": 2,
                     "bootstrap_iters": 0})
    analyze("term frequency", "term_frequency", members=arith_members)
