"""`pythia results import PATH [--suite NAME] --into RUN_OR_STORE`: published lm-eval results
(Pythia's evals tree, lm-eval 0.4 results_*.json) as rows of a results table.

`register_import(sub)` adds the subcommand to the subparsers of `pythia results`.
"""
from __future__ import annotations

import argparse

_EPILOG = """\
examples:
  # Pythia's published evals (github.com/EleutherAI/pythia, evals/pythia-v1) beside a suite
  pythia results import pythia/evals/pythia-v1/pythia-70m-deduped --into demo-output
  # a standalone store of Pythia's curves, under a suite name of your choice
  pythia results import pythia/evals/pythia-v1 --into pythia-evals-store --suite pythia-v1
  # lm-eval 0.4 output (lm_eval --output_path, the PolyPythias evals)
  pythia results import polypythias-evals/pythia-70m-seed3 --into pythia-evals-store

Each file gives rows (suite, member, size, seed, step, tokens, task, metric, value, stderr)
under analysis `eval_import`; member, size, seed and step come from the file's config and its
path, shots from its config (five-shot rows are task@5shot). Importing again replaces the
same rows. Files that are not lm-eval results are listed and skipped.
"""


def run_import(args) -> int:
    from ..results_import import import_results

    summary = import_results(args.path, suite=args.suite, into=args.into)
    print(summary.format())
    return 0 if summary.files else 1


def register_import(sub) -> None:
    """Add `import` to the subparsers of `pythia results`."""
    p = sub.add_parser(
        "import",
        help="add published lm-eval results (Pythia's evals, lm-eval 0.4 JSON) to a results table",
        description="Read lm-evaluation-harness result JSON (the old format of Pythia's evals/pythia-v1 tree "
                    "and lm-eval 0.4's results_*.json) and add its rows to a run's results table or to a "
                    "standalone results store.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="a result JSON file or a folder searched recursively for them")
    p.add_argument("--into", required=True, metavar="RUN_OR_STORE",
                   help="a run folder / demo output (its results table) or a folder for a standalone store")
    p.add_argument("--suite", help="suite name for every imported row (default: from the model name, e.g. "
                                   "pythia-deduped)")
    p.set_defaults(func=run_import)
