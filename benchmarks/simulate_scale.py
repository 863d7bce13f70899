"""CPU: a synthetic run at Pythia's shape, and what every operation around the weights costs on it.

Pythia (Biderman et al. 2023, arXiv 2304.01373) saved 154 checkpoints of 143,000 updates per
member (step 0, the log-spaced 1..512, then every 1,000); PolyPythias (van der Wal et al. 2025,
arXiv 2503.09543) has 5 sizes x 10 seeds = 50 members. Nothing here trains: `write_run` lays out
a run the run view opens (suite.yaml, one folder per member, the 154 step folders with a tiny
safetensors file and a real manifest, a metrics.jsonl of 143,000 updates per member) and writes
its results table through `ResultsStore.put` exactly as the analyses' runner does (the same
columns, unit layout and cache keys): val_loss, train_loss (one unit per member and checkpoint
interval, as the trainer's callback writes it), eval (10 tasks x acc/acc_norm with stderr, and
per-item outcomes of 5,000 items per task in the eval sweep's `{task}.items.npz` layout),
memorization (fraction, mean, a 33-bin histogram), weights (the 14 features), term_counts,
and the whole-run seeds and training_map units.

Then each operation runs in its own process (`os.wait4` gives its peak resident memory) and the
script prints wall time, peak RSS and the bytes it wrote:

    query     pythia results RUN --analysis eval --metric acc --member M
    export    pythia results RUN --format csv > FILE           (the whole table)
    frame     the table as a pandas frame, in a notebook's one call
    plan      pythia analyze RUN weights --steps all           (everything cached: planning only)
    runlevel  pythia analyze RUN seeds,training_map
    report    pythia report RUN --no-verify                    (page bytes)
    verify    pythia verify RUN                                (hashes every tiny checkpoint)

    .venv/bin/python benchmarks/simulate_scale.py [--members 50] [--out DIR] [--ops query,export,...]
    .venv/bin/python benchmarks/simulate_scale.py --members 2 --steps 12 --items 100 --out /tmp/sim

The figures depend on the machine and its neighbours: wall time on a shared machine counts the
neighbours' load, cpu (user + system seconds, from GNU time) much less. Ratios mean something
only between runs on the same machine. Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

PYTHIA_ITERS = 143_000
SIZES = ("pythia-14m", "pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b")
TASKS = ("lambada_openai", "piqa", "winogrande", "wsc", "arc_easy", "arc_challenge", "sciq", "logiqa",
         "hellaswag", "openbookqa")
TERMS = ("the", "of", "and", "in", "to", "is", "for", "on")
WEIGHT_FEATURES = ("L1", "L2", "L1/L2", "mu_w", "median_w", "sigma_w", "mu_b", "median_b", "sigma_b", "trace",
                   "lambda_max", "trace/lambda", "mu_lambda", "sigma_lambda")
OPS = ("query", "export", "frame", "plan", "runlevel", "report", "verify")


def shape_of(members: int) -> tuple[list[str], list[int]]:
    """(sizes, seeds) whose product is `members` (at most 5 sizes, as PolyPythias)."""
    n_sizes = max(d for d in range(1, min(len(SIZES), members) + 1) if members % d == 0)
    return list(SIZES[:n_sizes]), list(range(1, members // n_sizes + 1))


def write_spec(root: Path, members: int, iters: int) -> None:
    sizes, seeds = shape_of(members)
    spec = {"name": "simulated", "output": str(root),
            "data": {"train": str(root / "absent" / "train"), "seq_len": 2048, "seed": "per_member"},
            "train": {"iters": iters, "global_batch": 1024},
            "checkpoints": {"interval": 1000 if iters >= 2000 else max(1, iters // 8), "log_spaced": True},
            "members": [{"size": s} for s in sizes], "seeds": seeds}
    root.mkdir(parents=True, exist_ok=True)
    (root / "suite.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def loss_at(step: int, seed: int, size_index: int) -> float:
    """A smooth learning curve with a little seed noise (deterministic)."""
    noise = ((step * 2654435761 + seed * 40503) % 1000) / 1000 - 0.5
    return 2.0 + 8.0 / (1 + step / (800 * (1 + size_index))) + 0.02 * noise


def write_metrics(member, iters: int, size_index: int) -> None:
    lines = []
    for step in range(1, iters + 1):
        lr = 1e-3 * min(1.0, step / (iters * 0.01))
        lines.append(json.dumps({"consumed_samples": step * 1024, "grad_norm": 0.5 + (step % 97) / 97,
                                 "loss": loss_at(step, member.seed, size_index), "loss_scale": 4096.0, "lr": lr,
                                 "skipped": False, "step": step, "time": 1.7e9 + step,
                                 "tokens_per_s": 123456.7}, sort_keys=True))
    member.path.mkdir(parents=True, exist_ok=True)
    (member.path / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def write_checkpoint(member, step: int) -> str:
    """A tiny safetensors file (16 floats that differ per member and step) and its manifest."""
    import torch
    from safetensors.torch import save_file

    from pythia.layout import step_dir_name, weights_digest, write_manifest

    folder = member.path / step_dir_name(step)
    folder.mkdir(parents=True, exist_ok=True)
    w = {"w": torch.arange(16, dtype=torch.float32) * (1 + step) + member.seed}
    save_file(w, str(folder / "model.safetensors"))
    write_manifest(folder, step, weights_digest(w))
    return member.checkpoint(step).digest  # the runner's cache key: "w:" + the manifest's digest


def write_items(path: Path, step: int, seed: int, task_index: int, n: int) -> None:
    from pythia.io import write_npz_atomic

    rng = np.random.default_rng([step, seed, task_index])
    p = min(0.9, 0.25 + 0.5 * step / PYTHIA_ITERS)
    write_npz_atomic(path, {"doc_id": np.arange(n, dtype=np.int64),
                            "pred": rng.integers(0, 4, n).astype(np.int64),
                            "correct": (rng.random(n) < p).astype(np.uint8),
                            "metric": np.array(["acc"]),
                            "loglik": -rng.exponential(2.0, n)})


def checkpoint_units(member, step: int, size_index: int) -> dict[str, list[dict]]:
    """The rows each per-checkpoint analysis writes for one checkpoint (before full_rows)."""
    loss = loss_at(step, member.seed, size_index)
    progress = step / PYTHIA_ITERS
    out = {"val_loss": [{"metric": "val_loss", "value": loss + 0.05}]}
    out["eval"] = [{"task": t, "metric": m, "value": min(0.95, 0.25 + 0.4 * progress + 0.01 * i + 0.001 * member.seed),
                    "stderr": 0.007} for i, t in enumerate(TASKS) for m in ("acc", "acc_norm")]
    mem = [{"metric": "memorized_fraction", "value": 0.01 * progress}, {"metric": "mean_score", "value": 3 + 10 * progress}]
    mem += [{"task": "histogram", "metric": f"score={k}", "value": math.exp(-k / 4) / 4} for k in range(33)]
    out["memorization"] = mem
    out["weights"] = [{"metric": f, "value": 1.0 + i + progress} for i, f in enumerate(WEIGHT_FEATURES)]
    out["term_counts"] = [{"task": t, "metric": "count", "value": float(step * 1000 // (i + 1))}
                          for i, t in enumerate(TERMS)]
    return out


def write_run(root: Path, members: int, iters: int = PYTHIA_ITERS, items: int = 5000, max_steps: int | None = None,
              progress: bool = True) -> dict:
    """Lay out the synthetic run and its results table; returns what it wrote."""
    from pythia.analysis.runner import build_analyses, full_rows
    from pythia.analysis.train_loss import _rows as loss_rows
    from pythia.run import open_run

    write_spec(root, members, iters)
    run = open_run(root)
    store = run.results()
    names = ("val_loss", "eval", "memorization", "weights", "term_counts")
    analyses = {a.name: a for a in build_analyses(names)}
    steps = run.spec.checkpoint_steps()
    if max_steps:
        steps = steps[:max_steps - 1] + [steps[-1]]
    shapes = [m.shape for m in run.members]
    size_index = {s: i for i, s in enumerate(dict.fromkeys(shapes))}
    t0, units = time.perf_counter(), 0
    for k, m in enumerate(run.members):
        si = size_index[m.shape]
        write_metrics(m, iters, si)
        records = [{"step": s, "loss": loss_at(s, m.seed, si), "lr": 1e-3 * min(1.0, s / (iters * 0.01))}
                   for s in range(1, iters + 1)]
        prev = 0
        for step in steps:
            digest = write_checkpoint(m, step)
            for name, rows in checkpoint_units(m, step, si).items():
                store.put(name, full_rows(run, m, step, name, rows), key=analyses[name].cache_key(digest),
                          member=m.name, step=step)
                units += 1
            rows = loss_rows(m.name, records[prev:step])
            store.put("train_loss", full_rows(run, m, step, "train_loss", rows),
                      key={"analysis": "train_loss", "interval": [prev, step]}, member=m.name, step=step)
            units += 1
            prev = step
            if items:
                folder = Path(run.results_dir) / "artifacts" / "eval" / m.name / f"step{step}"
                for i, t in enumerate(TASKS):
                    write_items(folder / f"{t}.items.npz", step, m.seed, i, items)
        if hasattr(store, "compact"):  # as each sweep's write_csv does, without the export
            from pythia import results as results_mod

            by_size = {"min_bytes": results_mod.COMPACT_BYTES} if hasattr(results_mod, "COMPACT_BYTES") else {}
            store.compact(min_units=results_mod.COMPACT_AT, **by_size)
        if progress:
            print(f"  member {k + 1}/{len(run.members)} {m.name}: {units} units, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    run_rows = run_level_rows(run, steps)
    for name, rows in run_rows.items():
        store.put(name, full_rows(run, None, None, name, rows), key={"analysis": name, "simulated": True})
        units += 1
    store.write_csv()
    return {"members": len(run.members), "steps": len(steps), "units": units,
            "seconds": time.perf_counter() - t0}


def run_level_rows(run, steps) -> dict[str, list[dict]]:
    """seeds (mean/std/min/max per shape, metric and step) and training_map (state per checkpoint)."""
    seeds = []
    for shape in dict.fromkeys(m.shape for m in run.members):
        for step in steps:
            for key in ("val_loss:val_loss", "weights:L2"):
                seeds += [{"member": f"{shape} (seeds)", "size": shape, "step": step, "metric": f"{key}:{stat}",
                           "value": v} for stat, v in (("mean", 3.0), ("std", 0.01), ("min", 2.9), ("max", 3.1))]
    tmap = []
    for m in run.members:
        tmap += [{"member": m.name, "step": s, "metric": "state", "value": float(i * 4 // len(steps))}
                 for i, s in enumerate(steps)]
        tmap += [{"member": m.name, "step": None, "metric": "n_states", "value": 4.0}]
    return {"seeds": seeds, "training_map": tmap}


def disk_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def measure(argv: list[str], stdout=None, timeout: float = 900) -> dict:
    """Run argv in its own process: wall seconds, peak RSS (bytes, from GNU time's %M: a child
    forked from this process would inherit this process' own peak), exit status."""
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "maxrss_kb %M %U %S", *argv], stdout=stdout or null,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the command too, not only GNU time
            proc.communicate()
            return {"wall_s": None, "rss": 0, "rc": "timeout", "stderr": ""}
    wall = time.perf_counter() - t0
    err = err.decode(errors="replace")
    lines = err.strip().splitlines()
    rss, cpu = 0, None
    if lines and lines[-1].startswith("maxrss_kb"):
        _, kb, user, system = lines[-1].split()
        rss, cpu = int(kb) * 1024, float(user) + float(system)
    return {"wall_s": wall, "cpu_s": cpu, "rss": rss, "rc": proc.returncode, "stderr": "\n".join(lines[:-1])[-2000:]}


FRAME = ("import sys\n"
         "from pythia.run import open_run\n"
         "view = open_run(sys.argv[1])\n"
         "if hasattr(view, 'results_frame'):\n"
         "    df = view.results_frame()\n"
         "else:  # before: rows as dicts, then pandas\n"
         "    import pandas; df = pandas.DataFrame(view.results().rows())\n"
         "print(len(df))\n")


def run_ops(root: Path, ops: list[str], timeout: float) -> list[dict]:
    pythia = str(Path(sys.executable).with_name("pythia"))
    from pythia.run import open_run

    member = open_run(root).members[-1].name
    scratch = root.parent / f"{root.name}-ops"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    out = []
    for op in ops:
        written = None
        if op == "query":
            r = measure([pythia, "results", str(root), "--analysis", "eval", "--metric", "acc", "--member", member,
                         "--format", "csv"], timeout=timeout)
        elif op == "export":
            with open(scratch / "results.csv", "wb") as f:
                r = measure([pythia, "results", str(root), "--format", "csv"], stdout=f, timeout=timeout)
            written = (scratch / "results.csv").stat().st_size
        elif op == "frame":
            r = measure([sys.executable, "-c", FRAME, str(root)], timeout=timeout)
        elif op == "plan":
            r = measure([pythia, "analyze", str(root), "weights", "--steps", "all", "--no-progress"], timeout=timeout)
        elif op == "runlevel":
            r = measure([pythia, "analyze", str(root), "seeds,training_map", "--no-progress"], timeout=timeout)
        elif op == "report":
            r = measure([pythia, "report", str(root), "--out", str(scratch / "report"), "--no-verify"], timeout=timeout)
            page = scratch / "report" / "index.html"
            written = page.stat().st_size if page.is_file() else None
        elif op == "verify":
            r = measure([pythia, "verify", str(root)], timeout=timeout)
        else:
            raise SystemExit(f"--ops: unknown operation {op!r}; known: {', '.join(OPS)}")
        r.update(op=op, bytes=written)
        out.append(r)
        print(format_op(r), flush=True)
        if r["rc"] not in (0, None) and r["stderr"]:
            print("    " + r["stderr"].strip().splitlines()[-1][:300], flush=True)
    return out


def format_op(r: dict) -> str:
    wall = "timeout" if r["wall_s"] is None else f"{r['wall_s']:8.2f} s"
    size = "" if r.get("bytes") is None else f"  wrote {r['bytes'] / 1e6:9.1f} MB"
    cpu = "" if r.get("cpu_s") is None else f"  cpu {r['cpu_s']:7.1f} s"
    return f"{r['op']:<9} {wall:>10}{cpu}  peak RSS {r['rss'] / 2**20:7.0f} MiB  rc {r['rc']}{size}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=50)
    p.add_argument("--iters", type=int, default=PYTHIA_ITERS, help="updates per member (Pythia: 143,000)")
    p.add_argument("--steps", type=int, default=None, help="keep only the first N-1 checkpoints and the last")
    p.add_argument("--items", type=int, default=5000, help="per-item outcomes per task (0: none)")
    p.add_argument("--out", default=None, help="the run folder (default: a fresh folder under /tmp)")
    p.add_argument("--reuse", action="store_true", help="measure an already simulated --out")
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--timeout", type=float, default=900, help="seconds per operation")
    args = p.parse_args(argv)
    root = Path(args.out or f"/tmp/pythia-sim-{args.members}").resolve()
    if not args.reuse:
        if root.exists():
            shutil.rmtree(root)
        info = write_run(root, args.members, args.iters, args.items, args.steps)
        print(f"simulated {info['members']} members x {info['steps']} checkpoints, {info['units']} units "
              f"in {info['seconds']:.0f} s -> {root}")
    print(f"on disk: run {disk_bytes(root) / 1e6:.1f} MB, results {disk_bytes(root / 'results') / 1e6:.1f} MB "
          f"(per-item outcomes {disk_bytes(root / 'results' / 'artifacts') / 1e6:.1f} MB)")
    run_ops(root, [o.strip() for o in args.ops.split(",") if o.strip()], args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
