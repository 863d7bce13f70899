"""A run view with members but no checkpoints, and helpers to fill its results table: enough
for the whole-run analyses (seeds, training_map), which read only the table and artifacts."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pythia.run import MemberView, RunView


def synthetic_run(tmp_path: Path, shapes: dict[str, list[int]]) -> RunView:
    """Members `{shape}-seed{k}` for each shape's seeds; results in tmp_path/results."""
    view = RunView(kind="run", source=str(tmp_path), root=tmp_path, results_dir=tmp_path / "results", name="synth")
    view._members = [MemberView(run=view, name=f"{shape}-seed{s}", path=tmp_path / f"{shape}-seed{s}", shape=shape,
                                seed=s) for shape, seeds in shapes.items() for s in seeds]
    return view


def put_series(run: RunView, analysis: str, member: str, metric: str, values: dict[int, float], task: str = ""):
    """One unit per (member, step) holding this one metric, as a per-checkpoint analysis writes it."""
    for step, v in values.items():
        put_unit(run, analysis, member, step, {metric: v}, task)


def put_unit(run: RunView, analysis: str, member: str, step: int, values: dict[str, float], task: str = ""):
    run.results().put(analysis, [{"member": member, "step": step, "analysis": analysis, "task": task, "metric": k,
                                  "value": float(v)} for k, v in values.items()],
                      key={"test": 1}, member=member, step=step)


def write_items(run: RunView, member: str, step: int, task: str, doc_id, pred, correct):
    folder = Path(run.results_dir) / "artifacts" / "eval" / member / f"step{step}"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{task}.items.npz", doc_id=np.asarray(doc_id, dtype=np.int64),
             pred=np.asarray(pred, dtype=np.int64), correct=np.asarray(correct, dtype=np.uint8),
             metric=np.array(["acc"]))
