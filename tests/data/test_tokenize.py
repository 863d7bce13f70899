"""Tokenizers and corpus -> dataset: GPT-NeoX conventions, every input format, manifest and
metadata sidecar, determinism (two runs, parallel vs single process) and bad input."""
from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pythia.config import padded_vocab_size
from pythia.data.corpus import CorpusError
from pythia.data.indexed import IndexedDataset
from pythia.data.tokenize import DocumentMetadata, tokenize_corpus
from pythia.data.tokenizer import load_tokenizer, train_tokenizer

from .conftest import write_jsonl


def test_20b_tokenizer_ids(gpt_neox_20b_tokenizer):
    tok = load_tokenizer(gpt_neox_20b_tokenizer)
    assert tok.encode("Hello, I am").ids == [12092, 13, 309, 717]
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|padding|>") == 1
    assert padded_vocab_size(tok.get_vocab_size()) == 50304


def test_train_tokenizer_conventions(tiny_tokenizer, tmp_path):
    tok = load_tokenizer(tiny_tokenizer)
    assert tok.get_vocab_size() <= 300
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|padding|>") == 1
    assert tok.decode(tok.encode("the cat sat").ids) == "the cat sat"
    again = train_tokenizer(["a text, not a file name " * 20] * 3, 260)
    assert again.token_to_id("<|endoftext|>") == 0


def test_tokenize_jsonl_manifest_and_metadata(tiny_tokenizer, tmp_path):
    texts = write_jsonl(tmp_path / "c.jsonl", 40)
    m = tokenize_corpus([tmp_path / "c.jsonl"], tiny_tokenizer, tmp_path / "out", workers=1, progress=False)
    ds = IndexedDataset(tmp_path / "out")
    tok = load_tokenizer(tiny_tokenizer)
    assert len(ds) == m["documents"] == 40 and ds.dtype == np.uint16
    for i in (0, 17, 39):
        assert ds[i].tolist() == tok.encode(texts[i]).ids + [0]
    assert m["tokens"] == ds.num_tokens and m["dtype"] == "uint16"
    assert m["inputs"][0]["sha256"] and m["bin"]["sha256"] and m["tokenizer"]["eod_id"] == 0
    meta = DocumentMetadata(tmp_path / "out")
    assert meta[17]["fields"] == {"meta": {"pile_set_name": "Books"}} and meta[17]["location"] == 18
    assert meta[17]["file"].endswith("c.jsonl")


def test_all_formats_and_parallel_equals_single(tiny_tokenizer, tmp_path):
    texts = write_jsonl(tmp_path / "a.jsonl", 30)
    raw = (tmp_path / "a.jsonl").read_bytes()
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(raw))
    pq.write_table(pa.table({"text": texts, "id": list(range(30))}), tmp_path / "d.parquet")
    folder = tmp_path / "txt"
    folder.mkdir()
    for i, t in enumerate(texts[:5]):
        (folder / f"{i:02d}.txt").write_text(t)
    inputs = [tmp_path / n for n in ("a.jsonl", "b.jsonl.zst", "c.jsonl.gz", "d.parquet")] + [folder]
    one = tokenize_corpus(inputs, tiny_tokenizer, tmp_path / "one", workers=1, progress=False, chunk_docs=7)
    two = tokenize_corpus(inputs, tiny_tokenizer, tmp_path / "two", workers=2, progress=False, chunk_docs=7)
    again = tokenize_corpus(inputs, tiny_tokenizer, tmp_path / "again", workers=1, progress=False)
    assert one["documents"] == 4 * 30 + 5
    for ext in (".bin", ".idx"):
        b = (tmp_path / f"one{ext}").read_bytes()
        assert b == (tmp_path / f"two{ext}").read_bytes() == (tmp_path / f"again{ext}").read_bytes()
    assert one["bin"]["sha256"] == two["bin"]["sha256"]
    ds = IndexedDataset(tmp_path / "one")
    for block in range(4):
        assert ds[block * 30 + 3].tolist() == ds[3].tolist()
    assert DocumentMetadata(tmp_path / "one")[90 + 4]["fields"] == {"id": 4}


@pytest.mark.parametrize("line,match,reason", [
    (b'{"text": "ok" ', r"bad\.jsonl:2 \(byte offset \d+\): invalid JSON", "invalid json"),
    (b'{"body": "no text"}', r"bad\.jsonl:2.*missing or non-string text field 'text'", "missing text field"),
    (b'{"text": "caf\xe9"}', r"bad\.jsonl:2.*not UTF-8", "not utf-8"),
    (b'{"text": ""}', r"bad\.jsonl:2: empty document", "empty document"),
])
def test_bad_corpus_lines(tiny_tokenizer, tmp_path, line, match, reason):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "the cat"}\n' + line + b'\n{"text": "a dog"}\n')
    with pytest.raises(CorpusError, match=match):
        tokenize_corpus([path], tiny_tokenizer, tmp_path / "out", workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # nothing half-written
    m = tokenize_corpus([path], tiny_tokenizer, tmp_path / "out", workers=1, progress=False, skip_bad=True)
    assert m["documents"] == 2 and m["skipped"] == {reason: 1}


def test_bad_text_file_and_missing_input(tiny_tokenizer, tmp_path):
    (tmp_path / "t.txt").write_bytes(b"ok \xff\xfe")
    with pytest.raises(CorpusError, match=r"t\.txt: bytes are not UTF-8 \(byte 3"):
        tokenize_corpus([tmp_path / "t.txt"], tiny_tokenizer, tmp_path / "out", progress=False)
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:-30])
    with pytest.raises(CorpusError, match=r"c\.jsonl\.gz: cannot read past line"):
        tokenize_corpus([tmp_path / "c.jsonl.gz"], tiny_tokenizer, tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="nope"):
        tokenize_corpus([tmp_path / "nope.jsonl"], tiny_tokenizer, tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        tokenize_corpus([tmp_path / "t.txt"], tmp_path / "tok.json", tmp_path / "out", progress=False)


def test_folder_walk_skips_own_outputs_and_unknown_suffixes(tiny_tokenizer, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = write_jsonl(corpus / "a.jsonl", 10)
    (corpus / "b.txt").write_text("plain text document")
    (corpus / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    first = tokenize_corpus([corpus], tiny_tokenizer, corpus / "tokens", progress=False)  # outputs land in the folder
    assert first["documents"] == 11 and first["ignored_in_folders"]["files"] == 1
    assert {p.name for p in corpus.iterdir()} >= {"tokens.bin", "tokens.idx", "tokens.meta.jsonl", "tokens.manifest.json"}
    again = tokenize_corpus([corpus], tiny_tokenizer, tmp_path / "again", progress=False)  # its outputs are not read
    assert again["documents"] == 11 and [i["path"] for i in again["inputs"]] == [i["path"] for i in first["inputs"]]
    assert (tmp_path / "again.bin").read_bytes() == (corpus / "tokens.bin").read_bytes()
    ds = IndexedDataset(tmp_path / "again")
    assert ds[0].tolist() == load_tokenizer(tiny_tokenizer).encode(texts[0]).ids + [0]
    # a NUL byte means binary: refused, naming the file, even when named explicitly
    (tmp_path / "data.bin").write_bytes(b"abc\x00def")
    with pytest.raises(CorpusError, match=r"data\.bin: NUL byte at offset 3"):
        tokenize_corpus([tmp_path / "data.bin"], tiny_tokenizer, tmp_path / "out", progress=False)
    skipped = tokenize_corpus([tmp_path / "data.bin", corpus / "b.txt"], tiny_tokenizer, tmp_path / "out",
                              progress=False, skip_bad=True)
    assert skipped["documents"] == 1 and skipped["skipped"] == {"binary (NUL bytes)": 1}
