"""The results table's columnar side: an analysis' units folded into one Parquet file.

A run at Pythia's scale holds ~10,000 units per analysis (50 members x 154 checkpoints) and
~14 million training-loss rows; reading one JSON file per unit for every query does not survive
that. `ResultsStore.compact` folds an analysis' units into `RESULTS/table/{analysis}.parquet`
(Apache Parquet through pyarrow: column pruning, row-group statistics for filters, dictionary
encoding of the repeated names; https://arrow.apache.org/docs/python/parquet.html). Each row
keeps the unit it came from (`unit`, the unit's path relative to the results folder), and the
file's key-value metadata holds every unit's cache key, so the runner's cache check reads one
footer instead of parsing every unit.

This module knows arrow and the file format only; which files exist and which unit wins is
`pythia.results`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

TABLE_FORMAT = "pythia-results-table/1"
META_KEY = b"pythia"
COLUMNS = ("suite", "member", "size", "seed", "step", "tokens", "analysis", "task", "metric", "value", "stderr")
STRINGS = ("suite", "member", "size", "analysis", "task", "metric", "unit")
INTS = ("seed", "step", "tokens")
FLOATS = ("value", "stderr")
CHUNK = 1 << 18
"""Rows formatted per CSV chunk: bounds the export's memory whatever the table's size."""


class TableError(ValueError):
    """A table file that cannot be read as this version's format; the message names the file."""


def schema():
    import pyarrow as pa

    types = {**{c: pa.string() for c in STRINGS}, **{c: pa.int64() for c in INTS}, **{c: pa.float64() for c in FLOATS}}
    return pa.schema([(c, types[c]) for c in COLUMNS + ("unit",)])


def unit_order(units: Iterable[str]) -> dict[str, int]:
    """Rank of each unit id in the order the JSON store reads units (sorted paths, part by
    part): a later unit's row replaces an earlier one with the same key."""
    return {u: i for i, u in enumerate(sorted(set(units), key=lambda u: u.split("/")))}


def from_rows(rows: list[dict], unit: str):
    """One unit's rows as an arrow table (raises TypeError/ArrowInvalid on a value of another type)."""
    import pyarrow as pa

    return pa.Table.from_pylist([{**{c: r.get(c) for c in COLUMNS}, "unit": unit} for r in rows], schema=schema())


def read_meta(path: Path) -> dict:
    """The file's {"format", "units": {unit id: cache key}} (its footer only)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: unreadable results table ({exc}); the units folded into it are in no other "
                         "file: restore it from a backup or re-run the analyses") from None
    return _checked(path, meta)


def _checked(path: Path, meta: dict) -> dict:
    try:
        info = json.loads(meta[META_KEY])
    except (KeyError, ValueError):
        raise TableError(f"{path}: a Parquet file without pythia's results metadata; move it out of "
                         f"{path.parent}") from None
    fmt = info.get("format")
    if fmt != TABLE_FORMAT:
        raise TableError(f"{path}: written by another version of pythia (format {fmt!r}; this version reads "
                         f"{TABLE_FORMAT}); upgrade pythia to read it. Nothing was changed.")
    return info


def read(path: Path, filters: dict[str, set] | None = None, exclude_units: set | None = None):
    """The file's rows (with `unit`), filtered ({column: allowed values}). Row groups whose
    min/max statistics exclude every allowed value are not read (pyarrow's dataset API would do
    the same, but imports pandas: a second of a quick query's time)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        _checked(path, pf.schema_arrow.metadata or {})
        names = pf.schema_arrow.names
        keep = []
        for i in range(pf.num_row_groups):
            group = pf.metadata.row_group(i)
            if all(_may_hold(group.column(names.index(col)).statistics, allowed)
                   for col, allowed in (filters or {}).items()):
                keep.append(i)
        table = pf.read_row_groups(keep) if keep else pf.schema_arrow.empty_table()
    except (OSError, ValueError, pa.ArrowException) as exc:
        if isinstance(exc, TableError):
            raise
        raise TableError(f"{path}: unreadable results table ({exc})") from None
    table = table.replace_schema_metadata(None)
    mask = None
    for col, allowed in (filters or {}).items():
        values = pa.array(sorted(allowed), type=table.schema.field(col).type)
        term = pc.is_in(table.column(col), value_set=values)
        mask = term if mask is None else pc.and_(mask, term)
    if exclude_units:
        term = pc.invert(pc.is_in(table.column("unit"), value_set=pa.array(sorted(exclude_units), pa.string())))
        mask = term if mask is None else pc.and_(mask, term)
    if mask is not None:
        table = table.filter(pc.fill_null(mask, False))
    return table


def _may_hold(stats, allowed: set) -> bool:
    """Whether a row group whose column has these statistics may hold one of `allowed`."""
    if stats is None or not stats.has_min_max:
        return True
    return any(stats.min <= v <= stats.max for v in allowed)


def write(path: Path, table, units: dict[str, Any]) -> None:
    """Write the table (already in unit order) with its units' cache keys, atomically."""
    import pyarrow.parquet as pq

    from .io import atomic_path

    meta = json.dumps({"format": TABLE_FORMAT, "units": units}, sort_keys=True, separators=(",", ":")).encode()
    table = table.replace_schema_metadata({META_KEY: meta})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=1 << 16,
                       use_dictionary=list(STRINGS), write_statistics=True)


def _dense_rank(column, fill):
    """Order-preserving integer codes of a column (nulls as `fill`), as numpy."""
    import numpy as np
    import pyarrow.compute as pc

    col = pc.fill_null(column, fill)
    if col.num_chunks != 1:
        col = col.combine_chunks()
    else:
        col = col.chunk(0)
    if len(col) == 0:
        return np.zeros(0, dtype=np.int64)
    return pc.rank(col, sort_keys="ascending", tiebreaker="dense").to_numpy(zero_copy_only=False).astype(np.int64)


def resolve(table, order: dict[str, int]):
    """The table as the JSON store returns it: one row per key (member, step, analysis, task,
    metric), the row of the latest unit in `order` (and the last within a unit) winning, sorted
    like `pythia.results.sort_key`; without the `unit` column."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    if n == 0:
        return table.drop_columns(["unit"])
    units = table.column("unit").combine_chunks().dictionary_encode()
    ranks = np.array([order[u] for u in units.dictionary.to_pylist()], dtype=np.int64)
    unit_rank = ranks[units.indices.to_numpy(zero_copy_only=False)]
    sort_cols = [_dense_rank(table.column(c), "") for c in ("analysis", "task", "metric", "member")]
    step = pc.fill_null(table.column("step"), -1).to_numpy()
    nulls = [pc.is_null(table.column(c)).to_numpy(zero_copy_only=False).astype(np.int8)
             for c in ("analysis", "task", "metric", "member", "step")]
    # np.lexsort: the last key is the primary one; stable, so rows of a unit keep their order
    keys = [unit_rank] + nulls[::-1] + [step] + sort_cols[::-1]
    idx = np.lexsort(keys)
    same_key = np.ones(n, dtype=bool)
    for k in sort_cols + [step] + nulls:
        ks = k[idx]
        same_key[:-1] &= ks[:-1] == ks[1:]
    same_key[-1] = False
    keep = idx[~same_key]  # the last row of each key (the latest unit's)
    return table.take(pa.array(keep)).drop_columns(["unit"])


def _csv_text(value: str | None) -> str:
    """A text field as Python's csv module writes it (QUOTE_MINIMAL, delimiter ',')."""
    if value is None:
        return ""
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_chunks(table) -> Iterator[str]:
    """The table's rows as CSV lines (no header), formatted as `pythia.results.to_csv` does
    (floats by repr, missing values empty), CHUNK rows at a time."""
    for start in range(0, table.num_rows, CHUNK):
        part = table.slice(start, CHUNK)
        cols = []
        for c in COLUMNS:
            values = part.column(c).to_pylist()
            if c in FLOATS:
                cols.append(["" if v is None else repr(v) for v in values])
            elif c in INTS:
                cols.append(["" if v is None else str(v) for v in values])
            else:
                cache: dict = {}
                cols.append([cache[v] if v in cache else cache.setdefault(v, _csv_text(v)) for v in values])
        yield "".join(",".join(line) + "\n" for line in zip(*cols))


def file_stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


__all__ = ["TABLE_FORMAT", "TableError", "csv_chunks", "file_stamp", "from_rows", "read", "read_meta", "resolve",
           "schema", "unit_order", "write"]
