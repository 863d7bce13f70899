"""`pythia report PATH`: everything in one folder, rebuilt from the results table each time."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pythia.io import atomic_path, write_text_atomic
from pythia.results import sort_key

from .header import build_header
from .page import render_page
from .sections import ReportData, Section, render_sections
from .source import open_source
from .static import (TRAIN_METRIC, VAL_METRIC, compare_fork, fork_record, format_forks, format_summary, pick_metric,
                     plot_learning_curves, summarize, write_table)


@dataclass
class Report:
    """What `build_report` wrote and found."""

    run_dir: Path
    """The run folder (or the results store) the report was made from."""
    out_dir: Path
    html: Path
    """report/index.html: the interactive, self-contained page."""
    table: Path
    plot: Path | None
    summary_text: Path
    rows: list[dict] = field(repr=False, default_factory=list)
    summary: list[dict] = field(default_factory=list)
    sections: list[Section] = field(repr=False, default_factory=list)
    val_metric: str | None = None
    train_metric: str | None = None
    verify_status: str = "not checked"
    forks: list[dict] = field(default_factory=list)
    """Per fork: {"fork", "base", "from_step", "plot", "step", "base_value", "fork_value"} (val_metric)."""


def _forks_apart(rows: list[dict], forks: dict) -> list[dict]:
    """The page groups curves by size, seeds of a size forming a band: a fork (a data
    intervention on one member) is drawn as a size of its own, `{size}+{intervention}`, so it
    never joins its base's seeds in a mean or a band. results.csv keeps the real shape."""
    if not forks:
        return rows
    return [dict(r, size=f"{r.get('size') or ''}+{r['member'].split('+', 1)[1]}") if r.get("member") in forks else r
            for r in rows]


def export_table(src, path: Path) -> Path:
    """The whole results table as CSV at `path`, every row (not only those the page drew). The
    run's own export (RESULTS/results.csv, which `pythia analyze` writes after each sweep) is
    linked, or copied, when nothing was written to the table since (`ResultsStore.csv_stale`):
    exporting millions of rows again takes minutes at Pythia's scale."""
    store = src.store
    member = src.view.focus_member if src.view is not None else None
    exported = Path(store.root) / "results.csv"
    if member is None and exported.resolve() != path.resolve() and not store.csv_stale(exported):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
        try:
            tmp.unlink(missing_ok=True)
            os.link(exported, tmp)  # a second name for the same bytes (no copy, no chmod of the run's file)
            os.replace(tmp, path)
        except OSError:  # another file system, or links not allowed: a copy
            tmp.unlink(missing_ok=True)
            with atomic_path(path) as out:
                shutil.copyfile(exported, out)
        return path
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.writelines(store.csv_chunks(member=member))
    return path


def build_report(source: str | Path, out_dir: str | Path | None = None, verify: bool = True) -> Report:
    """Write index.html, results.csv, learning_curves.png and summary.txt into `out_dir`.

    `source`: a run folder, demo output, member or step folder, Hub repo id(s), or a standalone
    results store (a folder with units/); `out_dir` defaults to PATH/report. `verify`: re-hash
    every checkpoint for the header's verify status (`pythia verify`); False skips it.
    The page's figures come from the results table alone, so rebuilding is cheap and
    deterministic (same table, same bytes).
    """
    from plotly.offline import get_plotlyjs

    src = open_source(source)
    out_dir = Path(out_dir) if out_dir is not None else src.default_out
    forks = {m.name: m for m in (src.view.select(None) if src.view is not None else [])
             if getattr(m, "base", None) is not None}
    compared = [c for c in (compare_fork(src.view, m, out_dir) for m in forks.values()) if c is not None]
    rows = [r for r in src.rows if not (r["analysis"] == "compare" and r["member"] in forks)]
    rows = sorted(rows + [r for c in compared for r in c.rows], key=sort_key)  # the report's table only
    val_metric, train_metric = pick_metric(rows, VAL_METRIC), pick_metric(rows, TRAIN_METRIC)
    if src.thinned:  # the page drew some analyses at fewer steps: the table keeps every row
        table = export_table(src, out_dir / "results.csv")
    else:
        table = write_table(rows, out_dir / "results.csv")
    plot = plot_learning_curves(rows, out_dir / "learning_curves.png", val_metric, train_metric, title=src.name,
                                forks={k: m.base for k, m in forks.items()})
    summary = summarize([r for r in rows if r["member"] not in forks], val_metric) if val_metric else []
    fork_records = [fork_record(c, val_metric) for c in compared]
    fork_lines = format_forks(fork_records, val_metric)
    summary_path = out_dir / "summary.txt"
    text = "\n".join([format_summary(summary)] + fork_lines)
    write_text_atomic(summary_path, f"suite {src.name} ({src.path})\n{text}\n")
    header = build_header(src, verify=verify)
    results_dir = src.view.results_dir if src.view is not None else src.path
    sections = render_sections(ReportData(_forks_apart(rows, forks), src.name, src.size_order, results_dir))
    page = out_dir / "index.html"
    write_text_atomic(page, render_page(header, sections, get_plotlyjs()))
    return Report(run_dir=src.path, out_dir=out_dir, html=page, table=table, plot=plot, summary_text=summary_path,
                  rows=rows, summary=summary, sections=sections, val_metric=val_metric, train_metric=train_metric,
                  verify_status=header.verify_status, forks=fork_records)
