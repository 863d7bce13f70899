"""pythia.report on synthetic run folders laid out like the trainer's."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from pythia import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = [0, 1, 2, 4, 8, 16, 20]


def make_run(root: Path, sizes=("small", "large"), seeds=(1, 2)) -> Path:
    """A run folder whose results table holds synthetic losses (the report reads only that)."""
    from pythia.results import ResultsStore

    run = root / "run"
    run.mkdir()
    members = [{"name": size, "num_layers": 1, "hidden_size": 32, "num_heads": 4} for size in sizes]
    spec = {"name": "synth", "data": {"train": "unused", "seq_len": 32},
            "train": {"iters": 20, "global_batch": 4}, "checkpoints": {"interval": 10},
            "members": members, "seeds": list(seeds), "output": str(run)}
    (run / "suite.yaml").write_text(json.dumps(spec))  # JSON is YAML
    store = ResultsStore(run / "results")
    for si, size in enumerate(sizes):
        for seed in seeds:
            member = f"{size}-seed{seed}"
            (run / member).mkdir()
            common = {"suite": "synth", "member": member, "size": size, "seed": seed}
            for step in STEPS:
                store.put("val_loss", [{**common, "step": step, "tokens": step * 4 * 32, "metric": "val_loss",
                                        "value": 6.5 - math.log1p(step) * (si + 1) - 0.01 * seed}],
                          key={}, member=member, step=step)
            store.put("train_loss", [{**common, "step": step, "metric": "train_loss", "value": 6.0 - step * 0.1 - si}
                                     for step in range(1, 21)], key={}, member=member)
    return run


def test_read_run_tidy_rows(tmp_path):
    run = make_run(tmp_path)
    rows = report.read_run(run)
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(report.COLUMNS))}
    members = {r["member"] for r in rows}
    assert members == {"small-seed1", "small-seed2", "large-seed1", "large-seed2"}
    val = [r for r in rows if r["metric"] == "val_loss" and r["member"] == "large-seed2"]
    assert [r["step"] for r in val] == STEPS
    assert all(r["size"] == "large" and r["seed"] == 2 and r["suite"] == "synth" for r in val)
    assert [r["tokens"] for r in val] == [s * 4 * 32 for s in STEPS]
    assert report.pick_metric(rows, "val_loss") == "val_loss"
    assert report.pick_metric(rows, "loss") is None
    only = report.read_run(run / "small-seed1")  # a member folder: that member's rows
    assert {r["member"] for r in only} == {"small-seed1"}


def test_build_report_writes_csv_plot_summary(tmp_path):
    run = make_run(tmp_path)
    rep = report.build_report(run, tmp_path / "out")
    with open(rep.table, newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == report.COLUMNS
    grid = {(r["member"], int(r["step"])) for r in table if r["metric"] == "val_loss"}
    assert grid == {(f"{s}-seed{d}", st) for s in ("small", "large") for d in (1, 2)
                    for st in STEPS}
    data = rep.plot.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    assert [s["size"] for s in rep.summary] == ["large", "small"]
    small = next(s for s in rep.summary if s["size"] == "small")
    assert small["step"] == 20 and small["seeds"] == 2
    assert small["min"] < small["mean"] < small["max"]
    assert "small" in rep.summary_text.read_text()


def test_corrupt_results_unit_names_file(tmp_path):
    run = make_run(tmp_path, sizes=("a",), seeds=(1,))
    unit = run / "results" / "units" / "val_loss" / "a-seed1" / "step4.json"
    unit.write_text("{not json")
    with pytest.raises(ValueError, match=r"step4\.json"):
        report.read_run(run)

def test_missing_run_is_clear(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        report.read_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a run"):
        report.read_run(tmp_path / "empty")
