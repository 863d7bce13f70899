"""`train_loss`: the training loss of every update, copied from the members' metrics.jsonl into
the results table so the report reads one table. Only the loss and the learning rate (both
deterministic given the order and the recipe) are copied; telemetry (tokens/s, times) is not."""
from __future__ import annotations

from .base import Analysis, register


@register
class TrainLoss(Analysis):
    name = "train_loss"
    summary = "training loss and learning rate at every update, from metrics.jsonl"
    scope = "run"
    cacheable = False  # reads metrics.jsonl, which the results table does not track

    def compute_run(self, run, store, members) -> list[dict]:
        rows = []
        for m in members:
            for rec in m.metrics():
                step = rec.get("step")
                if not isinstance(step, int):
                    continue
                for metric, key in (("train_loss", "loss"), ("lr", "lr")):
                    value = rec.get(key)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        rows.append({"member": m.name, "step": step, "metric": metric, "value": float(value)})
        return rows
