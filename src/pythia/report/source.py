"""What a report is made from: a run (anything `pythia.run.open_run` opens) or a standalone
results store (a folder with `units/`, as `pythia results import --into DIR` writes: Pythia's
published evaluations alone make a report)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pythia.results import ResultsStore, is_store


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
    counts: dict[str, int] = field(default_factory=dict)
    """Rows stored per thinned analysis (`ResultsStore.count`; none for a member's rows alone)."""

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


def open_source(source: str | Path) -> Source:
    """Open a run, demo output, member or step folder, Hub repo id(s), or a results store.

    A member or step folder gives that member's rows only. Raises `pythia.run.RunError` (a
    ValueError naming the path) for anything else."""
    from pythia.run import open_run

    path = Path(str(source)).expanduser()
    if is_store(path):  # a results folder (units, tables): no run around it to open instead
        rows, counts = report_rows(ResultsStore(path))
        suites = sorted({r["suite"] for r in rows if r.get("suite")})
        return Source(kind="store", name=", ".join(suites) or path.resolve().name, path=path.resolve(), rows=rows,
                      thinned=tuple(counts), counts=counts)
    view = open_run(source)
    rows, counts = report_rows(view.results(), member=view.focus_member, members=[m.name for m in view.select(None)])
    root = view.root if view.root is not None else Path(view.results_dir)
    return Source(kind=view.kind, name=view.name, path=root, rows=rows, view=view, thinned=tuple(counts),
                  counts=counts if view.focus_member is None else {})


DENSE = ("train_loss",)
"""Analyses with a row per update (143,000 per member for Pythia)."""
MEMBERS_PER_READ = 10
"""A dense analysis is read this many members at a time: a folded table's row groups hold a few
members each, so a read by members opens only theirs (all 50 members' training loss at once
held 3 GB while the rows at the drawn steps were picked out of it)."""


def report_rows(store: ResultsStore, member: str | None = None,
                members: list[str] | None = None) -> tuple[list[dict], dict[str, int]]:
    """The rows the page draws, and the rows stored per analysis read thinned (counted first,
    before the rows are held). A folded dense analysis (`DENSE`) is read only at the steps
    `plot.thin` keeps of its step range (the curves drawn are the same), `members` (the run's;
    None: all at once) `MEMBERS_PER_READ` at a time; every other analysis whole, one at a time.
    Rows share their strings (a member's name is one string, not one per row)."""
    from pythia.results import sort_key

    from .plot import thin

    dense = [a for a in store.folded() if a in DENSE]
    if not dense:
        return shared_strings(store.rows(member=member)), {}
    counts = {a: store.count(a) for a in dense} if member is None else {a: 0 for a in dense}
    rows = []
    for a in store.analyses():
        if a not in dense:
            rows += shared_strings(store.rows(analysis=a, member=member))
            continue
        grid = [s for s, _ in thin([(s, 0.0) for s in store.steps(a)])]
        groups = [member] if member is not None or not members else \
            [members[i:i + MEMBERS_PER_READ] for i in range(0, len(members), MEMBERS_PER_READ)]
        for names in groups:
            rows += shared_strings(store.rows(analysis=a, member=names, step=grid))
    return sorted(rows, key=sort_key), counts


TEXT = ("suite", "member", "size", "analysis", "task", "metric")


def shared_strings(rows: list[dict]) -> list[dict]:
    """The rows with each distinct text value one string object (a table read from Parquet gives
    every row its own copies: 660,000 rows held ~400 MB of duplicate names)."""
    seen: dict[str, str] = {}
    for r in rows:
        for k in TEXT:
            v = r.get(k)
            if v is not None:
                r[k] = seen.setdefault(v, v)
    return rows
