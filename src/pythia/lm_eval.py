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
Datasets and the Hub are switched to offline mode first (`pythia.evals.tasks.go_offline`), and
without `--device` the device that exists is used (CUDA when available, else the CPU).
"""
from __future__ import annotations

import sys


def with_device(args: list[str]) -> list[str]:
    """`args` with `--device` added when absent: CUDA when torch sees it, else the CPU, as
    `pythia analyze` chooses (lm-eval's own default is cuda:0, an error on a machine without)."""
    runs = any(a == "--model" or a.startswith("--model=") for a in args)  # an evaluation, not `ls` or --help
    if not runs or any(a == "--device" or a.startswith("--device=") for a in args):
        return list(args)
    import torch

    return [*args, "--device", "cuda" if torch.cuda.is_available() else "cpu"]


def main(argv: list[str] | None = None) -> int:
    from .evals import lm  # noqa: F401  (registers the `pythia` model)
    from .evals.tasks import data_files_relative_to_yaml, go_offline
    from lm_eval.__main__ import cli_evaluate

    go_offline()
    data_files_relative_to_yaml()  # task folders written by pythia name their data files relatively
    saved = sys.argv
    args = list(sys.argv[1:] if argv is None else argv)
    sys.argv = ["lm_eval", *with_device(args)]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
