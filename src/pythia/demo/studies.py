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
    tracing          OLMoTrace spans of a few memorized sequences and greedy generations (DEMO_PROMPTS)
                     of each size's first seed at its last checkpoint, with the step each span was
                     first seen; the last-word task's items traced (contamination by step)
    representations  per-layer CKA across checkpoints and seeds, spectra and sparsity of weights and
                     probe gradients at `representation_steps` (a probe of `probe_windows` x
                     `probe_len` held-out tokens); the optimizer-state statistics at every
                     checkpoint that keeps AdamW moments (the others are skipped with one warning)
    intervention     the fork's pronoun probe (pipeline.run_probe)
    scaling          Chinchilla's L(N, D) and Kaplan's L(N) of the validation loss over the sizes,
                     seeds as replicates, and accuracy against loss on the last-word task (three
                     tiny sizes make a toy fit: the pipeline, not the exponents)
    mechanisms       loss by position and the ICL score on 8 held-out windows, head scores on 16
                     sequences of repeated random tokens (at most 25 tokens, 4 repeats to a
                     context) and the logit lens at `mechanism_steps`, a tuned lens (100 steps) on
                     the last checkpoint of the largest size's first seed, the phase-change step
                     per member
    token dynamics   token_curves (surprisal of every probe token, age of acquisition, n-gram fits;
                     read with the weight statistics) and seed_convergence (cross-seed KL) at
                     `convergence_steps` on the first `convergence_windows` validation windows

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
# Prompts whose greedy continuations the tracing study traces back to the training data.
DEMO_PROMPTS = ("import", "    def __init__(self", "class")


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
    token_steps: str = "all"
    """Steps of the weight statistics and the token curves (read together: one load per checkpoint)."""
    token_windows: int | None = None
    """Probe windows of token_curves (None: the validation loss's)."""
    convergence_steps: str = "all"
    convergence_windows: int | None = None
    """Probe windows of seed_convergence (None: the validation loss's)."""
    mechanism_steps: str = "all"
    """Steps of icl, heads and lens ("all", or comma-separated: a log-spaced subset sees the phase change)."""
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
    prompts = out_dir / "prompts.txt"
    write_text_atomic(prompts, "\n".join(DEMO_PROMPTS) + "\n")
    traced = [m.name for m in run.members if m.name in base and m.seed == min(mm.seed for mm in run.members)]
    analyze("tracing", "trace", members=traced, steps="last",
            options={"prompts": str(prompts), "memorized": 3, "max_new_tokens": 24})
    analyze("tracing", "trace_contamination", members=traced, options={"task": "pythia_demo_lastword", "items": 20})
    probe = {"probe_windows": studies.token_windows}
    analyze("seeds", "weights,token_curves", members=base, steps=studies.token_steps, options=probe)  # one load each
    analyze("seeds", "seeds,training_map", members=base)
    analyze("scaling", "scaling")
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
    analyze("token dynamics", "seed_convergence", options={"probe_windows": studies.convergence_windows,
                                                           "convergence_steps": studies.convergence_steps})
    mechanisms(run, base, analyze, studies.mechanism_steps)


def mechanism_options(seq_len: int) -> dict:
    """The demo's options of icl, heads and lens (cheap: 8 held-out windows, 16 probe sequences)."""
    return {"probe_len": min(25, seq_len // 4), "probe_n": 16, "held_out_windows": 8, "mech_batch": 8,
            "tuned_steps": 100}


def mechanisms(run, base: list[str], analyze: Callable, which: str = "all") -> None:
    """icl, heads and lens in one sweep (one model load and one held-out pass per checkpoint) at
    the steps `which`; the tuned lens's member is swept in two parts so that its last step keeps
    --tuned on a rerun."""
    options = mechanism_options(run.spec.data.seq_len)
    tuned = [n for n in base if run.member(n).shape == run.member(base[-1]).shape][0]  # the spec lists sizes up
    steps = run.member(tuned).steps
    if which != "all":
        wanted = {int(s) for s in which.split(",")}
        steps = [s for s in steps if s in wanted]
    analyze("mechanisms", "icl,heads,lens", members=[n for n in base if n != tuned], steps=which, options=options)
    analyze("mechanisms", "icl,heads,lens", members=[tuned], steps=steps[:-1], options=options)
    analyze("mechanisms", "icl,heads,lens", members=[tuned], steps=steps[-1:], options={**options, "tuned": True})
    analyze("mechanisms", "phase_change")
