"""A run's report: `pythia report PATH` -> PATH/report/ with

    index.html            one self-contained interactive page (plotly.js inlined, no network):
                          a header saying what the run is, then a section per analysis in the
                          results table
    results.csv           the results table
    learning_curves.png   validation and training loss (for papers)
    summary.txt           final validation loss per size

Layout of this package:
    build.py     build_report: reads the source, writes the four files
    source.py    a run (pythia.run.open_run) or a standalone results store (a folder with units/)
    header.py    spec summary, members, tokens seen, data and order, verify status, versions
    sections/    one renderer per kind of analysis, a registry keyed by analysis name, and a
                 generic section for analyses no renderer knows (see sections/__init__.py)
    plot.py      plotly figures as JSON: the log step axis with step 0, colours per size, seed bands
    page.py      the HTML page, with a status element a headless browser reads back
    compact.py   the page's figure data written small: shared arrays once, numbers as typed arrays
    static.py    the CSV, the PNG and the text summary
"""
from __future__ import annotations

from pythia.results import COLUMNS

from .build import Report, build_report
from .static import (TRAIN_METRIC, VAL_METRIC, curves, format_forks, format_summary, pick_metric, plot_learning_curves, read_run,
                     summarize, write_table)

__all__ = ["COLUMNS", "Report", "TRAIN_METRIC", "VAL_METRIC", "build_report", "curves", "format_forks", "format_summary",
           "pick_metric", "plot_learning_curves", "read_run", "summarize", "write_table"]
