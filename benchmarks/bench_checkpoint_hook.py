"""CPU: what the trainer's checkpoint callback costs at step 1,000 and at step 143,000 (Pythia's last).

At every checkpoint the analyses' callback (`pythia.analysis.runner.CheckpointAnalyses`) keeps
the training losses in the results table. The old hook re-read every member's whole
metrics.jsonl and rewrote one whole-run `train_loss` unit, so its cost grew with the updates done
(x members, x checkpoints: 154 of them at Pythia's scale). The callback now appends the updates
since the previous checkpoint as one unit per member and interval, read from the end of the log.

Both are timed here on the same synthetic run (143,000 updates, a checkpoint every 1,000 as
Pythia's after step 512; its log-spaced early ones are left out so that step 1,000 covers 1,000
updates like every later checkpoint; `--members` members with metrics.jsonl lines shaped like
the trainer's), with each member's log cut at the step being checkpointed: "before" is the
old hook re-implemented here (the whole-run `train_loss` analysis over every member, one unit),
"after" is `CheckpointAnalyses.post_checkpoint_saved` with no per-checkpoint analyses (the
train-loss part alone: no model). Prints the medians and the ratios; asserts nothing.

    .venv/bin/python benchmarks/bench_checkpoint_hook.py [--members 2 --reps 3]
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

PYTHIA_ITERS = 143_000
STEPS = (1_000, PYTHIA_ITERS)


def metrics_line(step: int) -> str:
    """One metrics.jsonl record as the trainer writes it (sorted keys, every field)."""
    record = {"batch_fp": f"{step * 2654435761 % 2**64:016x}", "consumed_samples": step * 1024,
              "grad_norm": 0.5 + (step % 97) / 97, "loss": 2.0 + 8.0 / (1 + step / 1000), "loss_scale": 4096.0,
              "lr": 1e-3 * min(1.0, step / 1430), "skipped": False, "step": step, "time": 1.7e9 + step,
              "tokens_per_s": 123456.7}
    return json.dumps(record, sort_keys=True) + "\n"


def make_run(root: Path, members: int) -> Path:
    """A run folder the run view opens: suite.yaml (143,000 updates, every 1,000 saved)."""
    spec = {"name": "bench", "output": str(root),
            "data": {"train": str(root / "absent" / "train"), "seq_len": 2048, "seed": 1234},
            "train": {"iters": PYTHIA_ITERS, "global_batch": 1024},
            "checkpoints": {"interval": 1000, "log_spaced": False},
            "members": [{"size": "70m"}], "seeds": list(range(1, members + 1))}
    root.mkdir(parents=True)
    (root / "suite.yaml").write_text(yaml.safe_dump(spec))
    return root


def write_logs(run, upto: int, lines: list[str]) -> None:
    for m in run.members:
        m.path.mkdir(parents=True, exist_ok=True)
        (m.path / "metrics.jsonl").write_text("".join(lines[:upto]))


def old_hook(run) -> None:
    """The hook before: the whole-run train_loss analysis over every member, one rewritten unit."""
    from pythia.analysis.runner import full_rows
    from pythia.analysis.train_loss import TrainLoss

    a = TrainLoss()
    rows = a.compute_run(run, run.results(), run.members)
    key = {**a.cache_key(None), "members": [m.name for m in run.members]}
    run.results().put(a.name, full_rows(run, None, None, a.name, rows), key=key)


def new_hook(run, member: str, step: int) -> None:
    from pythia.analysis.runner import CheckpointAnalyses
    from pythia.train.callbacks import CheckpointSaved

    saved = CheckpointSaved(member=member, step=step, path=run.member(member).path / f"step{step}", model=None,
                            device="cpu", autocast=None, micro_batch=8, is_main=True)
    CheckpointAnalyses(run, ()).post_checkpoint_saved(saved)


def median_time(f, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=2, help="members whose logs the old hook re-reads (default 2)")
    p.add_argument("--reps", type=int, default=3, help="timed calls of the new hook per step (median)")
    p.add_argument("--old-reps", type=int, default=1, help="timed calls of the old hook per step (minutes each at 143,000)")
    args = p.parse_args()

    from pythia.run import open_run

    lines = [metrics_line(s) for s in range(1, PYTHIA_ITERS + 1)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ckpt-hook-"))
    try:
        root = make_run(tmp / "run", args.members)
        run = open_run(root)
        member = run.members[0].name
        print(f"{args.members} member(s), metrics.jsonl of {PYTHIA_ITERS:,} lines at the end "
              f"({sum(map(len, lines)) / 2**20:.0f} MiB each); median of {args.reps} (new) and "
              f"{args.old_reps} (old) calls")
        got = {}
        for step in STEPS:
            write_logs(run, step, lines)
            # each hook on a freshly opened run view, the new one first: what one hook leaves in
            # memory (the old one's 143,000-record logs) must not slow the other's timing
            gc.collect()
            fresh = open_run(root)
            after = median_time(lambda: new_hook(fresh, member, step), args.reps)
            del fresh
            gc.collect()
            fresh = open_run(root)
            before = median_time(lambda: old_hook(fresh), args.old_reps)
            del fresh
            got[step] = (before, after)
            before, after = got[step]
            print(f"  step {step:>7,}: before {before * 1e3:9.1f} ms   after {after * 1e3:7.1f} ms   "
                  f"before/after {before / after:7.1f}x")
        (b1, a1), (b2, a2) = got[STEPS[0]], got[STEPS[1]]
        print(f"  step {STEPS[1]:,} / step {STEPS[0]:,}: before {b2 / b1:.1f}x, after {a2 / a1:.2f}x "
              f"(flat = 1.00x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
