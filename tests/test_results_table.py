"""The results table folded into Parquet: the same rows, bytes and cache keys as the JSON units,
nothing lost when a fold is interrupted, clear errors for what this version cannot read."""
from __future__ import annotations

import csv
import io
import json
import os
import random

import pytest

from pythia import results as results_mod
from pythia.results import COLUMNS, ResultsStore


def _fill(root, seed: int = 0) -> ResultsStore:
    """A store with awkward content: several analyses, run/member/checkpoint units, missing
    values, text needing CSV quotes, a key written by two units (the later unit wins)."""
    rng = random.Random(seed)
    store = ResultsStore(root)
    for member in ("a-seed1", "a-seed2", "b,seed\"1"):
        for step in (0, 1, 2, 4, 1000):
            key = {"analysis": "eval", "digest": f"{member}{step}"}
            rows = [{"suite": "s", "member": member, "size": "a", "seed": 1, "step": step, "tokens": step * 8,
                     "task": task, "metric": metric, "value": rng.random(), "stderr": None if task == "t2" else 0.01}
                    for task in ("t1", "t2", "multi\nline") for metric in ("acc", "acc_norm")]
            store.put("eval", rows, key=key, member=member, step=step)
            store.put("val_loss", [{"suite": "s", "member": member, "size": "a", "seed": None, "step": step,
                                    "metric": "val_loss", "value": 1 / (step + 1)}],
                      key={"digest": step}, member=member, step=step)
        store.put("eval", [{"member": member, "step": None, "metric": "final", "value": float("nan")}],
                  key={"m": member}, member=member)
    # the run-level unit names a checkpoint row that a checkpoint unit holds too: "_run.json" sorts first
    store.put("eval", [{"member": "a-seed1", "step": 0, "task": "t1", "metric": "acc", "value": -1.0}], key={"run": 1})
    return store


def _snapshot(store: ResultsStore) -> tuple:
    return (store.rows(), store.to_csv(), store.rows(analysis="eval", metric="acc", member="a-seed2"),
            store.rows(analysis=["val_loss"], task=""), store.unit_keys(),
            [store.unit_key("eval", m, s) for m in ("a-seed1", "x") for s in (0, 4, None)])


def test_folded_store_reads_like_the_json_units(tmp_path):
    store = _fill(tmp_path / "r")
    before = _snapshot(store)
    assert sorted(store.compact()) == ["eval", "val_loss"]
    assert store.units() == [] and (tmp_path / "r" / "table" / "eval.parquet").is_file()
    after = _snapshot(ResultsStore(tmp_path / "r"))
    assert after == before
    from pythia.results_table import read_meta

    # eval holds a key written by two units (both kept: either may be rewritten); val_loss does not
    assert [read_meta(tmp_path / "r" / "table" / f"{a}.parquet")["unique"] for a in ("eval", "val_loss")] == \
        [False, True]
    # an independent reading of the export: csv module, every row back, quotes and all
    parsed = list(csv.DictReader(io.StringIO(after[1])))
    assert [r["task"] for r in parsed].count("multi\nline") == 3 * 5 * 2  # members x steps x metrics
    assert any(r["member"] == 'b,seed"1' for r in parsed)
    frame = store.frame(analysis="eval", metric="acc")
    assert list(frame.columns) == list(COLUMNS) and len(frame) == len(store.rows(analysis="eval", metric="acc"))


def test_a_unit_written_after_the_fold_replaces_the_tables_copy(tmp_path):
    store = _fill(tmp_path / "r")
    store.compact()
    store.put("val_loss", [{"member": "a-seed1", "step": 4, "metric": "val_loss", "value": 9.0}],
              key={"digest": "new"}, member="a-seed1", step=4)
    got = store.rows(analysis="val_loss", member="a-seed1")
    assert [r["value"] for r in got if r["step"] == 4] == [9.0] and len(got) == 5
    assert store.unit_key("val_loss", "a-seed1", 4) == {"digest": "new"}
    reference = _fill(tmp_path / "json")  # the same writes, never folded
    reference.put("val_loss", [{"member": "a-seed1", "step": 4, "metric": "val_loss", "value": 9.0}],
                  key={"digest": "new"}, member="a-seed1", step=4)
    assert store.to_csv() == reference.to_csv() and store.unit_keys() == reference.unit_keys()
    store.compact()
    assert store.to_csv() == reference.to_csv() and store.units() == []


def test_an_interrupted_fold_loses_nothing(tmp_path):
    store = _fill(tmp_path / "r")
    expected = _snapshot(store)
    # killed after claiming some units, before the table was written
    claimed = store.units("eval")[:7]
    for p in claimed:
        os.replace(p, p.with_name(p.name + ".claimed"))
    assert _snapshot(store) == expected
    # ... and a unit rewritten after its claim: the new .json wins over the claimed copy
    again = next(p for p in store.units("eval") if p.name.startswith("step") and p.name.endswith(".claimed"))
    unit, member, step = json.loads(again.read_text()), again.parent.name, int(again.name[4:].split(".")[0])
    assert store.unit_key("eval", member, step) == unit["key"]
    store.put("eval", unit["rows"], key={"re": "written"}, member=member, step=step)
    assert store.unit_key("eval", member, step) == {"re": "written"}
    store.compact()
    assert store.units() == [] and not list((tmp_path / "r").rglob("*.claimed"))
    assert store.unit_key("eval", member, step) == {"re": "written"}
    assert store.to_csv() == expected[1]  # same rows: only the key changed


def test_killed_between_table_and_cleanup(tmp_path, monkeypatch):
    store = _fill(tmp_path / "r")
    expected = _snapshot(store)
    monkeypatch.setattr(results_mod.Path, "unlink", lambda self, missing_ok=False: None)  # the cleanup never ran
    store.compact()
    monkeypatch.undo()
    assert list((tmp_path / "r").rglob("*.claimed")) and _snapshot(ResultsStore(tmp_path / "r")) == expected
    ResultsStore(tmp_path / "r").compact()
    assert _snapshot(ResultsStore(tmp_path / "r")) == expected and not list((tmp_path / "r").rglob("*.claimed"))


def test_folding_is_deterministic(tmp_path):
    a, b = _fill(tmp_path / "a"), _fill(tmp_path / "b")
    a.compact(), b.compact()
    for name in ("eval", "val_loss"):
        assert (tmp_path / "a" / "table" / f"{name}.parquet").read_bytes() == \
               (tmp_path / "b" / "table" / f"{name}.parquet").read_bytes()
    a.write_csv(), b.write_csv()
    assert (tmp_path / "a" / "results.csv").read_bytes() == (tmp_path / "b" / "results.csv").read_bytes()


def test_write_csv_folds_an_analysis_with_many_units(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "r")
    for step in range(60):  # many units in one folder
        store.put("val_loss", [{"member": "m", "step": step, "metric": "val_loss", "value": step / 7}],
                  key={"s": step}, member="m", step=step)
    store.put("weights", [{"member": "m", "step": 0, "metric": "L2", "value": 1.0}], key={}, member="m", step=0)
    text = store.to_csv()
    monkeypatch.setattr(results_mod, "COMPACT_AT", 50)
    store.write_csv()
    assert (tmp_path / "r" / "table" / "val_loss.parquet").is_file()
    assert not (tmp_path / "r" / "table" / "weights.parquet").exists()  # one unit: stays as it is
    assert (tmp_path / "r" / "results.csv").read_text() == text
    assert len(store.units("val_loss")) == 0 and len(store.units("weights")) == 1


def test_write_csv_folds_a_large_unit(tmp_path, monkeypatch):
    """A whole-run unit of many rows (the seed statistics of 50 members) is folded by its bytes."""
    store = ResultsStore(tmp_path / "r")
    store.put("seeds", [{"member": f"s{i % 5}/*", "step": i, "metric": "val_loss:median", "value": i / 3}
                        for i in range(2000)], key={"run": 1})
    store.put("weights", [{"member": "m", "step": 0, "metric": "L2", "value": 1.0}], key={}, member="m", step=0)
    text = store.to_csv()
    monkeypatch.setattr(results_mod, "COMPACT_BYTES", store.units("seeds")[0].stat().st_size)
    store.write_csv()
    assert store.folded() == ["seeds"] and store.units("seeds") == [] and len(store.units("weights")) == 1
    assert (tmp_path / "r" / "results.csv").read_text() == text
    assert store.unit_key("seeds", None, None) == {"run": 1}


def test_units_from_a_newer_version_are_refused_by_name(tmp_path):
    store = _fill(tmp_path / "r")
    path = store.units("val_loss")[0]
    unit = json.loads(path.read_text())
    path.write_text(json.dumps({**unit, "format": "pythia-results-unit/2"}))
    with pytest.raises(ValueError, match=rf"{path.name}.*another version of pythia.*Nothing was changed"):
        store.rows(analysis="val_loss")
    with pytest.warns(UserWarning, match="val_loss stay as JSON units"):
        store.compact("val_loss")
    assert path.is_file() and path.read_text().count("pythia-results-unit/2") == 1  # left as it was


def test_a_table_from_a_newer_version_is_refused_by_name(tmp_path):
    import pyarrow.parquet as pq

    store = _fill(tmp_path / "r")
    store.compact()
    path = tmp_path / "r" / "table" / "eval.parquet"
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"pythia"])
    pq.write_table(table.replace_schema_metadata({b"pythia": json.dumps({**meta, "format": "pythia-results-table/9"})}),
                   path)
    with pytest.raises(ValueError, match="eval.parquet.*pythia-results-table/9.*upgrade"):
        store.rows(analysis="eval")
    with pytest.raises(ValueError, match="eval.parquet"):
        store.unit_key("eval", "a-seed1", 0)


def test_rows_of_another_type_stay_json(tmp_path):
    store = ResultsStore(tmp_path / "r")
    store.put("odd", [{"member": "m", "step": 1, "seed": "not-a-number", "metric": "x", "value": 1.0}], key={},
              member="m", step=1)
    before = store.to_csv()
    with pytest.warns(UserWarning, match="odd stay as JSON units"):
        assert store.compact() == []
    assert store.to_csv() == before and len(store.units("odd")) == 1


def test_many_loose_units_say_how_to_fold_them(tmp_path, monkeypatch, capsys):
    """A folder of many loose units (a sweep that never exported): every query says how to fold
    them; `pythia results STORE --compact` folds them, nothing lost, and the store still opens."""
    from pythia.cli import main

    store = ResultsStore(tmp_path / "r")
    for step in range(30):
        store.put("val_loss", [{"member": "m", "step": step, "metric": "val_loss", "value": step / 7}],
                  key={"s": step}, member="m", step=step)
    text = store.to_csv()
    monkeypatch.setattr(results_mod, "LOOSE_WARN", 25)
    with pytest.warns(UserWarning, match=r"units/val_loss: 30 loose result units.*pythia results RUN --compact"):
        rows = store.rows(analysis="val_loss")
    assert main(["results", str(tmp_path / "r"), "--compact"]) == 0
    assert "folded 30 unit(s) of val_loss" in capsys.readouterr().out
    assert store.units() == [] and not any((tmp_path / "r" / "units").rglob("*.json*"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.rows(analysis="val_loss") == rows
    assert main(["results", str(tmp_path / "r")]) == 0  # a store of tables only is still a store
    assert capsys.readouterr().out == text
    assert main(["results", str(tmp_path / "r"), "--compact"]) == 0
    assert "nothing to fold" in capsys.readouterr().out


def test_csv_floats_are_written_as_repr_writes_them():
    """The export formats floats in arrow, not one `repr` per value: the same text as repr for
    values of every magnitude, integral values, round numbers, signed zeros and subnormals."""
    import numpy as np
    import pyarrow as pa

    from pythia.results_table import _float_text

    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.random(20_000), -rng.random(20_000),
        rng.random(20_000) * 10.0 ** rng.integers(-30, 30, 20_000),
        np.round(rng.random(20_000) * 10.0 ** rng.integers(0, 20, 20_000)),
        10.0 ** np.arange(-20, 25), 1.5 * 10.0 ** np.arange(-20, 25), [0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2],
        rng.standard_normal(20_000).astype(np.float32).astype(np.float64),
    ]).tolist() + [None]
    got = _float_text(pa.array(values, pa.float64())).to_pylist()
    assert got == ["" if v is None else repr(v) for v in values]


def test_rows_out_of_order_are_sorted_and_rows_in_order_kept():
    """The sort is skipped only when the rows are already in order: checked against a sort."""
    import numpy as np

    from pythia.results_table import _in_order

    rng = np.random.default_rng(1)
    for _ in range(200):
        keys = [rng.integers(0, 3, 12) for _ in range(3)]
        want = np.array_equal(np.lexsort(keys[::-1]), np.arange(12))
        assert _in_order(keys) == want
        ordered = [k[np.lexsort(keys[::-1])] for k in keys]
        assert _in_order(ordered)


def test_folding_keeps_a_fresh_export_fresh(tmp_path):
    store = _fill(tmp_path / "r")
    store.write_csv()
    assert not store.csv_stale()
    store.compact()
    assert not store.csv_stale()  # the same rows: no export to redo
    store.put("val_loss", [{"member": "m", "step": 1, "metric": "val_loss", "value": 1.0}], key={}, member="m", step=1)
    assert store.csv_stale()
    store.compact()
    assert store.csv_stale()  # a stale export stays stale


def test_a_store_of_tables_only_gets_a_report(tmp_path):
    from pythia.report.source import open_source

    store = _fill(tmp_path / "r")
    rows = store.rows()
    store.compact()
    assert not any((tmp_path / "r" / "units").rglob("*.json"))
    (tmp_path / "r" / "units").rename(tmp_path / "gone")  # no units folder at all
    src = open_source(tmp_path / "r")
    assert src.kind == "store" and src.rows == rows
