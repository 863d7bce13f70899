"""`python -m pythia.lm_eval ARGS` (or `pythia-lm-eval ARGS`): lm-eval's own command line,
with the `pythia` model registered and no network access.

    python -m pythia.lm_eval --model pythia \\
        --model_args pretrained=demo-output/run,member=d64-l2-seed1,revision=step128 \\
        --include_path demo-output/tasks --tasks pythia_demo_nextline --output_path out/

Why a wrapper: lm-eval 0.4.13 resolves `--model` only through its own registry, filled from a
fixed table in lm_eval/models/__init__.py (MODEL_MAPPING); it loads no entry points or
plug-ins, so a plain `lm_eval --model pythia` cannot see a model that lives in another
package. This module imports `pythia.evals.lm` (which registers `pythia` after lm-eval's own
models, so `hf` stays available) and then hands the arguments, unchanged, to lm-eval's CLI.
Datasets and the Hub are switched to offline mode first (`pythia.evals.tasks.go_offline`).
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .evals import lm  # noqa: F401  (registers the `pythia` model)
    from .evals.tasks import go_offline
    from lm_eval.__main__ import cli_evaluate

    go_offline()
    saved = sys.argv
    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
