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

At scale the units are folded into one Parquet file per analysis (`compact`, which a sweep's
`write_csv` runs once an analysis has COMPACT_AT loose units or COMPACT_BYTES of them;
`pythia.results_table`):

    RESULTS/table/{analysis}.parquet                   its rows, and every unit's cache key

Folding renames each unit to `*.json.claimed` before reading it (a unit the runner rewrites
meanwhile is a new file, left for the next fold), writes the table atomically, then deletes the
claimed files: a `kill -9` at any point loses nothing, and a reader takes a loose unit over the
table's copy of it (a `.json` over a `.claimed`). Queries read the table with column filters
and only the loose units of the analyses asked for; a run written as JSON units only is read as
it is.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .io import atomic_path, write_text_atomic

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


COMPACT_AT = int(os.environ.get("PYTHIA_RESULTS_COMPACT_AT", "1000"))
"""Loose units of one analysis from which `write_csv` folds them into its Parquet table."""
COMPACT_BYTES = int(os.environ.get("PYTHIA_RESULTS_COMPACT_BYTES", str(32 << 20)))
"""...or loose JSON bytes (~110,000 rows, about a second to parse): a whole-run unit of 450,000
seed statistics, or a few hundred training-loss intervals of 1,000 updates, is folded too."""
CLAIMED = ".claimed"
LOOSE_WARN = 5 * COMPACT_AT
"""Loose units of one analysis from which a query says how to fold them."""


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
        self._meta: dict[str, tuple] = {}

    # -- units ------------------------------------------------------------------------------
    def unit_key(self, analysis: str, member: str | None, step: int | None) -> dict | None:
        """The cache key a unit was computed with, or None when it was never written."""
        path = _unit_path(self.root, analysis, member, step)
        for p in (path, path.with_name(path.name + CLAIMED)):
            unit = self._read(p)
            if unit is not None:
                return unit.get("key")
        return self._table_units(analysis).get(self._rel(path))

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
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            unit = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}: unreadable results unit ({exc}); delete it to recompute") from None
        fmt = unit.get("format") if isinstance(unit, dict) else None
        if isinstance(fmt, str) and fmt.startswith("pythia-results-unit/") and fmt != FORMAT:
            raise ValueError(f"{path}: written by another version of pythia (format {fmt}; this version reads "
                             f"{FORMAT}); upgrade pythia to read this run. Nothing was changed.")
        if fmt != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file")
        return unit

    def _rel(self, path: Path) -> str:
        """A unit's id: its path below the results folder (`units/eval/m/step8.json`)."""
        rel = path.relative_to(self.root).as_posix()
        return rel[:-len(CLAIMED)] if rel.endswith(CLAIMED) else rel

    def units(self, analysis: str | list | None = None) -> list[Path]:
        """Loose unit files (not yet folded into a table), sorted; with `analysis` (a name or a
        list), only those analyses' units. A unit claimed by an interrupted fold
        (`*.json.claimed`) is listed unless its `.json` was written again since."""
        base = self.root / "units"
        if not base.is_dir():
            return []
        if not analysis:
            folders = [base]
        else:
            names = [analysis] if isinstance(analysis, str) else list(analysis)
            folders = [base / name for name in dict.fromkeys(names) if (base / name).is_dir()]
        found: dict[str, Path] = {}
        for folder in folders:
            for dirpath, _, files in os.walk(folder):
                for f in files:
                    if f.endswith(".json") or (f.endswith(".json" + CLAIMED) and f[:-len(CLAIMED)] not in files):
                        p = Path(dirpath) / f
                        found[self._rel(p)] = p
        return [found[k] for k in sorted(found, key=lambda u: u.split("/"))]

    def analyses(self) -> list[str]:
        """Names of the analyses with rows here (loose units or a table), sorted."""
        names = set()
        if (self.root / "units").is_dir():
            names |= {p.name for p in (self.root / "units").iterdir() if p.is_dir()}
        if (self.root / "table").is_dir():
            names |= {p.name[:-len(".parquet")] for p in (self.root / "table").glob("*.parquet")}
        return sorted(names)

    # -- the columnar tables ----------------------------------------------------------------
    def _table_path(self, analysis: str) -> Path:
        return self.root / "table" / f"{analysis}.parquet"

    def _table_units(self, analysis: str) -> dict:
        """{unit id: cache key} of the units folded into `analysis`' table (footer, cached)."""
        return self._table_info(analysis).get("units", {})

    def _table_info(self, analysis: str) -> dict:
        """The footer of `analysis`' table ({} without one), cached while the file is unchanged."""
        from .results_table import file_stamp, read_meta

        path = self._table_path(analysis)
        stamp = file_stamp(path)
        if stamp is None:
            return {}
        cached = self._meta.get(analysis)
        if cached is None or cached[0] != stamp:
            cached = (stamp, read_meta(path))
            self._meta[analysis] = cached
        return cached[1]

    def unit_keys(self, analysis: str | list | None = None) -> dict[str, Any]:
        """{unit id: cache key} of every unit (folded or loose), in the order units are read."""
        from .results_table import unit_order

        names = self.analyses() if not analysis else ([analysis] if isinstance(analysis, str) else list(analysis))
        keys: dict[str, Any] = {}
        for name in names:
            keys.update(self._table_units(name))
        for path in self.units(names):
            keys[self._rel(path)] = self._read(path).get("key")
        return {u: keys[u] for u in unit_order(keys)}

    def compact(self, analysis: str | list | None = None, min_units: int = 0, min_bytes: int | None = None) -> list[str]:
        """Fold loose units into their analysis' Parquet table (see the module doc); analyses
        with fewer than `min_units` loose units (and, given `min_bytes`, fewer loose bytes) are
        left as they are. Returns the analyses folded. Another process folding this store
        meanwhile: nothing is done."""
        from .lock import LockedError, RunLock

        names = self.analyses() if not analysis else ([analysis] if isinstance(analysis, str) else list(analysis))
        done = []
        try:
            lock = RunLock(self.root, "pythia results (folding units into tables)", name=".compact.lock").acquire()
        except (LockedError, OSError):
            return done
        fresh = not self.csv_stale()  # folding changes no row: a fresh export stays fresh...
        started = time.time_ns()
        try:
            for name in names:
                loose = self.units(name)
                if not loose:
                    continue
                due = len(loose) >= max(min_units, 1) or \
                    (min_bytes is not None and sum(p.stat().st_size for p in loose) >= min_bytes)
                if due and self._fold(name, loose):
                    done.append(name)
        finally:
            lock.release()
        if done and fresh and not any(p.stat().st_mtime_ns >= started for p in self.units()):
            os.utime(self.root / "results.csv")  # ...unless a unit was written meanwhile
        return done

    def _fold(self, analysis: str, loose: list[Path]) -> bool:
        import pyarrow as pa

        from . import results_table as rt

        claimed = []
        for p in loose:
            c = p if p.name.endswith(CLAIMED) else p.with_name(p.name + CLAIMED)
            if c is not p:
                os.replace(p, c)
            claimed.append(c)
        keys: dict[str, Any] = {}
        try:
            parts = self._loose_tables(claimed, keys=keys)
            path = self._table_path(analysis)
            units = dict(self._table_units(analysis))
            if path.is_file():
                parts.insert(0, rt.read(path, exclude_units=set(keys)))
            units.update(keys)
            table = pa.concat_tables(parts)
            order = rt.unit_order(units)
            idx, same_next = rt.sorted_keys(table, order)  # stored in the order reads return: no sort then
            rt.write(path, table.take(pa.array(idx)), {u: units[u] for u in order}, unique=not same_next.any())
        except (ValueError, TypeError, pa.ArrowException) as exc:  # a row this format cannot hold: stay loose
            for c in claimed:
                target = c.with_name(c.name[:-len(CLAIMED)])
                if not target.exists():
                    os.replace(c, target)
            warnings.warn(f"results of {analysis} stay as JSON units ({type(exc).__name__}: {exc})", stacklevel=3)
            return False
        for c in claimed:
            c.unlink(missing_ok=True)
        return True

    def _loose_tables(self, paths: list[Path], row_filters: list[tuple[str, set]] = (),
                      keys: dict | None = None) -> list:
        """Loose units' rows (those passing `row_filters`) as arrow tables, converted a batch of
        about `results_table.CHUNK` rows at a time so that few rows live as dicts at once; `keys`
        collects each unit's cache key by unit id."""
        from . import results_table as rt

        parts, batch, held = [], [], 0
        for p in paths:
            unit = self._read(p)
            rows = unit.get("rows", [])
            if row_filters:
                rows = [r for r in rows if all(r.get(k) in v for k, v in row_filters)]
            rel = self._rel(p)
            if keys is not None:
                keys[rel] = unit.get("key")
            batch.append((rows, rel))
            held += len(rows)
            if held >= rt.CHUNK:
                parts.append(rt.from_units(batch))
                batch, held = [], 0
        if batch:
            parts.append(rt.from_units(batch))
        return parts

    # -- the table --------------------------------------------------------------------------
    def rows(self, analysis: str | list | None = None, metric: str | list | None = None,
             member: str | list | None = None, task: str | list | None = None,
             step: int | list | None = None) -> list[dict]:
        """All rows (last write of a key wins), sorted by key; filters take a name or a list
        (`step`: a step or a list of steps). With `analysis`, only those analyses' units and
        tables are read (a unit's rows are those of the analysis it was put under)."""
        table = self._arrow(analysis, metric, member, task, step)
        if table is not None:
            return table.to_pylist()
        want = _filters(analysis, metric, member, task, step)
        loose = self.units(analysis)
        for name, group in itertools.groupby(loose, key=lambda p: p.relative_to(self.root).parts[1]):
            _many_loose(name, list(group), self.root)
        return self._json_rows(loose, want)

    def _json_rows(self, paths: list[Path], want: dict) -> list[dict]:
        table: dict[tuple, dict] = {}
        for path in paths:
            unit = self._read(path)
            for row in unit.get("rows", []):
                if all(row.get(k) in v for k, v in want.items()):
                    table[tuple(row.get(k) for k in KEY)] = row
        return sorted(table.values(), key=sort_key)

    def _arrow(self, analysis=None, metric=None, member=None, task=None, step=None, each: bool = False):
        """The rows as one resolved arrow table, or None when no analysis asked for has a table
        (then the JSON units are read as they always were). each=True: a list of
        (analysis, table) instead, one per analysis, for exports that go analysis by analysis."""
        want = _filters(analysis, metric, member, task, step)
        names = sorted(want["analysis"]) if "analysis" in want else self.analyses()
        if not any(self._table_path(n).is_file() for n in names):
            return None
        from . import results_table as rt

        col_filters = {k: v for k, v in want.items() if k != "analysis"}
        out = []
        for name in names:
            loose = self.units(name)
            _many_loose(name, loose, self.root)
            rels = {self._rel(p) for p in loose}
            parts = []
            if self._table_path(name).is_file():
                parts.append(rt.read(self._table_path(name), col_filters, exclude_units=rels))
            parts += self._loose_tables(loose, list(col_filters.items()))  # a unit's rows are all of its analysis
            if not loose and parts and self._table_info(name).get("unique"):
                out.append((name, parts[0].drop_columns(["unit"])))  # stored sorted, one row per key
            elif parts:
                import pyarrow as pa

                table = pa.concat_tables(parts)
                out.append((name, rt.resolve(table, rt.unit_order(set(table.column("unit").unique().to_pylist())))))
        if each:
            return out
        import pyarrow as pa

        return pa.concat_tables([t for _, t in out]) if out else rt.from_rows([], "").drop_columns(["unit"])

    def steps(self, analysis: str) -> list[int]:
        """The distinct steps of `analysis`' rows, ascending (a folded table: its step column only)."""
        found: set[int] = set()
        path = self._table_path(analysis)
        if path.is_file():
            import pyarrow.parquet as pq

            found |= {s for s in pq.read_table(path, columns=["step"]).column("step").unique().to_pylist()
                      if s is not None}
        for p in self.units(analysis):
            found |= {r["step"] for r in self._read(p).get("rows", []) if r.get("step") is not None}
        return sorted(found)

    def csv_stale(self, path: str | os.PathLike | None = None) -> bool:
        """Whether the exported table (default RESULTS/results.csv) is missing or older than a
        unit or table file (stats the loose units and the tables; reads nothing)."""
        path = Path(path) if path is not None else self.root / "results.csv"
        try:
            written = path.stat().st_mtime_ns
        except FileNotFoundError:
            return True
        files = self.units() + [self._table_path(n) for n in self.folded()]
        return any(f.stat().st_mtime_ns >= written for f in files if f.exists())

    def count(self, analysis: str) -> int:
        """Rows stored for `analysis`: a folded table's from its footer (less the units written
        again since, whose column alone is read), the loose units' by parsing them. Rows that
        share a key across units count once per unit (`rows` returns one)."""
        path = self._table_path(analysis)
        loose = self.units(analysis)
        if not path.is_file():
            return len(self.rows(analysis=analysis))
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        n = pf.metadata.num_rows
        if loose:
            import pyarrow as pa

            rels = pa.array(sorted({self._rel(p) for p in loose}), pa.string())
            n -= pc.sum(pc.is_in(pf.read(columns=["unit"]).column("unit"), value_set=rels)).as_py() or 0
            n += sum(len(self._read(p).get("rows", [])) for p in loose)
        return n

    def folded(self) -> list[str]:
        """The analyses with a Parquet table (see `compact`)."""
        return [n for n in self.analyses() if self._table_path(n).is_file()]

    def frame(self, analysis: str | list | None = None, metric: str | list | None = None,
              member: str | list | None = None, task: str | list | None = None, step: int | list | None = None):
        """The rows (same filters as `rows`) as a pandas DataFrame with the `COLUMNS`; text
        columns are categoricals (a member's name is stored once: the whole table of a
        50-member run fits in about 1 GB)."""
        from . import results_table as rt

        table = self._arrow(analysis, metric, member, task, step)
        if table is None:
            table = rt.from_units([(self.rows(analysis, metric, member, task, step), "")]).drop_columns(["unit"])
        # arrow's buffers are released column by column as pandas takes them
        return table.to_pandas(split_blocks=True, self_destruct=True)

    def csv_chunks(self, analysis: str | list | None = None, metric: str | list | None = None,
                   member: str | list | None = None, task: str | list | None = None) -> Iterable[str]:
        """The table as CSV text, header first, a bounded number of rows at a time."""
        parts = self._arrow(analysis, metric, member, task, each=True)
        if parts is None:
            yield self.to_csv(self.rows(analysis, metric, member, task))
            return
        from .results_table import csv_chunks

        yield ",".join(COLUMNS) + "\n"
        for _, table in parts:
            yield from csv_chunks(table)

    def to_csv(self, rows: list[dict] | None = None) -> str:
        if rows is None:
            return "".join(self.csv_chunks())
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: _fmt(r.get(c)) for c in COLUMNS})
        return buf.getvalue()

    def write_csv(self, path: str | os.PathLike | None = None, rows: list[dict] | None = None) -> Path:
        """Export the table (default RESULTS/results.csv). Without `rows`, analyses with
        COMPACT_AT loose units or COMPACT_BYTES of them are folded into their tables first."""
        path = Path(path) if path is not None else self.root / "results.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        if rows is not None:
            write_text_atomic(path, self.to_csv(rows))
            return path
        self.compact(min_units=COMPACT_AT, min_bytes=COMPACT_BYTES)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            for text in self.csv_chunks():
                f.write(text)
        return path


def is_store(path: Path) -> bool:
    """A results folder: loose units, folded tables, or both."""
    return path.is_dir() and ((path / "units").is_dir() or (path / "table").is_dir())


def _many_loose(name: str, loose: list[Path], root: Path) -> None:
    """Say once per query that an analysis' loose units are many (a sweep that never exported,
    units copied in from elsewhere): every query parses each of them."""
    if len(loose) >= LOOSE_WARN:
        warnings.warn(f"{root / 'units' / name}: {len(loose):,} loose result units, each parsed on every query; "
                      f"fold them once into one Parquet table with `pythia results RUN --compact --analysis {name}` "
                      "(nothing is lost: a kill mid-way leaves every unit readable)", stacklevel=3)


def _filters(analysis, metric, member, task, step=None) -> dict[str, set]:
    want = {k: ({v} if isinstance(v, str) else set(v)) for k, v in
            (("analysis", analysis), ("metric", metric), ("member", member), ("task", task)) if v}
    if step is not None:
        want["step"] = {int(step)} if isinstance(step, int) else {int(s) for s in step}
    return want


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


__all__ = ["COLUMNS", "COMPACT_AT", "COMPACT_BYTES", "is_store", "KEY", "ResultsStore", "Row", "format_table", "natural_key"]
