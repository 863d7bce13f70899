"""The top-level command line: --version, and help texts that agree with the README."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import pythia
from pythia.cli import build_parser, main
from pythia.cli import demo as cli_demo

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"pythia {pythia.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", pythia.__version__)


def test_demo_durations_in_help_match_readme():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    demo_help = sub.choices["demo"].format_help()
    for duration in (cli_demo.FULL_DURATION, cli_demo.QUICK_DURATION):
        assert duration in " ".join(demo_help.split())
        assert duration in " ".join(README.split())
    assert "about 5 minutes" not in demo_help and "about a minute" not in demo_help
