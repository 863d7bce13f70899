"""Tiny datasets and suite specs for the training tests (random tokens, no tokenizer)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pythia.data.indexed import IndexedDatasetBuilder

REPO = Path(__file__).resolve().parents[2]
VOCAB = 300  # token ids < 300 -> padded vocab 384


def build_dataset(prefix: Path, num_docs: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    builder = IndexedDatasetBuilder(str(prefix), dtype=np.uint16)
    for _ in range(num_docs):
        builder.add_document(rng.integers(2, VOCAB, size=int(rng.integers(5, 60))))
    builder.finalize()
    return str(prefix)


@pytest.fixture(scope="session")
def datasets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("data")
    return {"train": build_dataset(root / "train", 300, 0), "valid": build_dataset(root / "valid", 30, 1)}


def tiny_spec(datasets: dict, out: Path, **overrides) -> dict:
    """A 2-member-shape x 2-seed suite that trains in about a second on CPU."""
    spec = {
        "name": "tiny-suite",
        "data": {"train": datasets["train"], "valid": datasets["valid"], "seq_len": 16, "seed": 1234},
        "train": {"iters": 10, "global_batch": 8, "micro_batch": 4, "warmup_fraction": 0.1},
        "checkpoints": {"interval": 4},
        "members": [{"name": "tiny", "num_layers": 2, "hidden_size": 32, "num_heads": 4},
                    {"name": "wide", "num_layers": 1, "hidden_size": 64, "num_heads": 4}],
        "seeds": [1, 2],
        "output": str(out),
        "eval": {"samples": 8},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def run_cli(args: list[str], env_extra: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m ...` in a fresh interpreter (same threads settings for every run)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHIA_TRAIN_CRASH_AT"}
    env.update({"OMP_NUM_THREADS": "1", **(env_extra or {})})
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every training test on one intra-op thread (tests/conftest.py: one_torch_thread)."""
    yield
