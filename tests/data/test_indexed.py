"""The .bin/.idx format: round trip against an independent struct-based parser of the spec's
byte table, dtype rule, and clear errors for truncated or inconsistent files."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from pythia.data.indexed import DataFormatError, IndexedDataset, IndexedDatasetBuilder, best_fitting_dtype


def parse_idx(raw: bytes) -> dict:
    """Independent reader written from the spec's table (section 2)."""
    assert raw[:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack_from("<Q", raw, 9)
    (code,) = struct.unpack_from("<B", raw, 17)
    n, d = struct.unpack_from("<QQ", raw, 18)
    sizes = list(struct.unpack_from(f"<{n}i", raw, 34))
    pointers = list(struct.unpack_from(f"<{n}q", raw, 34 + 4 * n))
    doc_idx = list(struct.unpack_from(f"<{d}q", raw, 34 + 12 * n))
    assert len(raw) == 34 + 12 * n + 8 * d
    return dict(version=version, code=code, sizes=sizes, pointers=pointers, doc_idx=doc_idx)


@pytest.mark.parametrize("dtype,code", [(np.uint16, 8), (np.int32, 4)])
def test_round_trip_matches_spec_bytes(tmp_path, dtype, code):
    docs = [np.array([5, 6, 7]), np.array([0]), np.array([], dtype=np.int64), np.arange(2, 70000 if code == 4 else 300)]
    with IndexedDatasetBuilder(tmp_path / "x", dtype) as b:
        for d in docs:
            b.add_document(d)
    info = parse_idx((tmp_path / "x.idx").read_bytes())
    itemsize = np.dtype(dtype).itemsize
    assert info["version"] == 1 and info["code"] == code
    assert info["sizes"] == [len(d) for d in docs]
    assert info["pointers"] == [0, 3 * itemsize, 4 * itemsize, 4 * itemsize]
    assert info["doc_idx"] == [0, 1, 2, 3, 4]
    raw = np.frombuffer((tmp_path / "x.bin").read_bytes(), dtype=np.dtype(dtype).newbyteorder("<"))
    assert raw.tolist() == np.concatenate(docs).tolist()
    ds = IndexedDataset(tmp_path / "x")
    assert len(ds) == 4 and ds.dtype == np.dtype(dtype) and ds.sizes.dtype == np.int32
    for i, d in enumerate(docs):
        assert ds[i].tolist() == d.tolist()
    assert ds.get(3, offset=2, length=3).tolist() == [4, 5, 6]
    assert ds.doc_idx.tolist() == [0, 1, 2, 3, 4]


def test_dtype_rule():
    assert best_fitting_dtype(50277) == np.uint16
    assert best_fitting_dtype(65499) == np.uint16
    assert best_fitting_dtype(65500) == np.int32


def test_failed_build_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with IndexedDatasetBuilder(tmp_path / "x", np.uint16) as b:
            b.add_document([1, 2, 3])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="do not fit"):
        with IndexedDatasetBuilder(tmp_path / "y", np.uint16) as b:
            b.add_document([70000])
    assert list(tmp_path.iterdir()) == []


def test_truncated_idx_names_file_and_offset(make_dataset, tmp_path):
    prefix = make_dataset([10, 20, 30])
    idx = tmp_path / "ds.idx"
    raw = idx.read_bytes()
    idx.write_bytes(raw[:-5])
    with pytest.raises(DataFormatError, match=r"ds\.idx: truncated \.idx.*offset"):
        IndexedDataset(prefix)
    idx.write_bytes(raw[:20])
    with pytest.raises(DataFormatError, match=r"ds\.idx: truncated"):
        IndexedDataset(prefix)
    idx.write_bytes(b"NOTANIDX" + raw[8:])
    with pytest.raises(DataFormatError, match="bad magic"):
        IndexedDataset(prefix)


def test_bin_size_mismatch(make_dataset, tmp_path):
    prefix = make_dataset([10, 20, 30])
    with open(tmp_path / "ds.bin", "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(DataFormatError, match=r"ds\.bin: size 122 bytes disagrees with its index"):
        IndexedDataset(prefix)
    (tmp_path / "ds.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"ds\.bin"):
        IndexedDataset(prefix)


def _patch(idx, offset: int, fmt: str, value) -> None:
    raw = bytearray(idx.read_bytes())
    struct.pack_into(fmt, raw, offset, value)
    idx.write_bytes(bytes(raw))


@pytest.mark.parametrize("block", [1 << 22, 2])  # one block, and the check's block edges
def test_corrupt_sizes_and_pointers_are_refused_naming_the_item(make_dataset, tmp_path, monkeypatch, block):
    monkeypatch.setattr(IndexedDataset, "CHECK_BLOCK", block)
    prefix = make_dataset([10, 20, 30, 40, 50])  # uint16: pointers 0, 20, 60, 120, 200
    idx = tmp_path / "ds.idx"
    good = idx.read_bytes()
    n = 5
    _patch(idx, 34 + 4 * 2, "<i", -30)  # item 2: negative size
    with pytest.raises(DataFormatError, match=r"ds\.idx: item 2 has a negative size -30"):
        IndexedDataset(prefix)
    idx.write_bytes(good)
    _patch(idx, 34 + 4 * 3, "<i", 35)  # item 3 says 35 tokens; item 4 still starts at byte 120 + 80
    with pytest.raises(DataFormatError, match=r"item 4 starts at byte 200 .* item 3 \(35 tokens from byte 120\) ends at byte 190"):
        IndexedDataset(prefix)
    idx.write_bytes(good)
    _patch(idx, 34 + 4 * n + 8 * 2, "<q", 64)  # item 2's pointer moved: items would overlap
    with pytest.raises(DataFormatError, match=r"item 2 starts at byte 64 .* ends at byte 60"):
        IndexedDataset(prefix)
    idx.write_bytes(good)
    _patch(idx, 34 + 4 * n, "<q", 2)
    with pytest.raises(DataFormatError, match=r"item 0 starts at byte 2 of the \.bin, not 0"):
        IndexedDataset(prefix)
    idx.write_bytes(good)
    assert IndexedDataset(prefix)[4].size == 50


def test_non_integer_token_dtype_is_refused(make_dataset, tmp_path):
    prefix = make_dataset([3, 4])
    _patch(tmp_path / "ds.idx", 17, "<B", 6)  # float32
    with pytest.raises(DataFormatError, match=r"ds\.idx: token dtype float32 \(code 6 at offset 17\) is not an integer"):
        IndexedDataset(prefix)
