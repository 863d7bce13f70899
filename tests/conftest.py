"""Shared test fixtures: real reference files kept in tests/fixtures/ (see its README for their
source and licence). Nothing outside the repository is read, so a fresh clone tests on its own."""
from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def gpt_neox_20b_tokenizer(fixtures_dir: Path) -> Path:
    """The GPT-NeoX-20B tokenizer.json of every Pythia model."""
    return fixtures_dir / "20B_tokenizer.json"
