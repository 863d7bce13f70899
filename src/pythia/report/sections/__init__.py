"""The report's sections: one renderer per kind of analysis, chosen by the analyses present in
the results table.

A renderer is a function `render(data: ReportData, section: Section)` that adds figures, tables
and notes to its section, registered with `@section(key, title, analyses=(...), order=n)`:
the section appears when any of its analyses has rows. Every analysis that no renderer claims
gets a generic section (metric vs step per task and metric), so a new analysis shows up in the
report before anyone writes a renderer for it. Renderers read only the rows; what they expect
and do not find becomes a note in the section (a missing metric never breaks the page), and a
renderer that fails on rows it did not expect leaves its error in the section, not a broken
report. The modules of this package are imported on first use, so adding a module is all it
takes to add a section.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from ..plot import Figure, Palette, curve_figure

__all__ = ["REGISTRY", "ReportData", "Section", "SectionSpec", "Table", "render_sections", "section"]


@dataclass
class Table:
    columns: list[str]
    rows: list[list]
    caption: str = ""


@dataclass
class Section:
    """One section of the page: what it shows, and what it could not."""

    key: str
    title: str
    intro: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What is missing or left out, in words (shown above the plots)."""
    errors: list[str] = field(default_factory=list)
    """A renderer's failure (a bug or rows of an unexpected shape): shown, never raised."""

    def add(self, figure: Figure | None, missing: str = "") -> None:
        """Add a figure, or the note `missing` when there is none to add."""
        if figure is not None:
            self.figures.append(figure)
        elif missing:
            self.notes.append(missing)


class ReportData:
    """The results table as the renderers see it, with the report-wide colours."""

    def __init__(self, rows: list[dict], suite: str = "", size_order=(), results_dir=None):
        self.rows = rows
        self.suite = suite
        self.results_dir = results_dir
        """The results folder the rows came from (None: rows alone), for sections that also draw
        an analysis' stored artifacts (RESULTS/artifacts/...), e.g. traced texts."""
        self._by_analysis: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            self._by_analysis[r.get("analysis") or ""].append(r)
        self.own_suites = {r.get("suite") or "" for r in rows if not (r.get("analysis") or "").endswith("_import")}
        """Suites drawn solid; the others (imported results) are dashed. With imported results
        alone, every suite is the report's own."""
        if not self.own_suites:
            self.own_suites = {r.get("suite") or "" for r in rows}
        sizes = {True: set(), False: set()}
        for r in rows:
            sizes[(r.get("suite") or "") in self.own_suites].add(r.get("size") or r.get("member") or "")
        self.palette = Palette(sizes[True], size_order, others=sizes[False])

    @property
    def analyses(self) -> list[str]:
        return sorted(a for a in self._by_analysis if a)

    def of(self, analysis: str | tuple, metric: str | None = None, task: str | None = None) -> list[dict]:
        names = (analysis,) if isinstance(analysis, str) else analysis
        return [r for a in names for r in self._by_analysis.get(a, ())
                if (metric is None or r.get("metric") == metric) and (task is None or (r.get("task") or "") == task)]

    def curve(self, rows: list[dict], **kw) -> Figure | None:
        """`plot.curve_figure` with this report's colours."""
        return curve_figure(rows, self.palette, self.own_suites, **kw)


@dataclass(frozen=True)
class SectionSpec:
    key: str
    title: str
    analyses: tuple[str, ...]
    order: int
    render: Callable[[ReportData, Section], None]


REGISTRY: dict[str, SectionSpec] = {}


def section(key: str, title: str, *, analyses: tuple[str, ...], order: int):
    """Register a renderer for the rows of `analyses` (see the module doc)."""
    def deco(fn):
        if key in REGISTRY and REGISTRY[key].render is not fn:
            raise ValueError(f"report section {key!r} registered twice")
        claimed = {a: s.key for s in REGISTRY.values() if s.key != key for a in s.analyses}
        clash = [a for a in analyses if a in claimed]
        if clash:
            raise ValueError(f"report section {key!r}: analyses {clash} already drawn by {claimed[clash[0]]!r}")
        REGISTRY[key] = SectionSpec(key, title, tuple(analyses), order, fn)
        return fn
    return deco


def _load() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def run_renderer(spec_key: str, title: str, render: Callable, data: ReportData) -> Section:
    sec = Section(spec_key, title)
    try:
        render(data, sec)
    except Exception as exc:  # noqa: BLE001 - one odd section must not cost the whole report
        sec.errors.append(f"{type(exc).__name__}: {exc}")
    return sec


def render_sections(data: ReportData) -> list[Section]:
    """The sections the table calls for, in registry order, then a generic one per analysis
    no renderer claims."""
    _load()
    from .generic import render_generic

    present = set(data.analyses)
    out, claimed = [], set()
    for spec in sorted(REGISTRY.values(), key=lambda s: (s.order, s.key)):
        claimed |= set(spec.analyses)
        if present & set(spec.analyses):
            out.append(run_renderer(spec.key, spec.title, spec.render, data))
    for analysis in sorted(present - claimed):
        out.append(run_renderer(f"analysis-{analysis}", f"{analysis}", render_generic(analysis), data))
    return out
