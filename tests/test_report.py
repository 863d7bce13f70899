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


def make_run(root: Path, sizes=("small", "large"), seeds=(1, 2), torn_line=False) -> Path:
    run = root / "run"
    run.mkdir()
    (run / "suite.yaml").write_text(
        "name: synth\ndata:\n  seq_len: 32\ntraining:\n  global_batch: 4\n")
    for si, size in enumerate(sizes):
        for seed in seeds:
            member = run / f"{size}-seed{seed}"
            member.mkdir()
            lines = []
            for step in range(21):
                lines.append({"step": step, "loss": 6.0 - step * 0.1 - si, "lr": 1e-3})
            for step in STEPS:
                lines.append({"step": step, "val_loss": 6.5 - math.log1p(step) * (si + 1)
                              - 0.01 * seed})
            text = "\n".join(json.dumps(x) for x in lines) + "\n"
            if torn_line:
                text += '{"step": 21, "lo'
            (member / "metrics.jsonl").write_text(text)
    return run


def test_read_run_tidy_rows(tmp_path):
    run = make_run(tmp_path, torn_line=True)
    rows = report.read_run(run)
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(report.COLUMNS))}
    members = {r["member"] for r in rows}
    assert members == {"small-seed1", "small-seed2", "large-seed1", "large-seed2"}
    val = [r for r in rows if r["metric"] == "val_loss" and r["member"] == "large-seed2"]
    assert [r["step"] for r in val] == STEPS
    assert all(r["size"] == "large" and r["seed"] == 2 and r["suite"] == "synth" for r in val)
    assert [r["tokens"] for r in val] == [s * 4 * 32 for s in STEPS]
    assert report.pick_metric(rows, report.VAL_LOSS_KEYS) == "val_loss"
    assert report.pick_metric(rows, report.TRAIN_LOSS_KEYS) == "loss"


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


def test_corrupt_metrics_line_names_file_and_line(tmp_path):
    run = make_run(tmp_path, sizes=("a",), seeds=(1,))
    path = run / "a-seed1" / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines.insert(3, "{not json")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:4"):
        report.read_run(run)


def test_missing_run_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError):
        report.read_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no member"):
        report.read_run(tmp_path / "empty")
