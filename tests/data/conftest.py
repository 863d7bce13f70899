"""Fixtures for the data tests: synthetic token datasets and a tiny trained tokenizer."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pythia.data.indexed import IndexedDatasetBuilder

WORDS = ("the cat sat on a mat while dogs ran far away into green hills under blue skies "
         "and people talked about tokens models data order steps seeds").split()


def write_dataset(prefix, sizes, seed: int = 0, dtype=np.uint16, vocab: int = 1000) -> str:
    """A dataset whose item i has sizes[i] random tokens (ids 2..vocab-1)."""
    rng = np.random.default_rng(seed)
    with IndexedDatasetBuilder(prefix, dtype) as b:
        for n in sizes:
            b.add_document(rng.integers(2, vocab, int(n)))
    return str(prefix)


def random_text(rng, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, n_words))


def write_jsonl(path, n_docs: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = [random_text(rng, int(rng.integers(3, 60))) for _ in range(n_docs)]
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"text": t, "meta": {"pile_set_name": ["Wiki", "Books"][i % 2]}}) + "\n")
    return texts


@pytest.fixture
def make_dataset(tmp_path):
    def make(sizes, name="ds", **kw):
        return write_dataset(tmp_path / name, sizes, **kw)
    return make


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A 300-token byte-level BPE trained on synthetic text (GPT-NeoX conventions)."""
    from pythia.data.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer([random_text(rng, 50) for _ in range(200)], 300, path)
    return path
