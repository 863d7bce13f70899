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
REPR_LOW, REPR_HIGH = 1e-4, 1e16
"""Python's repr writes a float in positional notation exactly when 1e-4 <= |x| < 1e16 (or x == 0)."""


class TableError(ValueError):
    """A table file that cannot be read as this version's format; the message names the file."""


def schema():
    """Text columns are dictionary-encoded in memory as on disk: a member's name is stored once,
    and 14 M training-loss rows take ~1 GB as arrow instead of ~2 GB as plain strings."""
    import pyarrow as pa

    text = pa.dictionary(pa.int32(), pa.string())
    types = {**{c: text for c in STRINGS}, **{c: pa.int64() for c in INTS}, **{c: pa.float64() for c in FLOATS}}
    return pa.schema([(c, types[c]) for c in COLUMNS + ("unit",)])


def unit_order(units: Iterable[str]) -> dict[str, int]:
    """Rank of each unit id in the order the JSON store reads units (sorted paths, part by
    part): a later unit's row replaces an earlier one with the same key."""
    return {u: i for i, u in enumerate(sorted(set(units), key=lambda u: u.split("/")))}


def from_rows(rows: list[dict], unit: str):
    """One unit's rows as an arrow table (raises TypeError/ArrowInvalid on a value of another type)."""
    return from_units([(rows, unit)])


def from_units(units: list[tuple[list[dict], str]]):
    """Several units' (rows, unit id) as one arrow table, in one conversion: rows are read as
    plain text and dictionary-encoded after (2.4x faster than converting to dictionaries
    row by row)."""
    import numpy as np
    import pyarrow as pa

    sch = schema()
    plain = pa.schema([(c, sch.field(c).type.value_type if c in STRINGS else sch.field(c).type) for c in COLUMNS])
    rows = [r for unit_rows, _ in units for r in unit_rows]
    table = pa.Table.from_pylist(rows, schema=plain).cast(sch.remove(len(COLUMNS)))
    counts = np.array([len(unit_rows) for unit_rows, _ in units], dtype=np.int64)
    ids = pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(len(units), dtype=np.int32), counts)),
                                         pa.array([unit for _, unit in units], pa.string()))
    return table.append_column(sch.field("unit"), ids)


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
        pf = pq.ParquetFile(path, read_dictionary=list(STRINGS))
        _checked(path, pf.schema_arrow.metadata or {})
        names = pf.schema_arrow.names
        keep = []
        for i in range(pf.num_row_groups):
            group = pf.metadata.row_group(i)
            if all(_may_hold(group.column(names.index(col)).statistics, allowed)
                   for col, allowed in (filters or {}).items()):
                keep.append(i)
        table = pf.read_row_groups(keep) if keep else schema().empty_table()
        table = table.cast(schema().with_metadata(table.schema.metadata))  # a file of plain strings too
    except (OSError, ValueError, pa.ArrowException) as exc:
        if isinstance(exc, TableError):
            raise
        raise TableError(f"{path}: unreadable results table ({exc})") from None
    table = table.replace_schema_metadata(None)
    mask = None
    for col, allowed in (filters or {}).items():
        kind = table.schema.field(col).type
        values = pa.array(sorted(allowed), type=kind.value_type if pa.types.is_dictionary(kind) else kind)
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


def write(path: Path, table, units: dict[str, Any], unique: bool = False) -> None:
    """Write the table (rows in the order reads return them) with its units' cache keys, atomically.
    `unique`: no two rows share a key, so a read without loose units needs no resolving."""
    import pyarrow.parquet as pq

    from .io import atomic_path

    info = {"format": TABLE_FORMAT, "units": units, "unique": bool(unique)}
    meta = json.dumps(info, sort_keys=True, separators=(",", ":")).encode()
    table = table.replace_schema_metadata({META_KEY: meta})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=1 << 16,
                       use_dictionary=list(STRINGS), write_statistics=True)


def _as_dictionary(column):
    """One DictionaryArray for a (chunked) text column, plain or dictionary-encoded."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.unify_dictionaries() if pa.types.is_dictionary(column.type) else column
        column = column.combine_chunks()
    return column if pa.types.is_dictionary(column.type) else column.dictionary_encode()


def _dense_rank(column, fill):
    """Order-preserving integer codes of a text column (nulls as `fill`), as numpy: the distinct
    values are sorted (few), the rows take their value's rank."""
    import numpy as np
    import pyarrow.compute as pc

    enc = _as_dictionary(column)
    values = enc.dictionary.to_pylist() + [fill]
    position = {v: i for i, v in enumerate(sorted(set(values)))}
    rank = np.array([position[v] for v in values], dtype=np.int32)  # int32: 16 M rows' keys in 64 MB each
    return rank[pc.fill_null(enc.indices, len(values) - 1).to_numpy(zero_copy_only=False)]


def sorted_keys(table, order: dict[str, int]):
    """(indices that sort the rows like `pythia.results.sort_key`, rows of one unit staying in
    their order and units in `order`; for each sorted row, whether the next one has the same key)."""
    import numpy as np
    import pyarrow.compute as pc

    n = table.num_rows
    units = _as_dictionary(table.column("unit"))
    ranks = np.array([order.get(u, -1) for u in units.dictionary.to_pylist()], dtype=np.int32)  # -1: no rows
    unit_rank = ranks[units.indices.to_numpy(zero_copy_only=False)] if n else np.zeros(0, np.int32)
    sort_cols = [_dense_rank(table.column(c), "") for c in ("analysis", "task", "metric", "member")]
    step = pc.fill_null(table.column("step"), -1).to_numpy()
    nulls = [pc.is_null(table.column(c)).to_numpy(zero_copy_only=False).astype(np.int8)
             for c in ("analysis", "task", "metric", "member", "step")]
    keys = sort_cols + [step] + nulls + [unit_rank]  # the primary key first
    in_order = _in_order(keys)
    if in_order:  # a folded table is stored sorted: its rows need no sort (nor a copy)
        idx = np.arange(n)
    else:  # np.lexsort: the last key is the primary one; stable, so rows of a unit keep their order
        idx = np.lexsort(keys[::-1])
    same_next = np.ones(n, dtype=bool)
    for k in sort_cols + [step] + nulls:
        ks = k if in_order else k[idx]
        same_next[:-1] &= ks[:-1] == ks[1:]
    if n:
        same_next[-1] = False
    return idx, same_next


def _in_order(keys) -> bool:
    """Whether the rows are already sorted by `keys` (primary first): where np.lexsort, being
    stable, would return 0, 1, 2, ... A few vectorised passes instead of a sort."""
    import numpy as np

    if len(keys[0]) < 2:
        return True
    undecided = np.ones(len(keys[0]) - 1, dtype=bool)  # adjacent pairs equal on every key so far
    for k in keys:
        before, after = k[:-1], k[1:]
        if np.any(undecided & (before > after)):
            return False
        undecided &= before == after
        if not undecided.any():
            break
    return True


def resolve(table, order: dict[str, int]):
    """The table as the JSON store returns it: one row per key (member, step, analysis, task,
    metric), the row of the latest unit in `order` (and the last within a unit) winning, sorted
    like `pythia.results.sort_key`; without the `unit` column."""
    import numpy as np
    import pyarrow as pa

    if table.num_rows == 0:
        return table.drop_columns(["unit"])
    idx, same_next = sorted_keys(table, order)
    keep = idx[~same_next]  # the last row of each key (the latest unit's)
    table = table.drop_columns(["unit"])
    if len(keep) == table.num_rows and np.array_equal(keep, np.arange(len(keep))):
        return table  # already in order (a folded table read without loose units)
    return table.take(pa.array(keep))


def _csv_text(value: str | None) -> str:
    """A text field as Python's csv module writes it (QUOTE_MINIMAL, delimiter ',')."""
    if value is None:
        return ""
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _column_text(column):
    """One column of a chunk as CSV fields (an arrow string array without nulls), computed in
    arrow: text through its dictionary (few distinct values), integers by arrow's cast, floats
    as Python's repr writes them (see `_float_text`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        enc = _as_dictionary(column)
        fields = pa.array([_csv_text(v) for v in enc.dictionary.to_pylist()] + [""], pa.string())
        return fields.take(pc.fill_null(enc.indices, len(fields) - 1))
    if pa.types.is_floating(kind):
        return _float_text(column)
    return pc.fill_null(pc.cast(column, pa.string()), "")


def _float_text(column):
    """Floats as `repr` writes them (shortest round-trip digits), as the JSON store's CSV did, so
    that an export's bytes do not depend on how the table is stored. Arrow's cast gives the same
    shortest digits; it differs from repr only in notation: no ".0" on integral values (fixed
    here), and exponents for some values that repr writes positionally or the other way round
    (|x| < 1e-4, |x| >= 1e16, round numbers such as 1e+14): those few go through repr itself."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(column, pa.string())
    mag = pc.abs(pc.fill_null(column, 0.0))
    positional = pc.and_(pc.invert(pc.match_substring(pc.fill_null(text, ""), "e")),
                         pc.or_(pc.equal(mag, 0.0), pc.and_(pc.greater_equal(mag, REPR_LOW), pc.less(mag, REPR_HIGH))))
    text = pc.if_else(pc.match_substring(text, "."), text, pc.binary_join_element_wise(text, ".0", ""))
    other = pc.and_(pc.invert(positional), pc.is_valid(column))
    if pc.any(other).as_py():
        where = np.flatnonzero(other.to_numpy(zero_copy_only=False))
        values = column.take(pa.array(where)).to_pylist()
        text = pc.replace_with_mask(text, other, pa.array([repr(v) for v in values], pa.string()))
    return pc.fill_null(text, "")


def csv_chunks(table) -> Iterator[str]:
    """The table's rows as CSV lines (no header), formatted as `pythia.results.to_csv` does
    (floats by repr, missing values empty), CHUNK rows at a time. Each line is joined in arrow;
    the chunk's text is the joined array's data buffer, with no Python object per row."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    for start in range(0, table.num_rows, CHUNK):
        part = table.slice(start, CHUNK)
        cols = [_column_text(part.column(c).combine_chunks() if part.column(c).num_chunks != 1
                             else part.column(c).chunk(0)) for c in COLUMNS]
        lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*cols, ","), "\n", "")
        offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
        data = lines.buffers()[2]
        text = data[int(offsets[0]):int(offsets[-1])].to_pybytes().decode("utf-8")
        yield text


def file_stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


__all__ = ["TABLE_FORMAT", "TableError", "csv_chunks", "file_stamp", "from_rows", "from_units", "read", "read_meta", "resolve",
           "schema", "unit_order", "write"]
