"""The results table: every number an analysis produces, as tidy rows, stored inside the run.

Columns (`COLUMNS`): suite, member, size, seed, step, tokens, analysis, task, metric, value,
stderr. A row's key is (member, step, analysis, task, metric): writing the same key again
replaces it, never duplicates it.

Storage is one small JSON file per unit of work, written atomically:

    RESULTS/units/{analysis}/{member}/step{N}.json    a per-checkpoint analysis
    RESULTS/units/{analysis}/_run.json                 a whole-run analysis
    RESULTS/units/{analysis}/{member}/_member.json     a per-member analysis (imports too)

Each file holds the unit's rows and its cache key (analysis version, options, weights digest),
so a re-run with the same key is a no-op, a changed checkpoint is recomputed, a `kill -9`
loses at most the unit in progress, and `torchrun` ranks write disjoint files with no
coordination. The table is the union of the units; `write_csv` exports it. Rows hold no
timestamps or timings, so two identical runs give byte-identical tables (telemetry such as
tokens/s stays in metrics.jsonl).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .io import write_text_atomic

COLUMNS = ("suite", "member", "size", "seed", "step", "tokens", "analysis", "task", "metric", "value", "stderr")
KEY = ("member", "step", "analysis", "task", "metric")
FORMAT = "pythia-results-unit/1"


@dataclass(frozen=True)
class Row:
    """What an analysis returns for one checkpoint (or run): the runner adds who and when."""

    metric: str
    value: float
    task: str = ""
    stderr: float | None = None


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _unit_path(root: Path, analysis: str, member: str | None, step: int | None) -> Path:
    base = root / "units" / analysis
    if member is None:
        return base / "_run.json"
    return base / member / ("_member.json" if step is None else f"step{step}.json")


class ResultsStore:
    """A results folder: `RUN/results` of a run, or a standalone store (imported results)."""

    def __init__(self, root: str | os.PathLike, run: Any = None):
        self.root = Path(root)
        self.run = run

    # -- units ------------------------------------------------------------------------------
    def unit_key(self, analysis: str, member: str | None, step: int | None) -> dict | None:
        """The cache key a unit was computed with, or None when it was never written."""
        unit = self._read(_unit_path(self.root, analysis, member, step))
        return None if unit is None else unit.get("key")

    def put(self, analysis: str, rows: Iterable[dict], *, key: dict, member: str | None = None,
            step: int | None = None) -> Path:
        """Replace one unit's rows (full table rows, see `COLUMNS`, all of `analysis`) atomically."""
        clean = []
        for r in rows:
            missing = [c for c in ("metric", "value") if c not in r]
            if missing:
                raise ValueError(f"result row of {analysis} lacks {missing}: {r}")
            row = {c: r.get(c) for c in COLUMNS}
            row["analysis"] = r.get("analysis") or analysis
            if row["analysis"] != analysis:  # rows(analysis=...) finds a row under its own analysis
                raise ValueError(f"result row of {analysis} names another analysis ({row['analysis']!r}): "
                                 f"a unit holds its own analysis' rows; put them under {row['analysis']!r}")
            row["task"] = r.get("task") or ""
            row["value"], row["stderr"] = _clean(r["value"]), _clean(r.get("stderr"))
            clean.append(row)
        clean.sort(key=sort_key)
        path = _unit_path(self.root, analysis, member, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"format": FORMAT, "key": key, "rows": clean}, sort_keys=True,
                                           indent=1, allow_nan=False) + "\n")
        return path

    def _read(self, path: Path) -> dict | None:
        if not path.is_file():
            return None
        try:
            unit = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: unreadable results unit ({exc}); delete it to recompute") from None
        if not isinstance(unit, dict) or unit.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file")
        return unit

    def units(self, analysis: str | list | None = None) -> list[Path]:
        """Unit files, sorted; with `analysis` (a name or a list), only those analyses' units."""
        base = self.root / "units"
        if not base.is_dir():
            return []
        if not analysis:
            return sorted(base.rglob("*.json"))
        names = [analysis] if isinstance(analysis, str) else list(analysis)
        return sorted(p for name in dict.fromkeys(names) if (base / name).is_dir()
                      for p in (base / name).rglob("*.json"))

    # -- the table --------------------------------------------------------------------------
    def rows(self, analysis: str | list | None = None, metric: str | list | None = None,
             member: str | list | None = None, task: str | list | None = None) -> list[dict]:
        """All rows (last write of a key wins), sorted by key; filters take a name or a list.
        With `analysis`, only those analyses' unit files are read (a unit's rows are those of
        the analysis it was put under)."""
        want = {k: ({v} if isinstance(v, str) else set(v)) for k, v in
                (("analysis", analysis), ("metric", metric), ("member", member), ("task", task)) if v}
        table: dict[tuple, dict] = {}
        for path in self.units(analysis):
            unit = self._read(path)
            for row in unit.get("rows", []):
                if all(row.get(k) in v for k, v in want.items()):
                    table[tuple(row.get(k) for k in KEY)] = row
        return sorted(table.values(), key=sort_key)

    def to_csv(self, rows: list[dict] | None = None) -> str:
        rows = self.rows() if rows is None else rows
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: _fmt(r.get(c)) for c in COLUMNS})
        return buf.getvalue()

    def write_csv(self, path: str | os.PathLike | None = None, rows: list[dict] | None = None) -> Path:
        """Export the table (default RESULTS/results.csv)."""
        path = Path(path) if path is not None else self.root / "results.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, self.to_csv(rows))
        return path


def natural_key(text: str | None) -> list:
    """Sort key that orders embedded numbers by value (d64-l2 < d128-l3, seed2 < seed10, 1.4b < 12b)."""
    return [(0, float(t), "") if re.fullmatch(r"\d+(?:\.\d+)?", t) else (1, 0.0, t)
            for t in re.split(r"(\d+(?:\.\d+)?)", text or "") if t]


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def sort_key(row: dict) -> tuple:
    step = row.get("step")
    return (row.get("analysis") or "", row.get("task") or "", row.get("metric") or "", row.get("member") or "",
            -1 if step is None else step)


def format_table(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    """Rows as an aligned text table (for `pythia results --format table`)."""
    cols = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)] or list(columns)
    cells = [[_short(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(x[i]) for x in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


__all__ = ["COLUMNS", "KEY", "ResultsStore", "Row", "format_table", "natural_key"]
