"""`train_loss`: the training loss of every update, copied from the members' metrics.jsonl into
the results table so the report reads one table. Only the loss and the learning rate (both
deterministic given the order and the recipe) are copied; telemetry (tokens/s, times) is not.

During training the checkpoint callback (`runner.CheckpointAnalyses`) stores, at each scheduled
checkpoint N, the updates since the previous scheduled checkpoint as the unit (member, step N)
(`interval_rows`): each update is read and written once, and a checkpoint costs the same at step
143,000 as at step 1,000. `pythia analyze RUN train_loss` reads every member's whole log into one
whole-run unit; the two hold the same rows.
"""
from __future__ import annotations

from .base import Analysis, register


def _rows(member_name: str, records) -> list[dict]:
    rows = []
    for rec in records:
        step = rec.get("step")
        if not isinstance(step, int):
            continue
        for metric, key in (("train_loss", "loss"), ("lr", "lr")):
            value = rec.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"member": member_name, "step": step, "metric": metric, "value": float(value)})
    return rows


def interval_rows(member, after: int, upto: int) -> list[dict]:
    """Rows of updates after+1..upto of one member, from the end of its metrics.jsonl."""
    return _rows(member.name, (r for r in member.metrics(after=after)
                               if isinstance(r.get("step"), int) and r["step"] <= upto))


@register
class TrainLoss(Analysis):
    name = "train_loss"
    summary = "training loss and learning rate at every update, from metrics.jsonl"
    scope = "run"
    cacheable = False  # reads metrics.jsonl, which the results table does not track

    def compute_run(self, run, store, members) -> list[dict]:
        rows = []
        for m in members:
            rows += _rows(m.name, m.metrics())
        return rows
