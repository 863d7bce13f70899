"""Shared test fixtures: real reference files kept in tests/fixtures/ (see its README for their
source and licence). Nothing outside the repository is read, so a fresh clone tests on its own."""
from __future__ import annotations

import contextlib
import io
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


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """One `pythia demo --quick` run shared by every test that studies a small suite:
    (output root, what the command printed). Tests must not modify it."""
    from pythia.cli import main

    out = tmp_path_factory.mktemp("demo") / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["demo", "--quick", "--out", str(out), "--no-progress"])
    assert rc == 0, buf.getvalue()
    return out, buf.getvalue()


@pytest.fixture(scope="session")
def quick_hub(quick_demo, tmp_path_factory):
    """The quick demo's first member laid out as a Hugging Face Hub cache (revisions stepN),
    the way real Pythia checkpoints sit on disk: (cache folder, repo id). Point HF_HUB_CACHE
    at the folder (monkeypatch.setenv) to open it with open_run(repo_id)."""
    from tests.hub_cache import hub_cache_from_member

    out, _ = quick_demo
    member = sorted(p for p in (out / "run").iterdir() if (p / "step0").is_dir())[0]
    cache = tmp_path_factory.mktemp("hub")
    return cache, hub_cache_from_member(cache, member, "EleutherAI/pythia-quick-test")


@pytest.fixture
def one_torch_thread():
    """Tiny models run faster on one intra-op thread, and far faster on a shared, busy 2-core
    machine than on two contended ones (tests that need it: usefixtures("one_torch_thread"))."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
