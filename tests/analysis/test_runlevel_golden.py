"""`seeds` and `training_map` write what they wrote before they were rewritten for scale: the rows,
the outliers table, the maps and the warnings of `runlevel_case` against the golden file the
earlier code wrote (values to 1e-12, everything else equal)."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from .runlevel_case import SHAPES, build, outputs

GOLDEN = Path(__file__).parents[1] / "fixtures" / "runlevel_golden.json.gz"
TOL = 1e-12


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or isinstance(a, bool):
            return False
        return a == b or math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def same_text(a: str, b: str) -> bool:
    """Tab-separated text equal field by field, numbers to TOL."""
    def fields(text):
        return [line.split("\t") for line in text.splitlines()]

    def number(x):
        try:
            return float(x)
        except ValueError:
            return x

    fa, fb = fields(a), fields(b)
    return len(fa) == len(fb) and all(same([number(x) for x in ra], [number(x) for x in rb]) for ra, rb in zip(fa, fb))


@pytest.fixture(scope="module", params=["json units", "folded"])
def got(tmp_path_factory, request):
    """The analyses' output on the case as JSON units, and folded into tables (read as frames)."""
    return outputs(build(tmp_path_factory.mktemp("runlevel"), folded=request.param == "folded"))


@pytest.fixture(scope="module")
def want():
    return json.loads(gzip.decompress(GOLDEN.read_bytes()))


@pytest.mark.parametrize("analysis", ["seeds", "training_map"])
def test_rows_are_the_earlier_codes(got, want, analysis):
    assert got["columns"] == want["columns"]
    assert len(got[analysis]) == len(want[analysis])
    bad = [(g, w) for g, w in zip(got[analysis], want[analysis]) if not same(g, w)]
    assert not bad, f"{len(bad)} rows differ, first: {bad[0]}"


def test_artifacts_and_warnings_are_the_earlier_codes(got, want):
    assert got["artifacts"].keys() == want["artifacts"].keys()
    for name, text in want["artifacts"].items():
        if name.endswith(".json"):
            assert same(json.loads(got["artifacts"][name]), json.loads(text)), name
        else:
            assert same_text(got["artifacts"][name], text), name
    assert got["warnings"] == want["warnings"]


def test_the_case_takes_every_path(want):
    """The golden case is worth checking against: outliers, agreement of every kind, a map per shape."""
    cols = want["columns"]
    metric, member = cols.index("metric"), cols.index("member")
    metrics = {r[metric] for r in want["seeds"]}
    assert {"self_consistency", "inter_seed", "val_loss:val_loss:outlier_z", "seeds:inter_seed:median"} <= metrics
    assert "a-seed3\ta\tval_loss" in want["artifacts"]["seeds/outliers.tsv"]
    assert {r[member] for r in want["training_map"]} == {f"{s}-seed{k}" for s, seeds in SHAPES.items() for k in seeds}
    assert any("kappa undefined" in w for w in want["warnings"])
