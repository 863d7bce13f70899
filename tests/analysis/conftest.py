"""Fixtures of the analysis tests."""
from __future__ import annotations

import shutil

import pytest


@pytest.fixture()
def demo_copy(quick_demo, tmp_path):
    """A private copy of the quick demo (tests here write results)."""
    out, _ = quick_demo
    dst = tmp_path / "demo"
    shutil.copytree(out, dst)
    return dst
