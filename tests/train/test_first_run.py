"""What a new user runs first, as written: the example spec from the repository root, the demo's
own spec, a dry run that cannot start, a cached unit whose checkpoint changed on disk, and
progress that shows when nobody watches a terminal."""
from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from pythia.cli import main

from .conftest import REPO, tiny_spec


def _small_example(text: str) -> str:
    """examples/suite.yaml with its schedule cut to 4 updates (the paths untouched)."""
    out, n = re.subn(r"(?m)^  iters: 200 ", "  iters: 4 ", text)
    out, m = re.subn(r"(?m)^  interval: 50 ", "  interval: 2 ", out)
    assert n == m == 1, "examples/suite.yaml no longer has `iters: 200` / `interval: 50`"
    return out


@pytest.fixture
def repo_root(quick_demo, tmp_path, monkeypatch):
    """A folder laid out like the repository after `make demo`: examples/suite.yaml (4 updates)
    and demo-output/ (a hard-link copy of the quick demo), the current directory."""
    out, _ = quick_demo
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "suite.yaml").write_text(_small_example((REPO / "examples" / "suite.yaml").read_text()))
    shutil.copytree(out, tmp_path / "demo-output", copy_function=os.link)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_example_spec_trains_into_runs_from_the_repository_root(repo_root, capsys):
    """README "Train your own suite": the example reads ../demo-output (relative to the spec's
    folder) and writes runs/example-suite, which `verify` and `report` then find."""
    assert main(["train", "examples/suite.yaml", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert f"# output: {repo_root / 'runs' / 'example-suite'}/" in text
    assert "# disk (computed from the shapes)" in text
    assert main(["train", "examples/suite.yaml", "--no-progress"]) == 0
    assert (repo_root / "runs" / "example-suite" / "d128-l3-seed2" / "step4" / "manifest.json").is_file()
    assert not (repo_root / "examples" / "runs").exists()
    capsys.readouterr()
    assert main(["verify", "runs/example-suite"]) == 0
    assert main(["report", "runs/example-suite", "--no-verify"]) == 0
    assert (repo_root / "runs" / "example-suite" / "report" / "index.html").is_file()


def test_the_demo_spec_is_accepted_as_written(repo_root, capsys):
    """demo-output/suite.yaml names its folders relative to itself: `pythia train` on it finds the
    trained run (nothing left to train) and its data, from anywhere."""
    spec = yaml.safe_load((repo_root / "demo-output" / "suite.yaml").read_text())
    assert spec["output"] == "run" and spec["data"]["train"] == "data/train"
    assert main(["train", "demo-output/suite.yaml", "--dry-run"]) == 0
    assert f"# output: {repo_root / 'demo-output' / 'run'}/" in capsys.readouterr().out
    assert main(["train", "demo-output/suite.yaml", "--no-progress"]) == 0
    assert f"run folder: {repo_root / 'demo-output' / 'run'}" in capsys.readouterr().out


def test_the_help_examples_name_the_folders_the_example_writes():
    from pythia.cli import build_parser

    text = build_parser().format_help()
    assert "pythia train examples/suite.yaml" in text and "pythia verify runs/example-suite" in text
    assert "d64-l2-seed1+swap" not in text  # the example has no fork: the compare example uses the demo's
    example = yaml.safe_load((REPO / "examples" / "suite.yaml").read_text())
    assert example["output"] == "../runs/example-suite"  # runs/example-suite from the repository root


def test_a_dry_run_without_data_says_why_first_exits_2_and_still_estimates_the_disk(datasets, tmp_path, capsys):
    spec = tiny_spec(datasets, tmp_path / "run", seeds=[1])
    spec["data"]["train"] = str(tmp_path / "absent")
    spec["members"] = [{**m, "vocab_size": 384} for m in spec["members"]]  # the disk needs only the shapes
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["train", str(path), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("pythia train: the run cannot start: data.train:")
    assert "absent" in captured.err
    assert "# disk (computed from the shapes)" in captured.out and "# whole run:" in captured.out
    del spec["members"][0]["vocab_size"]  # a shape sized from the (missing) dataset: names only, still 2
    path.write_text(yaml.safe_dump(spec))
    assert main(["train", str(path), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "the run cannot start" in captured.err and "tiny-seed1" in captured.out
    assert not (tmp_path / "run").exists()


def test_without_a_terminal_training_prints_plain_progress_lines(datasets, tmp_path, monkeypatch):
    from pythia.suite import train_suite
    from pythia.train import progress
    from pythia.train.spec import SuiteSpec

    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)  # a line per update instead of every 30 s
    err = io.StringIO()
    err.isatty = lambda: False  # piped
    monkeypatch.setattr("sys.stderr", err)
    train_suite(SuiteSpec.from_dict(tiny_spec(datasets, tmp_path / "run", seeds=[1], train={"iters": 4})))
    lines = [line for line in err.getvalue().splitlines() if line.startswith("suite: ")]
    assert len(lines) >= 8, err.getvalue()  # 2 members x 4 updates, and the closing line
    assert "\r" not in err.getvalue()  # no bar redrawn in place
    assert re.fullmatch(r"suite: 3/8 steps \(38%\), tiny-seed1 step 3 loss \d+\.\d{3}, [\d,]+ tokens/s, "
                        r"\d+ s elapsed, ETA \d+ s", lines[2]), lines[2]
    assert lines[-1].startswith("suite: 8/8 steps (100%), wide-seed1 step 4"), lines


def test_plain_progress_waits_its_interval():
    from pythia.train.progress import PlainProgress

    out = io.StringIO()
    bar = PlainProgress(total=100, interval=3600, stream=out)
    for _ in range(50):
        bar.update(1)
    assert out.getvalue() == ""  # nothing before the interval has passed
    bar.close()
    assert out.getvalue().startswith("train: 50/100 steps (50%)")
