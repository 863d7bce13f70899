"""`pythia analyze RUN NAME[,NAME]` and `pythia results RUN`: thin fronts over pythia.analysis
and pythia.results. Each analysis' options become flags here automatically."""
from __future__ import annotations

import argparse
import json
import sys

_FMT = argparse.RawDescriptionHelpFormatter

_ANALYZE_EPILOG = """\
examples:
  pythia analyze --list                                   # the registered analyses
  pythia analyze demo-output val_loss                     # every member, every checkpoint
  pythia analyze demo-output/run val_loss --members d64-l2-seed1 --steps last
  pythia analyze runs/my-suite val_loss --steps 0:1000    # steps in [0, 1000)
  pythia analyze EleutherAI/pythia-70m NAME --steps step1000,step143000   # local HF cache
  pythia analyze pythia-store scaling --metric perplexity --task lambada_openai   # imported results
  torchrun --nproc-per-node 4 -m pythia.cli analyze runs/my-suite NAME   # checkpoints split over ranks

RUN is a run folder, a `pythia demo` output, a member or step folder, Hub repo id(s) whose
stepN revisions are in the local Hugging Face cache, or a results store (`pythia results import
... --into DIR`: whole-run analyses only). Each checkpoint is loaded once for all the
analyses asked; results land in RUN/results (see `pythia results`). A re-run skips what is up to
date (same analysis version, options and checkpoint weights); a changed checkpoint is recomputed;
an interrupted run loses at most the checkpoint in progress. --members and --steps select
checkpoints; whole-run analyses always cover every member. Exit status 1 when a checkpoint
failed (its manifest, or an error in an analysis): each is named at the end.
"""

_RESULTS_EPILOG = """\
examples:
  pythia results demo-output                              # the whole table as CSV
  pythia results demo-output --analysis val_loss --format table
  pythia results runs/my-suite --metric val_loss --member d64-l2-seed1 --format json

Columns: suite, member, size, seed, step, tokens, analysis, task, metric, value, stderr.

Published results (Pythia's evals, lm-eval 0.4 JSON) join a table with
  pythia results import PATH --into RUN_OR_STORE [--suite NAME]   (see pythia results import --help)
"""


def _analysis_options():
    """{option name: Option} over every registered analysis (first definition wins)."""
    from ..analysis.base import available

    seen = {}
    for cls in available().values():
        for o in cls.options:
            seen.setdefault(o.name, o)
    return seen


def _bool_type(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _run_source(p) -> None:
    p.add_argument("run", metavar="RUN", nargs="?",
                   help="run folder, demo output, member/step folder, or Hub repo id(s) in the local HF cache "
                        "(pythia results also reads a standalone results store)")
    p.add_argument("--results-dir", metavar="DIR",
                   help="where results are kept (default RUN/results; for Hub repos ./pythia-results/NAME)")
    p.add_argument("--data", metavar="PREFIX", help="Hub repos only: the preshuffled training data they read")


def _open(args):
    from ..run import open_run

    if not args.run:
        raise ValueError("name a RUN (a run folder, demo output, member or step folder, or Hub repo id)")
    return open_run(args.run, results_dir=args.results_dir, data=args.data)


def _analyze(args) -> int:
    from ..analysis.base import available

    if args.list:
        for name, cls in available().items():
            opts = " ".join(o.flag for o in cls.options)
            print(f"{name:<26} [{cls.scope}] {cls.summary}" + (f"  (options: {opts})" if opts else ""))
        return 0
    if not args.names:
        raise ValueError("name the analyses to run (comma-separated), e.g. `pythia analyze RUN val_loss`; "
                         "`pythia analyze --list` shows them")
    from ..analysis.runner import run_analyses

    run = _open(args)
    options = {name: getattr(args, name) for name in _analysis_options()}
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        summary = run_analyses(run, args.names, members=args.members, steps=args.steps, device=args.device,
                               dtype=args.dtype, options=options, progress=progress, force=args.force)
    except KeyboardInterrupt as exc:
        done = getattr(exc, "summary", None)
        kept = f"{len(done.computed)} unit(s) computed in this run are" if done is not None else "every finished unit is"
        print(f"\npythia analyze: interrupted. {kept} kept in {run.results_dir} (only the checkpoint in progress "
              f"is lost); run the same command again to resume: it skips what is up to date.", file=sys.stderr)
        return 130
    print(summary.format())
    print(f"results: {run.results_dir}  (print them with: pythia results {args.run})")
    return 0 if summary.ok else 1


def _results(args) -> int:
    from ..results import format_table

    from pathlib import Path

    from ..results import ResultsStore

    from ..results import is_store

    if args.run and is_store(Path(args.run)):  # a standalone store (pythia results import --into)
        run, store = None, ResultsStore(args.run)
    else:
        run = _open(args)
        store = run.results()
    if args.compact:
        return _compact(store, _split(args.analysis))
    member = _split(args.member) or ([run.focus_member] if run is not None and run.focus_member else None)
    filters = dict(analysis=_split(args.analysis), metric=_split(args.metric), member=member, task=_split(args.task))
    if args.format == "csv":  # streamed: the whole table of a large run never sits in memory as rows
        for text in store.csv_chunks(**filters):
            sys.stdout.write(text)
        return 0
    rows = store.rows(**filters)
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows) if rows else "(no results)")
    return 0


def _split(text):
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def register(sub) -> None:
    p = sub.add_parser("analyze", help="run analyses over a run's checkpoints into its results table",
                       description="Run registered analyses (plug-ins) over every selected checkpoint (member x "
                                   "step) of a run, loading each checkpoint once; results go to the run's "
                                   "results table.", epilog=_ANALYZE_EPILOG, formatter_class=_FMT)
    _run_source(p)
    p.add_argument("names", metavar="NAME[,NAME]", nargs="?", help="analyses to run, comma-separated")
    p.add_argument("--list", action="store_true", help="list the registered analyses with one line each")
    p.add_argument("--members", metavar="M[,M]", help="members to analyse (default: all, or the member folder given)")
    p.add_argument("--steps", default=None, metavar="SEL",
                   help="all (default), last, first, a list 0,1,2 or step0,step8, or a range A:B (B exclusive)")
    p.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda, cuda:1")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="dtype to load weights in (default float32; Hub weights are fp16)")
    p.add_argument("--force", action="store_true", help="recompute even what is up to date")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("analysis options (each applies to the analyses that declare it)")
    for o in _analysis_options().values():
        kind = _bool_type if o.type is bool else o.type
        g.add_argument(o.flag, dest=o.name, type=kind, default=None, choices=o.choices,
                       help=o.help + ("" if o.default is None else f" (default: {o.default})"))
    p.set_defaults(func=_analyze)
    register_results(sub)


def _compact(store, analyses) -> int:
    before = {name: len(store.units(name)) for name in (analyses or store.analyses())}
    done = store.compact(analyses)
    for name in done:
        print(f"folded {before[name]:,} unit(s) of {name} into {store.root / 'table' / (name + '.parquet')}")
    if not done:
        print("nothing to fold: no loose units" + (f" of {', '.join(analyses)}" if analyses else "")
              + (" (or another process is folding this store)" if any(before.values()) else ""))
    return 0


def register_results(sub) -> None:
    """`pythia results RUN`: its parser needs no analysis plug-in, so the command starts fast."""
    r = sub.add_parser("results", help="print a run's results table (CSV, JSON or a text table)",
                       description="Print the tidy results table of a run: every number its analyses produced.",
                       epilog=_RESULTS_EPILOG, formatter_class=_FMT)
    _run_source(r)
    r.add_argument("--analysis", metavar="A[,A]", help="only these analyses")
    r.add_argument("--metric", metavar="M[,M]", help="only these metrics")
    r.add_argument("--member", metavar="M[,M]", help="only these members")
    r.add_argument("--task", metavar="T[,T]", help="only these tasks")
    r.add_argument("--format", default="csv", choices=("csv", "json", "table"), help="output format (default csv)")
    r.add_argument("--compact", action="store_true",
                   help="fold the loose result units (one JSON file per analysis, member and checkpoint) of "
                        "every analysis, or of --analysis, into one Parquet table each, then exit: queries then "
                        "read columns instead of parsing every file (sweeps do it from 1,000 units on)")
    r.set_defaults(func=_results)


def results_import_parser() -> argparse.ArgumentParser:
    """`pythia results import ...`: its own parser (argparse cannot put a subcommand beside the
    optional RUN of `pythia results`); pythia.cli.main routes those arguments here."""
    from .results_import import register_import

    p = argparse.ArgumentParser(prog="pythia results", formatter_class=_FMT)
    register_import(p.add_subparsers(metavar="import"))
    return p
