"""`pythia eval RUN --tasks T1,T2`: the `eval` analysis under a short name.

Same work, options and results as `pythia analyze RUN eval ...` (pythia.analysis.runner.
run_analyses with the analysis pythia.analysis.eval); prints the rows it covered.
"""
from __future__ import annotations

import argparse
import sys

_EPILOG = """\
examples:
  pythia eval demo-output                                   # the demo's own tasks (demo-output/tasks)
  pythia eval demo-output --tasks pythia_demo_nextline --num-fewshot 5 --steps 0,64,256
  pythia eval runs/my-suite --include-path my-tasks/ --tasks my_mc,my_cloze --members d64-l2-seed1
  pythia eval EleutherAI/pythia-70m --tasks lambada_openai --limit 100   # cached Hub revisions

Everything runs offline: tasks are lm-eval 0.4 YAMLs whose data are local files
(dataset_path: json) or already in the Hugging Face cache. Results go to the run's table
(RUN/results; `pythia results RUN --analysis eval`), the lm-eval JSON and per-item outcomes to
RUN/results/artifacts/eval/{member}/stepN/. Re-running is a no-op; adding a task computes
only that task. lm-eval's own command line with this model: python -m pythia.lm_eval --model pythia ...
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..analysis.eval import Eval

    p.add_argument("run", help="run folder, demo output, member or step folder, or Hub repo id(s)")
    for o in Eval.options:
        p.add_argument(o.flag, dest=o.name, type=o.type, default=None, metavar=o.name.upper(),
                       help=o.help + (f" (default {o.default})" if o.default is not None else ""))
    p.add_argument("--members", help="comma-separated member names (default: all)")
    p.add_argument("--steps", default="all", help="all, last, first, 0,64,128 or A:B (default: all)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")
    p.add_argument("--force", action="store_true", help="redo checkpoints whose rows are stored (task outputs "
                   "stored with a matching key are reused: delete RESULTS/artifacts/eval to recompute them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_eval(args) -> int:
    from ..analysis.runner import run_analyses
    from ..results import format_table
    from ..run import open_run

    run = open_run(args.run)
    options = {k: getattr(args, k) for k in ("tasks", "include_path", "num_fewshot", "limit", "batch_size",
                                             "bootstrap_iters")}
    summary = run_analyses(run, "eval", members=args.members, steps=args.steps, device=args.device,
                           dtype=args.dtype, options=options, progress=not args.no_progress, force=args.force)
    members = [m.name for m in run.select(args.members)]
    rows = run.results().rows(analysis="eval", member=members)
    print(format_table(rows, ("member", "step", "task", "metric", "value", "stderr")) if rows else "no results")
    print(summary.format(), file=sys.stderr)
    return 0 if summary.ok else 1


def register(sub) -> None:
    """Add `eval` to the top-level parser."""
    p = sub.add_parser(
        "eval",
        help="lm-evaluation-harness benchmarks at every checkpoint (= pythia analyze RUN eval)",
        description="Score every checkpoint of a run on lm-eval 0.4 tasks with this package's model; the "
                    "numbers equal lm-eval's own hf model on the same step folders. Each checkpoint is "
                    "loaded once for all tasks; results are cached per task.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run_eval)
