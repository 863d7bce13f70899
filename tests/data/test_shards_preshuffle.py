"""Shards (Hub names, sha256 manifest, corrupted-shard detection, streaming rejoin) and the
preshuffled export (item k = training position k)."""
from __future__ import annotations

import numpy as np
import pytest

from pythia.data.order import PreshuffledOrder, TrainingOrder
from pythia.data.preshuffle import export_preshuffled
from pythia.data.shards import ShardError, shard, shard_name, unshard, verify


def test_shard_names():
    assert shard_name("document", 0, 20) == "document-00000-of-00019.bin"
    assert shard_name("document", 19, 20) == "document-00019-of-00019.bin"


def test_shards_round_trip_and_corruption(make_dataset, tmp_path):
    prefix = make_dataset(np.random.default_rng(0).integers(1, 500, 60), name="document")
    m = shard(prefix + ".bin", tmp_path / "sh", 7, progress=False)
    names = sorted(p.name for p in (tmp_path / "sh").iterdir())
    assert names[:7] == [shard_name("document", i, 7) for i in range(7)]
    assert all(e["bytes"] % 2 == 0 for e in m["shards"])
    assert verify(tmp_path / "sh")["sha256"] == m["sha256"]
    out = unshard(tmp_path / "sh", tmp_path / "joined" / "document", progress=False)
    assert out.read_bytes() == (tmp_path / "document.bin").read_bytes()
    assert (tmp_path / "joined" / "document.idx").read_bytes() == (tmp_path / "document.idx").read_bytes()
    bad = tmp_path / "sh" / shard_name("document", 3, 7)
    raw = bytearray(bad.read_bytes())
    raw[5] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match="document-00003-of-00006.bin: sha256 mismatch"):
        verify(tmp_path / "sh")
    with pytest.raises(ShardError, match="document-00003-of-00006.bin"):
        unshard(tmp_path / "sh", tmp_path / "again" / "document", progress=False)
    assert not (tmp_path / "again" / "document.bin").exists()
    bad.unlink()
    with pytest.raises(ShardError, match="document-00003-of-00006.bin: shard missing"):
        verify(tmp_path / "sh")


def test_preshuffled_export_matches_order(make_dataset, tmp_path):
    prefix = make_dataset(np.random.default_rng(1).integers(1, 100, 50))
    order = TrainingOrder.build(prefix, 16, 1234, 200, progress=False)
    export_preshuffled(order, tmp_path / "pre" / "document", num_positions=96, chunk_rows=10, progress=False)
    pre = PreshuffledOrder(tmp_path / "pre" / "document")
    assert pre.num_positions == 96 and pre.seq_len == 16
    for step in range(96 // 8):
        assert pre.batch(step, 8).tolist() == order.batch(step, 8).tolist()
    assert pre.sample(95).tolist() == order.sample(95).tolist()
    raw = np.fromfile(tmp_path / "pre" / "document.bin", dtype=np.uint16).reshape(-1, 17)
    assert raw[40].tolist() == order.sample(40).tolist()  # bytes [2*17*k, 2*17*(k+1)) are row k
    with pytest.raises(IndexError):
        pre.batch(12, 8)
    with pytest.raises(ValueError, match="not preshuffled"):
        PreshuffledOrder(prefix)


def test_unshard_checks_the_index_hash(make_dataset, tmp_path):
    prefix = make_dataset(np.random.default_rng(1).integers(1, 500, 20), name="document")
    shard(prefix + ".bin", tmp_path / "sh", 3, progress=False)
    idx = next(p for p in (tmp_path / "sh").iterdir() if p.suffix == ".idx")
    raw = bytearray(idx.read_bytes())
    raw[-1] ^= 0xFF
    idx.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match="sha256 mismatch"):
        unshard(tmp_path / "sh", tmp_path / "joined" / "document", progress=False)
    assert not (tmp_path / "joined" / "document.idx").exists()
