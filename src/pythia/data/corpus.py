"""Corpus readers: documents (text + source metadata) from .jsonl/.jsonl.zst/.jsonl.gz,
Parquet, and plain text files or folders (one document per file), in a fixed order.

Folder walks take only files with a known corpus suffix (JSONL, Parquet, TEXT_SUFFIXES), never
tokenize's own outputs (.bin/.idx, .meta.jsonl, .manifest.json), so tokenizing a folder twice,
or into itself, reads the same documents. A file named explicitly is read whatever its suffix;
a "text" file holding NUL bytes is binary and is refused, naming it.

Bad records raise CorpusError naming the file and line (or row); with skip_bad they are
counted in `SkipCounts` instead, so a run can report what it dropped.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterator

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.zst", ".jsonl.gz", ".json.zst", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst", ".tex", ".html", ".htm", ".xml", ".csv", ".tsv",
                 ".py", ".c", ".h", ".cc", ".cpp", ".hpp", ".java", ".js", ".ts", ".go", ".rs", ".rb", ".sh")
CORPUS_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES + TEXT_SUFFIXES
OUTPUT_SUFFIXES = (".meta.jsonl", ".manifest.json")
"""Written by `pythia data tokenize` beside PREFIX.bin/.idx: never corpus input in a folder walk."""


class CorpusError(ValueError):
    """A corpus record is unusable; the message names the file and line/row."""


@dataclasses.dataclass
class Document:
    text: str
    source: int  # index into the list of input files
    location: int  # 1-based line (jsonl), 0-based row (parquet), 0 (text file)
    meta: dict


class SkipCounts(Counter):
    """reason -> number of records skipped under skip_bad."""


def is_corpus_file(path: Path) -> bool:
    """A folder walk's filter: a known corpus suffix, not hidden, not one of tokenize's outputs."""
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(CORPUS_SUFFIXES) and not name.endswith(OUTPUT_SUFFIXES)


def expand_inputs(inputs, ignored: list[Path] | None = None) -> list[Path]:
    """Files and folders -> sorted list of files (folders are walked recursively, keeping only
    corpus files; the others are appended to `ignored` when given)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file())
            files.extend(q for q in found if is_corpus_file(q))
            if ignored is not None:
                ignored.extend(q for q in found if not is_corpus_file(q) and not q.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: corpus input not found")
    if not files:
        raise FileNotFoundError(f"no corpus files in {list(map(str, inputs))} (folders are searched for "
                                f"{', '.join(CORPUS_SUFFIXES)})")
    return files


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "text"


def _open_binary(path: Path):
    name = path.name.lower()
    if name.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _bad(msg: str, reason: str, skip_bad: bool, skipped: SkipCounts | None) -> None:
    if not skip_bad:
        raise CorpusError(msg)
    if skipped is not None:
        skipped[reason] += 1


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{where}: bytes are not UTF-8 (byte {exc.start} of the record: "
                          f"{raw[exc.start:exc.start + 4]!r})") from None


def _lines(f, path: Path) -> Iterator[bytes]:
    """Lines of a (possibly compressed) stream; a corrupt stream is a CorpusError."""
    lineno = 0
    while True:
        try:
            raw = f.readline()
        except Exception as exc:  # gzip/zstd raise their own error types
            raise CorpusError(f"{path}: cannot read past line {lineno} ({type(exc).__name__}: {exc})") from None
        if not raw:
            return
        lineno += 1
        yield raw


def _iter_jsonl(path: Path, src: int, text_field: str, skip_bad: bool, skipped) -> Iterator[Document]:
    with _open_binary(path) as f:
        offset = 0
        for lineno, raw in enumerate(_lines(f, path), start=1):
            where = f"{path}:{lineno} (byte offset {offset})"
            offset += len(raw)
            if not raw.strip():
                continue
            try:
                record = json.loads(_decode(raw, where))
            except CorpusError as exc:
                _bad(str(exc), "not utf-8", skip_bad, skipped)
                continue
            except json.JSONDecodeError as exc:
                _bad(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})",
                     "invalid json", skip_bad, skipped)
                continue
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                _bad(f"{where}: missing or non-string text field {text_field!r}",
                     "missing text field", skip_bad, skipped)
                continue
            text = record.pop(text_field)
            yield Document(text, src, lineno, record)


def _iter_parquet(path: Path, src: int, text_field: str, skip_bad: bool, skipped) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise CorpusError(f"{path}: not a readable Parquet file ({exc})") from None
    if text_field not in pf.schema_arrow.names:
        raise CorpusError(f"{path}: no column {text_field!r} (columns: {pf.schema_arrow.names})")
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            text = record.pop(text_field)
            if not isinstance(text, str):
                _bad(f"{path}: row {row}: missing or non-string text field {text_field!r}",
                     "missing text field", skip_bad, skipped)
            else:
                yield Document(text, src, row, record)
            row += 1


def _iter_text(path: Path, src: int, skip_bad: bool, skipped) -> Iterator[Document]:
    raw = path.read_bytes()
    nul = raw.find(b"\x00")
    if nul >= 0:
        _bad(f"{path}: NUL byte at offset {nul}: a binary file, not text (a corpus file is .jsonl[.zst|.gz], "
             f".parquet or plain text)", "binary (NUL bytes)", skip_bad, skipped)
        return
    try:
        text = _decode(raw, str(path))
    except CorpusError as exc:
        _bad(str(exc), "not utf-8", skip_bad, skipped)
        return
    yield Document(text, src, 0, {})


def iter_documents(inputs, text_field: str = "text", skip_bad: bool = False,
                   skipped: SkipCounts | None = None, files: list[Path] | None = None
                   ) -> Iterator[Document]:
    """All documents of all inputs, in input order (folders: sorted paths)."""
    files = files if files is not None else expand_inputs(inputs)
    for src, path in enumerate(files):
        kind = _kind(path)
        if kind == "jsonl":
            yield from _iter_jsonl(path, src, text_field, skip_bad, skipped)
        elif kind == "parquet":
            yield from _iter_parquet(path, src, text_field, skip_bad, skipped)
        else:
            yield from _iter_text(path, src, skip_bad, skipped)
