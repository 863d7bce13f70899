"""Learning curves: validation loss at every checkpoint and training loss at every update
(analyses `val_loss` and `train_loss`, metrics of the same names)."""
from __future__ import annotations

from ..static import summarize
from . import ReportData, Section, Table, section

VAL, TRAIN = "val_loss", "train_loss"


@section("learning-curves", "Learning curves", analyses=(VAL, TRAIN), order=10)
def render(data: ReportData, sec: Section) -> None:
    sec.intro = ("Loss against training step. Validation loss is scored on held-out sequences at every "
                 "checkpoint; training loss is the loss of each update's batch (thinned to a few hundred "
                 "points, evenly spaced on the log axis).")
    val = data.of(VAL, metric=VAL)
    sec.add(data.curve(val, title="Validation loss", ytitle="validation loss (nats/token)"),
            "no validation loss (val_loss) in the table: the run has no data.valid, or `pythia analyze RUN "
            "val_loss` has not run")
    sec.add(data.curve(data.of(TRAIN, metric=TRAIN), title="Training loss", ytitle="training loss (nats/token)"),
            "no training loss (train_loss) in the table")
    summary = summarize(val, VAL) if val else []
    if summary:
        sec.tables.append(Table(
            ["size", "seeds", "step", "validation loss (mean)", "± half-range"],
            [[s["size"], s["seeds"], s["step"], round(s["mean"], 4), round((s["max"] - s["min"]) / 2, 4)]
             for s in summary],
            "Validation loss at the last step every seed of a size reached"))

