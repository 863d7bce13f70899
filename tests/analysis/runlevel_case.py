"""A small run on which `seeds` and `training_map` take every path: 5, 2 and 1 seeds per shape,
a seed that goes astray, steps one seed lacks, items files whose doc_ids differ between
checkpoints or between members, a generation task (no choice index), constant labels (kappa undefined), a member
without items at its final checkpoint, and weights features in phases for the HMM.

`tests/fixtures/runlevel_golden.json.gz` holds what the analyses wrote on this case before their
rewrite for scale (vectorised kappa and statistics): `test_runlevel_golden.py` checks that they
still write the same rows and artifacts. Regenerate it (only when a change of numbers is meant)
with `python -m tests.analysis.runlevel_case tests/fixtures/runlevel_golden.json.gz`.
"""
from __future__ import annotations

import gzip
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from pythia.analysis.runner import run_analyses
from pythia.analysis.weights import FEATURES
from pythia.results import COLUMNS

from .synthetic import put_unit, synthetic_run, write_items

SHAPES = {"a": [1, 2, 3, 4, 5], "b": [2, 7], "c": [4]}
STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000, 4000]
OPTIONS = {"hmm_max_states": 3}
ARTIFACTS = ("seeds/outliers.tsv",) + tuple(f"training_map/{s}.{ext}" for s in SHAPES for ext in ("tsv", "json"))


def build(root: Path, folded: bool = False):
    """The case's run under `root` (its results table and items files); `folded`: its units
    folded into Parquet tables, as a large run's are."""
    run = synthetic_run(root, SHAPES)
    rng = np.random.default_rng(22)
    means = rng.normal(0, 3, size=(3, len(FEATURES)))
    n_docs = 40
    truth = rng.integers(0, 4, n_docs)
    for m in run.members:
        steps = [t for t in STEPS if not (m.name == "b-seed7" and t in (8, 16))]
        phase = np.minimum(np.arange(len(steps)) * 3 // len(steps), 2)
        feats = means[phase] + rng.normal(0, 0.3, size=(len(steps), len(FEATURES)))
        final = np.where(rng.random(n_docs) < 0.7, truth, rng.integers(0, 4, n_docs))
        for i, t in enumerate(steps):
            loss = 2 + 5 / (1 + t / 100) + float(rng.normal(0, 0.01)) + (0.5 if m.name == "a-seed3" and t >= 1000 else 0)
            put_unit(run, "val_loss", m.name, t, {"val_loss": loss})
            evals = []
            for task in ("t1", "t2"):
                acc = 0.25 + 0.5 * t / 4000 + float(rng.normal(0, 0.02))
                evals += [{"member": m.name, "step": t, "task": task, "metric": "acc", "value": acc},
                          {"member": m.name, "step": t, "task": task, "metric": "acc_norm", "value": round(acc * 48) / 48}]
            run.results().put("eval", evals, key={"test": 1}, member=m.name, step=t)
            put_unit(run, "weights", m.name, t, dict(zip(FEATURES, feats[i])))
            if m.name == "a-seed5" and t == STEPS[-1]:
                continue  # no items at its final checkpoint: measured against the last it has
            keep = rng.random(n_docs) < (i + 1) / len(steps)
            pred = np.where(keep, final, rng.integers(0, 4, n_docs))
            docs = np.arange(n_docs)
            if m.name == "a-seed2" and t in (4, 64):  # a checkpoint evaluated on fewer docs, shuffled
                docs = rng.permutation(n_docs)[:30]
            if m.name == "b-seed7":  # a member evaluated on other docs than the reference seed
                docs = np.arange(5, n_docs)
            write_items(run, m.name, t, "arc", docs, pred[docs], (pred == truth)[docs])
            write_items(run, m.name, t, "gen", docs, -np.ones(docs.size), (pred == truth)[docs])
            const = np.zeros(n_docs) if t < 64 else pred  # untrained checkpoints all answer 0
            write_items(run, m.name, t, "mc", np.arange(n_docs), const, const == truth)
    if folded:
        run.results().compact()
    return run


def outputs(run) -> dict:
    """What the analyses wrote: their rows, artifacts' text and the warnings they gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_analyses(run, "seeds,training_map", options=OPTIONS, progress=False, force=True)
    assert summary.ok, summary.format()
    store = run.results()
    art = Path(run.results_dir) / "artifacts"
    return {name: [[r[c] for c in COLUMNS] for r in store.rows(analysis=name)] for name in ("seeds", "training_map")} | {
        "columns": list(COLUMNS), "artifacts": {name: (art / name).read_text() for name in ARTIFACTS},
        "warnings": sorted(str(w.message) for w in caught)}


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = outputs(build(Path(tmp)))
    text = json.dumps(out, separators=(",", ":"), sort_keys=True) + "\n"
    Path(argv[0]).write_bytes(gzip.compress(text.encode(), mtime=0))
    print(f"{argv[0]}: {len(out['seeds'])} seeds rows, {len(out['training_map'])} training_map rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
