"""`pythia` command line: a thin argparse front over importable functions.

Each area registers its own subcommands from a module of this package, so this file only
assembles them: models (model table), data (tokenizers, datasets, training order),
train/verify (suites), demo/report (the end-to-end job), analyze/results (the studies),
compare (a fork against its base, or any two members).
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings

from . import analyze as _analyze
from . import compare as _compare
from .. import __version__
from . import data as _data
from . import eval as _eval
from . import demo as _demo
from . import models as _models
from . import trace as _trace
from . import train as _train
from ..lock import LockedError

_AREAS = (_models, _data, _train, _demo, _analyze, _eval, _compare, _trace)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pythia",
        description=(
            "Build and study suites of GPT-NeoX language models across training time and scale: "
            "tokenize a corpus, rebuild GPT-NeoX's exact training order, train sizes x seeds on "
            "it with Pythia's recipe and checkpoint schedule, verify the checkpoints."
        ),
        epilog=(
            "examples:\n"
            "  pythia demo --quick            # micro suite end to end in under a minute\n"
            "  pythia models                  # Pythia sizes with exact parameter counts\n"
            "after `pythia demo` (demo-output/), from the repository root:\n"
            "  pythia data batch demo-output/data/train --seq-len 128 --train-iters 256 --batch-size 16 --step 0\n"
            "  pythia train examples/suite.yaml     # trains into runs/example-suite (paths: relative to the spec)\n"
            "  pythia verify runs/example-suite\n"
            "  pythia analyze runs/example-suite val_loss   # an analysis over every checkpoint\n"
            "  pythia results runs/example-suite --format table\n"
            "  pythia report runs/example-suite  # report/index.html, results.csv, learning-curve plot\n"
            "  pythia compare demo-output d96-l3-seed1 d96-l3-seed1+this   # the demo's fork vs its base\n"
            "  pythia trace --run demo-output --member d64-l2-seed1 'def __init__(self'   # spans in the training data\n"
            "run `pythia COMMAND --help` for each command's options."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pythia {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in _AREAS:
        area.register(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings meant for the user (what was skipped, dropped or assumed) as one line each,
    without the source line Python shows by default."""
    return f"pythia: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["results", "import"]:  # a subcommand beside `pythia results RUN`
        parser, argv = _analyze.results_import_parser(), argv[1:]
    elif argv[:1] == ["results"]:  # a query answers without loading every analysis plug-in
        parser = argparse.ArgumentParser(prog="pythia")
        _analyze.register_results(parser.add_subparsers(dest="command"))
    else:
        parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _one_line_warning
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pythia data batch ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, FileNotFoundError, FileExistsError) as exc:  # user errors (RunError, SpecError, ...)
        print(f"pythia: error: {exc}", file=sys.stderr)
        return 2
    except LockedError as exc:  # another writer holds the output: try again later (EX_TEMPFAIL)
        print(f"pythia: error: {exc}", file=sys.stderr)
        return 75
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        hint = "" if "re-run" in str(exc) else (  # DiskFullError already says what to do
            " Nothing is half-written under a final name: free some space and re-run the same command to go on.")
        print(f"pythia: error: {exc}{hint}", file=sys.stderr)
        return 74  # EX_IOERR


if __name__ == "__main__":
    sys.exit(main())
