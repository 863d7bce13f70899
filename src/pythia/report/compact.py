"""The page's figure data, written compactly: what a report over 50 members x 154 checkpoints
needs to stay a file a browser opens in seconds.

- Floats are cut to 7 significant digits (what a plot can show).
- An array that several traces hold (the step axis of every curve over the same checkpoints,
  the hover labels of a size's seeds) is written once in a pool; traces refer to it as
  `{"@": k}` (k: its index in the pool).
- A numeric array of `MIN_ARRAY` values or more is written as a typed array, plotly.js' own
  encoding (https://plotly.com/javascript/reference/ "typed arrays"; plotly.py writes numpy
  arrays the same way): `{"dtype": "i4" | "f4", "bdata": base64 of the little-endian values}`.
  Whole numbers that fit go as i4 (exact); x and y values as f4 (float32: 7 significant
  digits, as above; None, a gap in a line, as NaN); anything else stays a JSON list.

The page (pythia.report.page) decodes both before plotly draws; `expand` does the same in
Python (tests: the decoded figures are the figures).
"""
from __future__ import annotations

import base64
import json
import math

import numpy as np

MIN_ARRAY = 8
"""Shorter arrays stay inline JSON lists (neither pooled nor typed)."""
FLOAT_KEYS = ("x", "y")
"""Trace keys whose floats go as f4: plotly places them on an axis and formats their hover
text; customdata and text are shown as they are, so their floats stay decimal."""
F4_MAX = 3.0e38
F4_TINY = 1.2e-38


def short_floats(obj):
    """Floats to 7 significant digits (halves the page's data)."""
    if isinstance(obj, float):
        return float(f"{obj:.7g}")
    if isinstance(obj, dict):
        return {k: short_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [short_floats(v) for v in obj]
    return obj


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, sort_keys=True)


def _numbers(v) -> bool:
    return isinstance(v, list) and len(v) >= MIN_ARRAY and all(
        x is None or (type(x) in (int, float)) for x in v)


def typed(v, floats: bool):
    """`v` as a typed-array spec, or `v` itself when it is not a long numeric list (or f4 would
    not hold it: floats=False, or values beyond float32's range)."""
    if not _numbers(v):
        return v
    if all(type(x) is int for x in v) and -2 ** 31 <= min(v) and max(v) < 2 ** 31:
        return {"dtype": "i4", "bdata": base64.b64encode(np.asarray(v, dtype="<i4").tobytes()).decode("ascii")}
    if not floats:
        return v
    a = np.array([math.nan if x is None else x for x in v], dtype=np.float64)
    finite = np.abs(a[~np.isnan(a)])
    if finite.size and (finite.max() > F4_MAX or ((finite > 0) & (finite < F4_TINY)).any()):
        return v
    return {"dtype": "f4", "bdata": base64.b64encode(a.astype("<f4").tobytes()).decode("ascii")}


def decode(v):
    """A typed-array spec back to a list (NaN -> None); anything else as it is."""
    if not (isinstance(v, dict) and isinstance(v.get("bdata"), str)):
        return v
    a = np.frombuffer(base64.b64decode(v["bdata"]), dtype={"i4": "<i4", "f4": "<f4"}[v["dtype"]])
    return [None if isinstance(x, float) and math.isnan(x) else x for x in a.tolist()]


def _traces(figs: list[dict]):
    for f in figs:
        yield from f["data"]
        for option in f.get("menu", {}).get("options", []):
            yield from option


def compact(figs: list[dict]) -> tuple[list[dict], list]:
    """(figures, pool): the figures (`{"id", "data", "layout", "menu": {"options": [traces per
    option but the first], ...}}`) with their floats short, their shared arrays in the pool and
    their numeric arrays typed (see the module doc)."""
    figs = short_floats(figs)
    seen: dict[str, tuple[int, set]] = {}
    for trace in _traces(figs):
        for k, v in trace.items():
            if isinstance(v, list) and len(v) >= MIN_ARRAY:
                n, keys = seen.get(dumps(v), (0, set()))
                seen[dumps(v)] = (n + 1, keys | {k})
    index: dict[str, int] = {}
    pool: list = []

    def ref(k, v):
        if not (isinstance(v, list) and len(v) >= MIN_ARRAY):
            return v
        text = dumps(v)
        n, keys = seen[text]
        if n < 2:
            return typed(v, k in FLOAT_KEYS)
        if text not in index:
            index[text] = len(pool)
            pool.append(typed(v, keys <= set(FLOAT_KEYS)))
        return {"@": index[text]}

    return _each_value(figs, ref), pool


def expand(figs: list[dict], pool: list) -> list[dict]:
    """What the page draws from `compact`'s output: references and typed arrays back to lists."""
    def arr(v):
        if isinstance(v, dict) and set(v) == {"@"}:
            v = pool[v["@"]]
        return decode(v)

    return _each_value(figs, lambda _key, v: arr(v))


def _each_value(figs: list[dict], fn) -> list[dict]:
    """The figures with every trace's value v (of every option) replaced by fn(key, v)."""
    def each(traces):
        return [{k: fn(k, v) for k, v in t.items()} for t in traces]

    out = []
    for f in figs:
        g = dict(f, data=each(f["data"]))
        if "menu" in f:
            g["menu"] = dict(f["menu"], options=[each(o) for o in f["menu"]["options"]])
        out.append(g)
    return out
