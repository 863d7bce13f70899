"""Corpus -> GPT-NeoX dataset: tokenize documents in parallel (bounded memory, input order
kept), append the end-of-document id, write PREFIX.bin/.idx, a per-document metadata
sidecar (PREFIX.meta.jsonl + PREFIX.meta.offsets.npy) and PREFIX.manifest.json.

The sidecar line of document i is {"source": input index, "location": line/row, "fields": {...}}
(all record fields except the text, e.g. the Pile's meta.pile_set_name), so provenance
queries can name where a trained-on token came from.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import warnings
from array import array
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io import atomic_path, sha256_file, write_json_atomic
from .corpus import CorpusError, SkipCounts, expand_inputs, iter_documents
from .indexed import DataFormatError, IndexedDataset, IndexedDatasetBuilder, best_fitting_dtype, strip_prefix
from .tokenizer import load_tokenizer, tokenizer_info

MANIFEST_FORMAT = "pythia-tokenized-dataset/1"

_worker_tok = None


def _init_worker(tokenizer_path: str) -> None:
    global _worker_tok
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process = one core
    _worker_tok = load_tokenizer(tokenizer_path)


def _encode(tok, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """texts -> (all ids concatenated (T,) int64, lengths (n,) int64), without EOD."""
    encs = tok.encode_batch(texts)
    lengths = np.fromiter((len(e.ids) for e in encs), np.int64, len(encs))
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), np.int64, int(lengths.sum()))
    return ids, lengths


def _encode_in_worker(texts: list[str]):
    return _encode(_worker_tok, texts)


def _chunks(docs, chunk_docs: int):
    chunk = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == chunk_docs:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _encoded_chunks(docs, tokenizer_path: str, workers: int, chunk_docs: int):
    """Yield (chunk of Documents, ids, lengths) in input order; at most 4 x workers chunks
    are in flight, so memory stays bounded whatever the corpus size."""
    chunks = _chunks(docs, chunk_docs)
    if workers <= 1:
        tok = load_tokenizer(tokenizer_path)
        for chunk in chunks:
            yield (chunk, *_encode(tok, [d.text for d in chunk]))
        return
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer_path,)) as pool:
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            pending.append((chunk, pool.apply_async(_encode_in_worker, ([d.text for d in chunk],))))
            if len(pending) >= 4 * workers:
                c, res = pending.popleft()
                yield (c, *res.get())
        while pending:
            c, res = pending.popleft()
            yield (c, *res.get())


def tokenize_corpus(inputs, tokenizer_path, out_prefix, text_field: str = "text",
                    workers: int | None = None, skip_bad: bool = False, progress: bool = True,
                    chunk_docs: int = 256) -> dict:
    """Tokenize every document of `inputs` (+ EOD) into out_prefix.bin/.idx; returns the
    manifest (also written to out_prefix.manifest.json). Outputs appear only when complete.

    workers None/1: one process, tokenizers' encode_batch spreads each chunk over all cores
    (Rust threads; the fastest choice on small machines). workers > 1: that many
    single-threaded processes. Both give byte-identical output."""
    out_prefix = strip_prefix(out_prefix)
    ignored: list[Path] = []
    files = expand_inputs(inputs, ignored)
    tok_info = tokenizer_info(tokenizer_path)
    eod = tok_info["eod_id"]
    dtype = best_fitting_dtype(tok_info["vocab_size"])
    workers = 1 if workers is None else int(workers)
    skipped = SkipCounts()
    docs = iter_documents(files, text_field=text_field, skip_bad=skip_bad, skipped=skipped, files=files)
    meta_path = Path(out_prefix + ".meta.jsonl")
    offsets_path = Path(out_prefix + ".meta.offsets.npy")
    offsets = array("q")
    n_docs = 0
    bar = tqdm(desc=f"tokenize {Path(out_prefix).name}", unit="doc",
               disable=not progress or None, dynamic_ncols=True)
    with contextlib.ExitStack() as stack:
        builder = stack.enter_context(IndexedDatasetBuilder(out_prefix, dtype))
        tmp_offsets = stack.enter_context(atomic_path(offsets_path))
        tmp_meta = stack.enter_context(atomic_path(meta_path))
        meta_file = stack.enter_context(open(tmp_meta, "w", encoding="utf-8"))
        pos = 0
        for chunk, ids, lengths in _encoded_chunks(docs, str(tokenizer_path), workers, chunk_docs):
            starts = np.concatenate([[0], np.cumsum(lengths)])
            for i, doc in enumerate(chunk):
                if lengths[i] == 0:
                    where = f"{files[doc.source]}:{doc.location}"
                    if not skip_bad:
                        raise CorpusError(f"{where}: empty document (no tokens)")
                    skipped["empty document"] += 1
                    continue
                tokens = np.empty(lengths[i] + 1, np.int64)
                tokens[:-1] = ids[starts[i]:starts[i + 1]]
                tokens[-1] = eod
                builder.add_document(tokens)
                line = json.dumps({"source": doc.source, "location": doc.location, "fields": doc.meta},
                                  ensure_ascii=False, sort_keys=True) + "\n"
                offsets.append(pos)
                meta_file.write(line)
                pos += len(line.encode("utf-8"))
                n_docs += 1
            bar.update(len(chunk))
        bar.close()
        meta_file.close()
        offsets.append(pos)
        with open(tmp_offsets, "wb") as f:  # a file object: np.save(path) would append ".npy"
            np.save(f, np.frombuffer(offsets, np.int64), allow_pickle=False)
        num_tokens = builder.num_tokens
    # ExitStack closed without error: meta, offsets, .idx, .bin are now under final names.
    manifest = {
        "format": MANIFEST_FORMAT,
        "prefix": Path(out_prefix).name,
        "bin": {"file": Path(out_prefix + ".bin").name, "sha256": sha256_file(out_prefix + ".bin")},
        "idx": {"file": Path(out_prefix + ".idx").name, "sha256": sha256_file(out_prefix + ".idx")},
        "metadata": {"file": meta_path.name, "sha256": sha256_file(meta_path)},
        "dtype": dtype.name,
        "documents": n_docs,
        "tokens": int(num_tokens),
        "append_eod": True,
        "text_field": text_field,
        "tokenizer": {k: tok_info[k] for k in ("sha256", "vocab_size", "padded_vocab_size", "eod_id")}
        | {"file": Path(tok_info["path"]).name, "path": str(Path(tok_info["path"]).resolve())},
        "inputs": [{"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files],
        "skipped": dict(sorted(skipped.items())),
        "ignored_in_folders": {"files": len(ignored), "examples": [str(p) for p in ignored[:5]]},
    }
    write_json_atomic(manifest_path(out_prefix), manifest)
    return manifest


def manifest_path(prefix) -> Path:
    return Path(strip_prefix(prefix) + ".manifest.json")


def read_manifest(prefix) -> dict | None:
    """The manifest tokenize_corpus wrote beside PREFIX.bin/.idx, or None (e.g. GPT-NeoX files)."""
    path = manifest_path(prefix)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from exc


def dataset_tokenizer(prefix) -> Path | None:
    """The tokenizer.json a dataset was tokenized with, when it is still there and unchanged."""
    info = (read_manifest(prefix) or {}).get("tokenizer") or {}
    path = Path(info["path"]) if info.get("path") else None
    if path is None or not path.is_file():
        return None
    if info.get("sha256") and sha256_file(path) != info["sha256"]:
        warnings.warn(f"{path} changed since {manifest_path(prefix)} was written; not using it", stacklevel=2)
        return None
    return path


def dataset_vocab(prefix) -> int:
    """Token ids a dataset's vocabulary needs: its manifest tokenizer's vocab_size when recorded,
    else the largest id in the .bin + 1 (one pass over the tokens)."""
    tok = (read_manifest(prefix) or {}).get("tokenizer") or {}
    if isinstance(tok.get("vocab_size"), int) and tok["vocab_size"] > 0:
        return tok["vocab_size"]
    tokens = IndexedDataset(prefix).tokens
    return (int(tokens.max()) if tokens.size else 0) + 1


class DocumentMetadata:
    """Random access to the PREFIX.meta.jsonl sidecar: `meta[i]` -> dict or None if absent."""

    def __init__(self, prefix):
        prefix = strip_prefix(prefix)
        self.path = Path(prefix + ".meta.jsonl")
        offsets_path = Path(prefix + ".meta.offsets.npy")
        self.available = self.path.is_file() and offsets_path.is_file()
        self.offsets = np.load(offsets_path, mmap_mode="r") if self.available else None
        self.inputs = [i["path"] for i in (read_manifest(prefix) or {}).get("inputs", [])]

    def __getitem__(self, doc: int) -> dict | None:
        if not self.available or not 0 <= doc < len(self.offsets) - 1:
            return None
        with open(self.path, "rb") as f:
            f.seek(int(self.offsets[doc]))
            rec = json.loads(f.read(int(self.offsets[doc + 1] - self.offsets[doc])))
        if 0 <= rec.get("source", -1) < len(self.inputs):
            rec["file"] = self.inputs[rec["source"]]
        return rec
