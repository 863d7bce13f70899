"""CPU: benchmarks at every checkpoint of the quick demo -- the `eval` sweep vs lm-eval's `hf`
model looping over the same step folders.

Ours: `run_analyses(open_run(DEMO), "eval", ...)`, what `pythia analyze DEMO eval` /
`pythia eval DEMO` run: tasks loaded once, each checkpoint loaded once, lm-eval's evaluator
with the `pythia` model. Baseline: for every step folder, lm-eval's `hf` model (transformers
GPTNeoXForCausalLM) built from the folder, then `lm_eval.simple_evaluate` on the same tasks
with one shared TaskManager, at batch size 1 (lm-eval's default: the numbers ours equal bit for
bit) and, for its best time, at --hf-batch (padded batches; its numbers move in the last bits).
Both sides: same tasks (the demo's, built from its held-out corpus), same bootstrap draws,
bootstraps in-process (DISABLE_MULTIPROC=1), same torch threads; a warm-up pass of each on
one checkpoint first (imports, first-call costs). Prints the per-checkpoint split (load /
score), the wall times (fastest of --reps alternating repetitions: the machine may be shared)
and their ratios, and how many numbers differ. Asserts nothing. ~3 minutes on 1 loaded core.

    .venv/bin/python benchmarks/bench_eval.py [--demo demo-output-quick] [--threads 1]
        [--members d64-l2-seed1] [--hf-batch 16] [--limit N] [--reps 2]
(a demo is made with `pythia demo --quick` in a temporary folder when --demo is not given)
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path


class _Timings(logging.Handler):
    """Collects the per-checkpoint 'load X s score Y s' lines of pythia.evals."""

    def __init__(self):
        super().__init__()
        self.items = []

    def emit(self, record):
        m = re.match(r"(\S+) (step\d+): load ([\d.]+)s score ([\d.]+)s", record.getMessage())
        if m:
            self.items.append((m[1], m[2], float(m[3]), float(m[4])))


def ours(demo: Path, tasks: list[str], include: Path, results: Path, args) -> tuple[float, list, dict]:
    from pythia.analysis.runner import run_analyses
    from pythia.run import open_run

    handler = _Timings()
    log = logging.getLogger("pythia.evals")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    run = open_run(demo, results_dir=results)
    t0 = time.perf_counter()
    summary = run_analyses(run, "eval", members=args.members, device="cpu", progress=False,
                           options={"tasks": ",".join(tasks), "include_path": str(include), "limit": args.limit,
                                    "bootstrap_iters": args.bootstrap_iters, "batch_size": args.batch_size})
    wall = time.perf_counter() - t0
    log.removeHandler(handler)
    assert summary.ok, summary.format()
    numbers = {(r["member"], r["step"], r["task"], r["metric"]): (r["value"], r["stderr"])
               for r in run.results().rows(analysis="eval")}
    return wall, handler.items, numbers


def hf_loop(demo: Path, tasks: list[str], include: Path, batch: int, args, steps=None) -> tuple[float, list, dict]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from pythia.evals.naming import result_rows
    from pythia.run import open_run

    run = open_run(demo)
    tm = TaskManager(include_path=str(include), include_defaults=False)
    split, numbers = [], {}
    t0 = time.perf_counter()
    for m in run.select(args.members):
        for ck in m.checkpoints(steps or "all"):
            t1 = time.perf_counter()
            lm = HFLM(pretrained=str(ck.path), dtype="float32", device="cpu", batch_size=batch)
            t2 = time.perf_counter()
            out = simple_evaluate(model=lm, tasks=tasks, task_manager=tm, limit=args.limit,
                                  bootstrap_iters=args.bootstrap_iters)
            split.append((m.name, ck.revision, t2 - t1, time.perf_counter() - t2))
            for task, metrics in out["results"].items():
                for r in result_rows(task, out["n-shot"].get(task, 0), metrics):
                    numbers[(m.name, ck.step, r["task"], r["metric"])] = (r["value"], r["stderr"])
    return time.perf_counter() - t0, split, numbers


def _split_table(name: str, split: list) -> None:
    print(f"\n{name}: per checkpoint (seconds)")
    print(f"  {'member':<16} {'step':<8} {'load':>7} {'score':>7}")
    for member, rev, load, score in split:
        print(f"  {member:<16} {rev:<8} {load:7.3f} {score:7.3f}")
    n = max(1, len(split))
    print(f"  {'mean':<25} {sum(s[2] for s in split) / n:7.3f} {sum(s[3] for s in split) / n:7.3f}")


def _compare(ours_n: dict, ref: dict) -> str:
    keys = sorted(set(ours_n) | set(ref), key=str)
    same = sum(1 for k in keys if ours_n.get(k) == ref.get(k))
    worst = max((abs(ours_n[k][0] - ref[k][0]) / max(1e-300, abs(ref[k][0])) for k in keys
                 if k in ours_n and k in ref), default=0.0)
    return f"{same}/{len(keys)} numbers identical (value and stderr), largest relative value difference {worst:.2e}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", help="a `pythia demo --quick` output (default: make one in a temporary folder)")
    p.add_argument("--members", help="comma-separated members (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default 1)")
    p.add_argument("--hf-batch", type=int, default=16, help="the hf model's batch size for its best time (0: skip)")
    p.add_argument("--batch-size", type=int, default=16, help="our batch size (numbers do not depend on it)")
    p.add_argument("--bootstrap-iters", type=int, default=1000)
    p.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    p.add_argument("--reps", type=int, default=2, help="alternating repetitions of each side (default 2)")
    args = p.parse_args()

    os.environ["DISABLE_MULTIPROC"] = "1"
    import torch

    torch.set_num_threads(args.threads)
    from pythia.evals.demo_tasks import DEMO_TASKS, build_corpus_tasks
    from pythia.evals.tasks import go_offline
    from pythia.run import open_run

    go_offline()
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    demo = Path(args.demo) if args.demo else tmp / "demo"
    if not args.demo:
        from pythia.cli import main as pythia_main

        assert pythia_main(["demo", "--quick", "--out", str(demo), "--no-progress"]) == 0
    include = build_corpus_tasks(demo / "corpus" / "valid.jsonl", tmp / "tasks")
    tasks = list(DEMO_TASKS)
    n_ck = sum(len(m.steps) for m in open_run(demo).select(args.members))
    print(f"quick demo {demo}: {n_ck} checkpoints x tasks {', '.join(tasks)}; torch threads {args.threads}; "
          f"bootstrap draws {args.bootstrap_iters}; limit {args.limit}")

    # warm-up: imports and first calls of both sides, on one checkpoint (not timed)
    first = open_run(demo).select(args.members)[0]
    warm = argparse.Namespace(**{**vars(args), "members": first.name, "limit": 2})
    ours(demo, tasks, include, tmp / "warm", warm)
    hf_loop(demo, tasks, include, 1, warm, steps=str(first.steps[-1]))

    sides = {"pythia eval sweep": lambda r: ours(demo, tasks, include, tmp / f"results{r}", args),
             "lm-eval hf loop, batch 1": lambda r: hf_loop(demo, tasks, include, 1, args)}
    if args.hf_batch:
        sides[f"lm-eval hf loop, batch {args.hf_batch}"] = lambda r: hf_loop(demo, tasks, include, args.hf_batch, args)
    best: dict = {}
    for r in range(args.reps):  # alternate the sides; keep each side's fastest repetition
        for name, side in sides.items():
            got = side(r)
            if name not in best or got[0] < best[name][0]:
                best[name] = got
    names = list(sides)
    for name in names:
        _split_table(name, best[name][1])
    wall_o, _, num_o = best[names[0]]
    print(f"\nwall time, {n_ck} checkpoints (fastest of {args.reps} alternating repetitions):")
    print(f"  {names[0]:<30} {wall_o:8.2f} s")
    for name in names[1:]:
        wall, _, num = best[name]
        print(f"  {name:<30} {wall:8.2f} s   ratio {wall / wall_o:5.2f}x   same numbers: {_compare(num_o, num)}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
