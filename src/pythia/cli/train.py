"""`pythia train SPEC.yaml` and `pythia verify RUN`: thin fronts over pythia.train."""
from __future__ import annotations

import argparse
import json
import sys

_TRAIN_EPILOG = """\
examples (from the repository root, after `make demo`, whose dataset the example reads):
  pythia train examples/suite.yaml --dry-run       # resolved spec, members, checkpoint steps, disk
  pythia train examples/suite.yaml                 # train (or resume) every member into runs/example-suite
  pythia train examples/suite.yaml --out runs/try2 # same suite into another folder
  pythia train demo-output/suite.yaml --out runs/demo-again   # the demo's own suite, retrained
  torchrun --nproc-per-node 2 -m pythia.train examples/suite.yaml   # data-parallel (DDP)

Relative paths inside a spec are relative to the spec file's folder (examples/suite.yaml reads
../demo-output/data/train and writes ../runs/example-suite); --out is relative to where you run.
A --dry-run that finds the run cannot start (its data missing) says why first and exits 2.
Without a terminal (piped, redirected, a batch job) progress is a plain line every 30 seconds:
step, loss, tokens/s, share done and ETA.

Re-running the same command after a crash or kill resumes every member from its last
complete checkpoint that holds optimizer state (bit-identical on CPU in fp32). SIGTERM or
SIGINT (Ctrl-C, a scheduler's preemption) lets the update in progress finish, writes a
resumable checkpoint of that step and exits with status 128 + signal (143 for SIGTERM, 130 for
SIGINT); a second signal stops at once. Exit status 0: every member trained; 2: bad spec or data.
The YAML schema is documented in examples/suite.yaml; the run folder layout in docs/training.md.

One writer per run: while a `pythia train` writes a run folder (it holds RUN/.pythia.lock),
a second one on the same folder is refused at once, naming the holder (host, pid, user,
since when); exit status 75. The lock goes with its process, even after kill -9.
`pythia verify` and `pythia report` only read, and work meanwhile.
If the disk fills up during a checkpoint, training stops with a message saying how much a
checkpoint needs (exit status 74); nothing half-written is kept, and re-running resumes.
--dry-run prints the disk the run will take.
"""

_VERIFY_EPILOG = """\
examples:
  pythia verify runs/my-suite
  pythia verify runs/my-suite --json > verify.json

Exit status 0 when every checkpoint matches its manifest, none is missing from the schedule,
and no two steps hold identical weights (except the expected step0 == step1 of gpt-neox's
lr = 0 first update); 1 otherwise.
"""


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="suite spec YAML (schema: examples/suite.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved spec, members, checkpoint steps and the disk they will take; train nothing")
    p.add_argument("--out", metavar="DIR", help="output folder (overrides the spec's `output`)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args) -> int:
    from ..train.spec import SuiteSpec
    from ..suite import dry_run, train_suite

    spec = SuiteSpec.from_yaml(args.spec)
    if args.out:
        spec = spec.replace(output=args.out)
    if args.dry_run:
        text, problem = dry_run(spec)
        if problem is not None:  # why first, then what the run would be
            print(f"pythia train: the run cannot start: {problem}", file=sys.stderr)
            sys.stderr.flush()
        print(text)
        return 2 if problem is not None else 0
    from ..train.preempt import TrainingInterrupted

    try:
        run_dir = train_suite(spec, progress=not args.no_progress)
    except TrainingInterrupted as exc:
        print(f"pythia train: {exc}", file=sys.stderr)
        return exc.exit_code
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {run_dir}  (check it with: pythia verify {run_dir})")
    return 0


def run_verify(args) -> int:
    from ..verify import verify_run

    report = verify_run(args.run, progress=not args.no_progress)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


def register(sub) -> None:
    """Add `train` and `verify` to the top-level parser."""
    p = sub.add_parser(
        "train",
        help="train a suite (sizes x seeds on one data order) with Pythia's recipe",
        description="Train every member of a suite spec on the same GPT-NeoX training order with Pythia's "
                    "recipe (AdamW, warmup + cosine, clipping, loss scaling) and checkpoint schedule "
                    "(0, 1, 2, 4, ... then every interval). Resumable: re-run the same command.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(p)
    p.set_defaults(func=run_train)
    v = sub.add_parser(
        "verify",
        help="check a run folder's checkpoints: hashes, missing steps, identical weights",
        description="Re-hash every checkpoint of a run against its manifest.json, list checkpoints missing "
                    "from the schedule in RUN/suite.yaml, and flag different steps holding identical weights.",
        epilog=_VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("run", help="run folder (the spec's `output`)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--no-progress", action="store_true",
                   help="no progress bar on stderr (shown by default: one tick per checkpoint hashed)")
    v.set_defaults(func=run_verify)
