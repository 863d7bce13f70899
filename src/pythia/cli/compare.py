"""`pythia compare RUN BASE FORK`: a thin front over pythia.compare."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_EPILOG = """\
examples:
  pythia compare demo-output d64-l2-seed1 d64-l2-seed1+this          # a fork against its base
  pythia compare demo-output d64-l2-seed1 d64-l2-seed1+this --metric val_loss --format csv
  pythia compare runs/my-suite pythia-160m-seed1 pythia-160m-seed1+pronouns --analysis pronoun_probe
  pythia compare pythia-results/imported pythia-410m-deduped pythia-intervention-410m-deduped

RUN is a run folder, a `pythia demo` output, Hub repo id(s) (as for `pythia analyze`), or a
standalone results folder (one holding units/, e.g. imported evaluation results). For every
(analysis, task, metric) both members have, at every step both have it, the comparison gives
both values and fork - base. The rows are stored in the results table (analysis "compare",
member FORK, metrics METRIC:base, METRIC:fork, METRIC:diff; see `pythia results RUN --analysis
compare`), and a plot goes to RESULTS/plots/compare_FORK_vs_BASE.png (or --plot). Run the
analyses first (e.g. `pythia analyze RUN pronoun_probe --members BASE,FORK`).
"""


def _store(args):
    """(ResultsStore, RunView or None) of RUN."""
    from ..results import ResultsStore
    from ..run import open_run

    path = Path(args.run)
    if path.is_dir() and (path / "units").is_dir() and not (path / "suite.yaml").is_file():
        return ResultsStore(path), None
    run = open_run(args.run, results_dir=args.results_dir)
    return run.results(), run


def _compare(args) -> int:
    from ..compare import compare, default_plot_path

    store, run = _store(args)
    from_step = None
    if run is not None:
        names = {m.name: m for m in run.members}
        fork = names.get(args.fork)
        if fork is not None and fork.base == args.base:
            from_step = fork.from_step
    plot = None if args.no_plot else (args.plot or default_plot_path(store, args.base, args.fork))
    result = compare(store, args.base, args.fork, analysis=_split(args.analysis), metric=_split(args.metric),
                     task=_split(args.task), plot=plot, from_step=from_step)
    if args.format == "json":
        print(json.dumps(result.rows, indent=1))
    elif args.format == "csv":
        sys.stdout.write(store.to_csv(result.rows))
    else:
        print(f"{args.fork} vs {args.base}: {len(result.series)} metrics at common steps"
              + (f" (fork from step {from_step})" if from_step is not None else ""))
        print(result.summary())
        print(f"rows: {len(result.rows)} in {store.root} (analysis compare, member {args.fork})")
        if result.plot is not None:
            print(f"plot: {result.plot}")
    return 0


def _split(text):
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare two members (a fork and its base) metric by metric, step by step",
                       description="Both members' values and their difference (fork - base) at every common step, "
                                   "for every metric of the results table; stored as rows and drawn as a plot.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run folder, demo output, Hub repo id(s), or a results folder")
    p.add_argument("base", metavar="BASE", help="the reference member (e.g. the fork's base)")
    p.add_argument("fork", metavar="FORK", help="the member compared with it (e.g. MEMBER+INTERVENTION)")
    p.add_argument("--analysis", metavar="A[,A]", help="only these analyses")
    p.add_argument("--metric", metavar="M[,M]", help="only these metrics")
    p.add_argument("--task", metavar="T[,T]", help="only these tasks")
    p.add_argument("--results-dir", metavar="DIR", help="results folder of RUN (default RUN/results)")
    p.add_argument("--plot", metavar="PNG", help="where the plot goes (default RESULTS/plots/compare_FORK_vs_BASE.png)")
    p.add_argument("--no-plot", action="store_true", help="no plot")
    p.add_argument("--format", default="table", choices=("table", "csv", "json"),
                   help="table: one summary line per metric (default); csv/json: every comparison row")
    p.set_defaults(func=_compare)
