"""GPT-NeoX "mmap" indexed dataset: PREFIX.bin (tokens) + PREFIX.idx (index), read and write.

Byte layout of PREFIX.idx (version 1, little-endian), as GPT-NeoX v1.0's
megatron/data/indexed_dataset.py (MMapIndexedDataset) writes it:

    offset      size  content
    0           9     magic b"MMIDIDX\\x00\\x00"
    9           8     version, uint64 = 1
    17          1     dtype code, uint8 (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64,
                      6 float32, 7 float64, 8 uint16)
    18          8     N = number of items, uint64
    26          8     D = number of doc_idx entries, uint64
    34          4N    sizes: int32 tokens per item
    34+4N       8N    pointers: int64 byte offset of each item in .bin
    34+12N      8D    doc_idx: int64 first item of each document, from 0, last entry N

PREFIX.bin is the items' tokens back to back, no header. We write one item per document
(as tools/preprocess_data.py does), so doc_idx = [0, 1, ..., N].
"""
from __future__ import annotations

import contextlib
import os
import struct
from array import array
from pathlib import Path

import numpy as np

from ..io import atomic_path

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_SIZE = 34
DTYPE_CODES = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32,
    5: np.int64, 6: np.float32, 7: np.float64, 8: np.uint16,
}
CODE_OF_DTYPE = {np.dtype(v): k for k, v in DTYPE_CODES.items()}


class DataFormatError(ValueError):
    """A .bin/.idx (or cached index) file is malformed; the message names the file."""


def best_fitting_dtype(vocab_size: int | None) -> np.dtype:
    """GPT-NeoX make_builder's rule: uint16 below 65,500 tokens of vocab, else int32."""
    if vocab_size is not None and vocab_size < 65500:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def _paths(prefix: str | os.PathLike) -> tuple[Path, Path]:
    prefix = str(prefix)
    for ext in (".bin", ".idx"):
        if prefix.endswith(ext):
            prefix = prefix[: -len(ext)]
    return Path(prefix + ".bin"), Path(prefix + ".idx")


def strip_prefix(prefix: str | os.PathLike) -> str:
    """PREFIX given as PREFIX, PREFIX.bin or PREFIX.idx -> PREFIX."""
    return str(_paths(prefix)[0])[:-4]


class IndexedDataset:
    """Memory-mapped reader of PREFIX.bin/.idx; `ds[i]` is item i's tokens (a view)."""

    CHECK_BLOCK = 1 << 22
    """Items per block of the open-time sizes/pointers check (bounds its temporary memory)."""

    def __init__(self, prefix: str | os.PathLike):
        self.bin_path, self.idx_path = _paths(prefix)
        self.prefix = str(self.bin_path)[:-4]
        for p in (self.idx_path, self.bin_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such file (dataset prefix {self.prefix})")
        self._read_index()
        self._open_bin()

    def _read_index(self) -> None:
        path = self.idx_path
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
        if len(head) < 9 or head[:8] != MAGIC[:8]:
            raise DataFormatError(f"{path}: not a GPT-NeoX mmap index (bad magic at offset 0)")
        if len(head) < HEADER_SIZE:
            raise DataFormatError(
                f"{path}: truncated .idx: header needs {HEADER_SIZE} bytes, file has {size}")
        (version,) = struct.unpack("<Q", head[9:17])
        if version != VERSION:
            raise DataFormatError(f"{path}: unsupported .idx version {version} at offset 9")
        code = head[17]
        if code not in DTYPE_CODES:
            raise DataFormatError(f"{path}: unknown dtype code {code} at offset 17")
        n, d = struct.unpack("<QQ", head[18:34])
        expected = HEADER_SIZE + 12 * n + 8 * d
        if size != expected:
            kind = "truncated" if size < expected else "oversized"
            raise DataFormatError(
                f"{path}: {kind} .idx: header says {n} items and {d} doc_idx entries, so "
                f"{expected} bytes, but the file has {size} (first missing byte at offset "
                f"{min(size, expected)})")
        self.dtype = np.dtype(DTYPE_CODES[code])
        if self.dtype.kind not in "iu":
            raise DataFormatError(f"{path}: token dtype {self.dtype} (code {code} at offset 17) is not an integer "
                                  "type; token ids are stored as uint16 or int32 (GPT-NeoX's best_fitting_dtype)")
        self._n, self._d = n, d
        if size > HEADER_SIZE:
            mm = np.memmap(path, dtype=np.uint8, mode="r")
            self.sizes = np.frombuffer(mm, np.int32, n, HEADER_SIZE)
            self.pointers = np.frombuffer(mm, np.int64, n, HEADER_SIZE + 4 * n)
            self.doc_idx = np.frombuffer(mm, np.int64, d, HEADER_SIZE + 12 * n)
        else:
            self.sizes = np.zeros(0, np.int32)
            self.pointers = np.zeros(0, np.int64)
            self.doc_idx = np.zeros(0, np.int64)
        self._check_sizes_and_pointers()

    def _check_sizes_and_pointers(self) -> None:
        """Item i must start where item i-1 ends: pointers[0] = 0, pointers[i+1] = pointers[i] +
        sizes[i] x itemsize, sizes >= 0 (what GPT-NeoX's builder writes). A corrupt index would
        otherwise silently reorder or overlap items. Vectorised in blocks read with plain file
        reads into reused buffers: bounded memory (touching the memmap instead would keep the
        Pile's 2.5 GB of sizes and pointers resident in this process), about a second per 100M
        items."""
        n, itemsize, path, block = self._n, self.dtype.itemsize, self.idx_path, self.CHECK_BLOCK
        if not n:
            return
        if self.pointers[0] != 0:
            raise DataFormatError(f"{path}: item 0 starts at byte {int(self.pointers[0])} of the .bin, not 0")
        size_buf = np.empty(min(block, n), "<i4")
        ptr_buf = np.empty(min(block, n), "<i8")
        with open(path, "rb") as fs, open(path, "rb") as fp:
            fs.seek(HEADER_SIZE)
            fp.seek(HEADER_SIZE + 4 * n)
            prev_end = 0  # where item `start` must begin
            for start in range(0, n, block):
                end = min(start + block, n)
                sizes, ptrs = size_buf[:end - start], ptr_buf[:end - start]
                if fs.readinto(memoryview(sizes).cast("B")) != sizes.nbytes or \
                        fp.readinto(memoryview(ptrs).cast("B")) != ptrs.nbytes:
                    raise DataFormatError(f"{path}: sizes or pointers end early near item {start}")
                negative = np.flatnonzero(sizes < 0)
                if negative.size:
                    i = start + int(negative[0])
                    raise DataFormatError(f"{path}: item {i} has a negative size {int(sizes[i - start])} "
                                          f"(sizes start at offset {HEADER_SIZE}; this one at {HEADER_SIZE + 4 * i})")
                ends = ptrs + sizes.astype(np.int64) * itemsize  # where each item of the block ends
                wrong = np.flatnonzero(ptrs[1:] != ends[:-1])
                if ptrs[0] != prev_end:
                    wrong = np.concatenate([[-1], wrong])
                if wrong.size:
                    i = start + int(wrong[0]) + 1
                    raise DataFormatError(
                        f"{path}: item {i} starts at byte {int(self.pointers[i])} of the .bin, but item {i - 1} "
                        f"({int(self.sizes[i - 1])} tokens from byte {int(self.pointers[i - 1])}) ends at byte "
                        f"{int(self.pointers[i - 1]) + int(self.sizes[i - 1]) * itemsize}: sizes and pointers disagree")
                prev_end = int(ends[-1])

    def _open_bin(self) -> None:
        itemsize = self.dtype.itemsize
        expected = int(self.pointers[-1]) + int(self.sizes[-1]) * itemsize if self._n else 0
        actual = self.bin_path.stat().st_size
        if actual != expected:
            raise DataFormatError(
                f"{self.bin_path}: size {actual} bytes disagrees with its index {self.idx_path} "
                f"({self._n} items need {expected} bytes; mismatch from byte offset "
                f"{min(actual, expected)})")
        if actual == 0:
            self.tokens = np.zeros(0, self.dtype)
        else:
            # A plain ndarray view of the map: slicing np.memmap objects is several times slower.
            self.tokens = np.memmap(self.bin_path, dtype=self.dtype, mode="r").view(np.ndarray)

    def __len__(self) -> int:
        return int(self._n)

    def iter_sizes(self, block: int = 1 << 20):
        """The sizes array read from the .idx file in order, `block` items at a time, into one
        reused buffer (each yielded view is valid until the next).

        For passes over all sizes (order build, fingerprint): a plain sequential read costs no
        page-table entries, where the memmap (`self.sizes`) maps and keeps 4 bytes per item."""
        buf = np.empty(min(block, max(self._n, 1)), dtype="<i4")
        with open(self.idx_path, "rb") as f:  # buffered readinto fills the view unless at EOF
            f.seek(HEADER_SIZE)
            for a in range(0, self._n, buf.size):
                view = buf[:min(buf.size, self._n - a)]
                got = f.readinto(memoryview(view).cast("B"))
                if got != view.nbytes:
                    raise DataFormatError(f"{self.idx_path}: sizes end early at offset {HEADER_SIZE + 4 * a + got}")
                yield view

    def token_offset(self, items) -> np.ndarray:
        """Token (not byte) offset of items in .bin; computed on demand, as the Pile's
        pointers alone are 1.7 GB."""
        return self.pointers[items] // self.dtype.itemsize

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens [offset, offset+length) of item i (to its end when length is None)."""
        i = int(i)
        if not -self._n <= i < self._n:
            raise IndexError(f"item {i} out of range for {self.prefix} ({self._n} items)")
        i %= max(self._n, 1)
        size = int(self.sizes[i])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(f"tokens [{offset}, {offset + length}) outside item {i} (size {size})")
        start = int(self.pointers[i]) // self.dtype.itemsize + offset
        return self.tokens[start:start + length]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.get(j) for j in range(*i.indices(len(self)))]
        return self.get(i)

    def __iter__(self):
        for i in range(len(self)):
            yield self.get(i)


class IndexedDatasetBuilder:
    """Streams documents into PREFIX.bin/.idx; nothing appears under the final names until
    finalize() succeeds (abort() or an exception inside `with` leaves nothing behind)."""

    def __init__(self, prefix: str | os.PathLike, dtype=np.uint16):
        self.bin_path, self.idx_path = _paths(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_OF_DTYPE:
            raise ValueError(f"dtype {self.dtype} has no GPT-NeoX code")
        self._stack = contextlib.ExitStack()
        # Entered idx first so that on success .bin is renamed first (contexts exit LIFO).
        self._tmp_idx = self._stack.enter_context(atomic_path(self.idx_path))
        self._tmp_bin = self._stack.enter_context(atomic_path(self.bin_path))
        self._file = open(self._tmp_bin, "wb")
        self._sizes = array("i")
        self.num_tokens = 0
        self._done = False

    def add_document(self, tokens) -> None:
        """Append one document as one item."""
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise ValueError(f"a document must be 1-D tokens, got shape {arr.shape}")
        self._check_range(arr)
        self._file.write(arr.astype(self.dtype, copy=False).tobytes())
        self._sizes.append(arr.shape[0])
        self.num_tokens += arr.shape[0]

    def add_rows(self, rows: np.ndarray) -> None:
        """Append each row of a (R, L) array as one item/document (preshuffled export)."""
        rows = np.asarray(rows)
        if rows.ndim != 2:
            raise ValueError(f"rows must be 2-D, got shape {rows.shape}")
        self._check_range(rows)
        self._file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self._sizes.extend([rows.shape[1]] * rows.shape[0])
        self.num_tokens += rows.size

    def _check_range(self, arr: np.ndarray) -> None:
        if arr.size and np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            lo, hi = int(arr.min()), int(arr.max())
            if lo < info.min or hi > info.max:
                raise ValueError(f"token ids [{lo}, {hi}] do not fit {self.dtype}")

    def finalize(self) -> None:
        self._file.close()
        sizes = np.frombuffer(self._sizes, dtype=np.int32) if len(self._sizes) else np.zeros(0, np.int32)
        n = sizes.shape[0]
        pointers = np.zeros(n, np.int64)
        if n > 1:
            np.cumsum(sizes[:-1], dtype=np.int64, out=pointers[1:])
        pointers *= self.dtype.itemsize
        doc_idx = np.arange(n + 1, dtype=np.int64)
        with open(self._tmp_idx, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<Q", VERSION))
            f.write(struct.pack("<B", CODE_OF_DTYPE[self.dtype]))
            f.write(struct.pack("<QQ", n, doc_idx.shape[0]))
            f.write(sizes.astype("<i4").tobytes())
            f.write(pointers.astype("<i8").tobytes())
            f.write(doc_idx.astype("<i8").tobytes())
        self._done = True
        self._stack.close()  # renames .bin then .idx onto their final names

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        if not self._done:
            self._done = True
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "IndexedDatasetBuilder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.finalize()


def validation_windows(prefix: str, seq_len: int, num_samples: int) -> np.ndarray:
    """The first `num_samples` (S+1)-token windows of the validation set in file order.

    Documents are concatenated as stored (no shuffle) and cut GPT-NeoX style: window j is
    stream[j*S : j*S + S + 1], so neighbours share one token. Fixed for the whole suite.
    """
    ds = IndexedDataset(prefix)
    need, got, chunks = num_samples * seq_len + 1, 0, []
    for i in range(len(ds)):
        doc = np.asarray(ds[i], dtype=np.int64)
        chunks.append(doc)
        got += len(doc)
        if got >= need:
            break
    stream = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    k = min(num_samples, (len(stream) - 1) // seq_len)
    if k <= 0:
        raise ValueError(f"validation set {prefix} has {len(stream)} tokens; needs at least seq_len + 1 = {seq_len + 1}")
    return np.stack([stream[j * seq_len: j * seq_len + seq_len + 1] for j in range(k)])  # (k, S+1)
