"""`pythia demo` (the whole pipeline on Python's own standard library) and `pythia report RUN`."""
from __future__ import annotations

import argparse

_FMT = argparse.RawDescriptionHelpFormatter
# Wall time of the demos as README.md states it (tests/test_demo.py checks that both agree).
FULL_DURATION = "about 6 minutes on 2 idle CPU cores"
QUICK_DURATION = "under a minute"


def register(sub) -> None:
    """Add `demo` and `report` to the top-level parser."""
    p = sub.add_parser(
        "demo",
        help="train a small suite end to end on a built-in corpus and write a report",
        description=(
            "Run a complete Pythia-style study with nothing to download. The corpus is the\n"
            "standard library of the Python running this command (source + help() topics;\n"
            "its sha256 and the Python version are recorded). The demo trains a BPE tokenizer,\n"
            "tokenizes, rebuilds GPT-NeoX's training order, trains a suite of sizes x seeds on\n"
            "it with Pythia's log-spaced checkpoint schedule scaled to the run, scores the\n"
            "validation loss at every checkpoint, forks one member for a data intervention, runs\n"
            "every study on the suite (benchmarks with lm-eval, memorization, tracing texts to\n"
            "the training data, weight statistics, token-level learning curves, spread over seeds\n"
            "and a training map, scaling laws, representations and the optimizer's state, term\n"
            "counts and the arithmetic term-frequency study, in-context learning, induction heads\n"
            "and lenses, the fork's probe), and writes the report: an interactive HTML page, a\n"
            "table (CSV) and a learning-curve plot (PNG).\n\n"
            f"  full (default): 3 sizes x 4 seeds, 256 steps, 21 checkpoints; {FULL_DURATION}\n"
            f"  --quick:        2 micro sizes x 2 seeds, 20 steps; {QUICK_DURATION}\n\n"
            "Re-running the same command continues an interrupted demo where it stopped;\n"
            "a finished demo is not retrained (the report is rebuilt)."
        ),
        epilog=(
            "examples:\n"
            "  pythia demo                       # full demo into ./demo-output\n"
            "  pythia demo --quick               # micro suite into ./demo-output-quick\n"
            "  pythia demo --out /tmp/d --quick  # choose the folder\n"
            "output: OUT/corpus, OUT/data, OUT/suite.yaml, OUT/tasks*, OUT/run/{member}/step{N}/,\n"
            "        OUT/run/results/ (every study's rows),\n"
            "        OUT/report/{index.html,results.csv,learning_curves.png,summary.txt}"
        ),
        formatter_class=_FMT,
    )
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: demo-output, or demo-output-quick with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"micro suite (2 sizes x 2 seeds, 20 steps), {QUICK_DURATION}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (and, when not on a terminal, no plain progress lines)")
    p.set_defaults(func=_demo)

    r = sub.add_parser(
        "report",
        help="one interactive HTML page for a run (plus CSV, PNG, summary)",
        description=(
            "Write PATH/report/index.html: one self-contained page (plotly.js inlined; opens from\n"
            "disk with no network) with a header saying what the run is (spec, members, tokens\n"
            "seen, data and order, verify status, versions) and a section per analysis in the\n"
            "results table: learning curves, benchmarks (with imported Pythia results beside),\n"
            "memorization, seeds and training maps, term frequency, interventions; any other\n"
            "analysis as metric vs step. Plots: hover for values, click legend entries to toggle\n"
            "sizes and seeds, log step axis with step 0 at the left. Also writes results.csv,\n"
            "learning_curves.png and summary.txt (final validation loss per size).\n\n"
            "PATH is a run folder, a demo output, a member folder, Hub repo id(s) in the local\n"
            "cache, or a standalone results store (a folder with units/, e.g. written by\n"
            "`pythia results import ... --into DIR`)."
        ),
        epilog=(
            "examples:\n"
            "  pythia report demo-output                      # writes demo-output/report/\n"
            "  pythia report runs/my-suite --out reports/my-suite\n"
            "  pythia report runs/my-suite --no-verify        # skip re-hashing the checkpoints\n"
            "  pythia report pythia-evals-store               # imported results alone"
        ),
        formatter_class=_FMT,
    )
    r.add_argument("run", metavar="PATH", help="run folder, demo output, member folder, Hub repo id or results store")
    r.add_argument("--out", metavar="DIR", default=None, help="output folder (default: PATH/report)")
    r.add_argument("--no-verify", action="store_true",
                   help="do not re-hash every checkpoint for the header's verify status (`pythia verify`)")
    r.set_defaults(func=_report)


def _demo(args) -> int:
    from pythia.demo.pipeline import describe, run_demo

    # progress bars on a terminal; elsewhere (piped, redirected) training prints a plain line
    # at a steady interval and the other stages their summary lines
    result = run_demo(args.out, quick=args.quick, progress=not args.no_progress)
    print(describe(result))
    return 0


def _report(args) -> int:
    from pythia.report import build_report, format_forks, format_summary

    rep = build_report(args.run, args.out, verify=not args.no_verify)
    print(f"report  {rep.html} ({len(rep.sections)} sections, checkpoints verify: {rep.verify_status})")
    print(f"table   {rep.table} ({len(rep.rows)} rows)")
    print(f"plot    {rep.plot if rep.plot else '(no loss recorded; no plot)'}")
    print(f"summary {rep.summary_text}")
    print("\n".join([format_summary(rep.summary)] + format_forks(rep.forks, rep.val_metric)))
    return 0
