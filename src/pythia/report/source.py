"""What a report is made from: a run (anything `pythia.run.open_run` opens) or a standalone
results store (a folder with `units/`, as `pythia results import --into DIR` writes: Pythia's
published evaluations alone make a report)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pythia.results import ResultsStore


@dataclass
class Source:
    """The rows of one report and where they came from."""

    kind: str
    """"store" for a standalone results store, else the run view's kind (run, demo, member, step, hub)."""
    name: str
    path: Path
    """The run folder (or the store folder; a Hub run: its results folder)."""
    rows: list[dict] = field(repr=False)
    view: Any = None
    """The `pythia.run.RunView` (None for a store)."""
    thinned: tuple[str, ...] = ()
    """Analyses read at the steps the page draws only (a folded, Pythia-scale table); the report's
    results.csv is then exported from the store, every row."""

    @property
    def store(self) -> ResultsStore:
        return self.view.results() if self.view is not None else ResultsStore(self.path)

    @property
    def size_order(self) -> list[str]:
        """The run's shapes in the order its spec lists them (usually smallest first)."""
        return list(dict.fromkeys(m.shape for m in self.view.members)) if self.view is not None else []

    @property
    def default_out(self) -> Path:
        """PATH/report; a demo output's report is OUT/report, where `pythia demo` writes it."""
        return (self.path.parent if self.kind == "demo" else self.path) / "report"


def is_store(path: Path) -> bool:
    """A results store: its `units/` folder, and no run around it to open instead."""
    return path.is_dir() and (path / "units").is_dir()


def open_source(source: str | Path) -> Source:
    """Open a run, demo output, member or step folder, Hub repo id(s), or a results store.

    A member or step folder gives that member's rows only. Raises `pythia.run.RunError` (a
    ValueError naming the path) for anything else."""
    from pythia.run import open_run

    path = Path(str(source)).expanduser()
    if is_store(path):
        rows, thinned = report_rows(ResultsStore(path))
        suites = sorted({r["suite"] for r in rows if r.get("suite")})
        return Source(kind="store", name=", ".join(suites) or path.resolve().name, path=path.resolve(), rows=rows,
                      thinned=thinned)
    view = open_run(source)
    rows, thinned = report_rows(view.results(), member=view.focus_member)
    root = view.root if view.root is not None else Path(view.results_dir)
    return Source(kind=view.kind, name=view.name, path=root, rows=rows, view=view, thinned=thinned)


DENSE = ("train_loss",)
"""Analyses with a row per update (143,000 per member for Pythia)."""


def report_rows(store: ResultsStore, member: str | None = None) -> tuple[list[dict], tuple[str, ...]]:
    """The rows the page draws. A folded dense analysis (`DENSE`) is read only at the steps
    `plot.thin` keeps of its step range (the curves drawn are the same); everything else whole."""
    from pythia.results import sort_key

    from .plot import thin

    dense = [a for a in store.folded() if a in DENSE]
    if not dense:
        return store.rows(member=member), ()
    rows = store.rows(analysis=[a for a in store.analyses() if a not in dense], member=member) \
        if len(store.analyses()) > len(dense) else []
    for a in dense:
        grid = [s for s, _ in thin([(s, 0.0) for s in store.steps(a)])]
        rows += store.rows(analysis=a, member=member, step=grid)
    return sorted(rows, key=sort_key), tuple(dense)
