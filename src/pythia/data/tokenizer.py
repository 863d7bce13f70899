"""Byte-level BPE tokenizers with GPT-NeoX's conventions: <|endoftext|> = 0 ends every
document, <|padding|> = 1; any tokenizer.json (e.g. the 20B tokenizer Pythia used) loads too."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from ..config import padded_vocab_size
from ..io import atomic_path, sha256_file

EOD_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
SPECIAL_TOKENS = (EOD_TOKEN, PAD_TOKEN)  # ids 0 and 1, in this order


def _is_path(item) -> bool:
    if isinstance(item, os.PathLike):
        return True
    try:
        return len(item) < 1024 and "\n" not in item and Path(item).exists()
    except OSError:  # e.g. a text longer than a file name may be
        return False


def _texts(texts_or_files, text_field: str) -> Iterator[str]:
    """Strings pass through; paths (str that names a file/folder, or Path) are read as corpora."""
    from .corpus import iter_documents

    if isinstance(texts_or_files, (str, os.PathLike)):
        texts_or_files = [texts_or_files]
    for item in texts_or_files:
        if _is_path(item):
            for doc in iter_documents([item], text_field=text_field):
                yield doc.text
        else:
            yield item


def train_tokenizer(texts_or_files: Iterable[str] | str | os.PathLike, vocab_size: int,
                    out_path: str | os.PathLike | None = None, *, min_frequency: int = 2,
                    text_field: str = "text") -> Tokenizer:
    """Train a GPT-NeoX-style byte-level BPE (NFC normalizer, ByteLevel pre-tokenizer without
    prefix space, as the 20B tokenizer) and write it to out_path atomically if given."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} is below the 258 needed for bytes + specials")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_texts(texts_or_files, text_field), trainer=trainer)
    check_conventions(tok, "trained tokenizer")
    if out_path is not None:
        with atomic_path(out_path) as tmp:
            tok.save(str(tmp))
    return tok


def check_conventions(tok: Tokenizer, name: str) -> None:
    if tok.token_to_id(EOD_TOKEN) != 0:
        raise ValueError(f"{name}: {EOD_TOKEN} must have id 0, has {tok.token_to_id(EOD_TOKEN)}")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load any tokenizer.json (a file, or a folder holding tokenizer.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type
        raise ValueError(f"{path}: not a valid tokenizer.json ({exc})") from None


def eod_id(tok: Tokenizer) -> int:
    """The end-of-document id (GPT-NeoX appends it to every document)."""
    i = tok.token_to_id(EOD_TOKEN)
    if i is None:
        raise ValueError(f"tokenizer has no {EOD_TOKEN} token")
    return i


def tokenizer_info(path: str | os.PathLike) -> dict:
    """What the manifest records about a tokenizer file."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    tok = load_tokenizer(path)
    n = tok.get_vocab_size(with_added_tokens=True)
    return {"path": str(path), "sha256": sha256_file(path), "vocab_size": n,
            "padded_vocab_size": padded_vocab_size(n), "eod_id": eod_id(tok)}
