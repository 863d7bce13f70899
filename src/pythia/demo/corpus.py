"""A real text corpus assembled from what ships with Python itself: no download, reproducible.

The demo needs natural-ish text that every machine already has. The standard library is
exactly that: ~10 MB of Python source with its docstrings and comments, plus the language
reference topics that `help()` shows (`pydoc_data.topics`). For a given Python build the
files are the same bytes, so the corpus hash in the manifest is the same too.

Documents are chunks of a few KB cut at top-level statement boundaries, so a corpus has
thousands of documents (the GPT-NeoX order shuffles documents, and a handful of huge ones
would make that moot). About 5% of the *files* (chosen by a hash of their relative path, so
no chunk of a held-out file leaks into training) form the validation corpus.

Output folder:
    train.jsonl, valid.jsonl   one {"text": ..., "meta": {"path", "module", "kind", "chunk"}} a line
    manifest.json              Python version, selection settings, counts, sha256 of both files
"""
from __future__ import annotations

import ast
import hashlib
import json
import platform
import re
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from pythia.io import atomic_path, sha256_file, write_json_atomic

CORPUS_VERSION = 1  # tick when the selection or chunking logic changes

# Folders (any path component) that are not "the standard library" proper: tests, the IDE,
# third-party packages, bytecode, generated codec tables, bundled wheels, build config.
EXCLUDED_DIRS = frozenset({
    "test", "tests", "idle_test", "idlelib", "site-packages", "dist-packages", "__pycache__",
    "encodings", "ensurepip", "lib-dynload", "turtledemo", "__phello__",
})
# Machine-specific or generated files whose bytes differ between builds of the same Python.
EXCLUDED_PREFIXES = ("_sysconfigdata", "config-")
DOC_TOPICS_FILE = "pydoc_data/topics.py"  # rendered as one document per help() topic instead


@dataclass(frozen=True)
class CorpusSettings:
    """What selects and cuts the corpus; recorded in the manifest and checked on reuse."""

    max_bytes: int | None = None  # stop adding files once the corpus reaches this (quick mode)
    chunk_chars: int = 4000  # target document size; cut at the next top-level statement
    valid_per_mille: int = 50  # ~5% of files go to the validation corpus
    include_doc_topics: bool = True


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder (not the virtual environment)."""
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def _excluded(rel: Path) -> bool:
    if any(part in EXCLUDED_DIRS for part in rel.parts[:-1]):
        return True
    if any(part.startswith(EXCLUDED_PREFIXES) for part in rel.parts):
        return True
    return rel.as_posix() == DOC_TOPICS_FILE


def stdlib_files(root: Path | None = None) -> list[Path]:
    """Relative paths of the standard library's .py files, sorted (the corpus order)."""
    root = root or stdlib_root()
    if not root.is_dir():
        raise FileNotFoundError(f"standard library folder {root} does not exist")
    rels = (p.relative_to(root) for p in root.rglob("*.py") if p.is_file())
    return sorted((r for r in rels if not _excluded(r)), key=lambda r: r.as_posix())


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_validation(key: str, per_mille: int) -> bool:
    """Deterministic hold-out: hash of the file's relative path, not of its position."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < per_mille


_BLOCK_START = re.compile(r"(?:    )?(?:def |class |async def |@)")


def chunk_source(text: str, chunk_chars: int) -> list[str]:
    """Cut `text` into pieces of about `chunk_chars`, only before a statement that starts a
    block at module level or one indent deep (a function, class, method or decorator).

    Cutting there keeps every chunk a readable block of code; a file shorter than
    `chunk_chars` stays one document.
    """
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        if size >= chunk_chars and _BLOCK_START.match(line):
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current and "".join(current).strip():
        chunks.append("".join(current))
    return chunks


def _doc_topics(root: Path) -> dict[str, str]:
    """The `help()` topics (language reference text) shipped in pydoc_data/topics.py."""
    path = root / DOC_TOPICS_FILE
    if not path.is_file():
        return {}
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    topics: dict = {}
    for node in tree.body:  # the file is one `topics = {...}` literal: read it, never run it
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "topics"
                                                for t in node.targets):
            topics = ast.literal_eval(node.value)
    return {k: topics[k] for k in sorted(topics)}


def iter_documents(settings: CorpusSettings, root: Path | None = None) -> Iterator[dict]:
    """Yield corpus records in their fixed order: doc topics first, then files by path."""
    root = root or stdlib_root()
    total = 0
    if settings.include_doc_topics:
        for topic, text in _doc_topics(root).items():
            key = f"pydoc_data/topics/{topic}"
            yield {"text": text, "meta": {"path": key, "module": "pydoc_data.topics",
                                          "kind": "doc", "chunk": 0}}
            total += len(text.encode("utf-8"))
            if settings.max_bytes is not None and total >= settings.max_bytes:
                return
    for rel in stdlib_files(root):
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a handful of files carry legacy encodings; they are not needed
        for i, chunk in enumerate(chunk_source(text, settings.chunk_chars)):
            yield {"text": chunk, "meta": {"path": rel.as_posix(), "module": module_name(rel),
                                           "kind": "source", "chunk": i}}
        total += len(text.encode("utf-8"))
        if settings.max_bytes is not None and total >= settings.max_bytes:
            return


def build_corpus(out_dir: str | Path, settings: CorpusSettings | None = None,
                 root: Path | None = None) -> dict:
    """Write train.jsonl, valid.jsonl and manifest.json to `out_dir`; return the manifest.

    Skips the work when a manifest with the same settings and Python version is already there
    (the manifest is written last, so its presence means the corpus is complete).
    """
    settings = settings or CorpusSettings()
    out_dir = Path(out_dir)
    root = root or stdlib_root()
    existing = load_manifest(out_dir)
    expected = _identity(settings, root)
    if existing is not None and all(existing.get(k) == v for k, v in expected.items()):
        return existing

    counts = {"train": [0, 0], "valid": [0, 0]}  # documents, characters
    paths = {"train": set(), "valid": set()}
    with atomic_path(out_dir / "train.jsonl") as train_tmp, \
            atomic_path(out_dir / "valid.jsonl") as valid_tmp:
        with open(train_tmp, "w", encoding="utf-8") as ftrain, \
                open(valid_tmp, "w", encoding="utf-8") as fvalid:
            for record in iter_documents(settings, root):
                key = record["meta"]["path"]
                split = "valid" if is_validation(key, settings.valid_per_mille) else "train"
                (fvalid if split == "valid" else ftrain).write(
                    json.dumps(record, ensure_ascii=False) + "\n")
                counts[split][0] += 1
                counts[split][1] += len(record["text"])
                paths[split].add(key)
    if counts["train"][0] == 0 or counts["valid"][0] == 0:
        raise ValueError(f"corpus from {root} has an empty split: {counts}; "
                         "raise max_bytes or valid_per_mille")

    train_sha = sha256_file(out_dir / "train.jsonl")
    valid_sha = sha256_file(out_dir / "valid.jsonl")
    manifest = {
        **expected,
        "python_implementation": platform.python_implementation(),
        "splits": {
            split: {"file": f"{split}.jsonl", "documents": counts[split][0],
                    "characters": counts[split][1], "source_files": len(paths[split]),
                    "sha256": sha}
            for split, sha in (("train", train_sha), ("valid", valid_sha))
        },
        # One hash for the whole corpus: both files, in order.
        "sha256": hashlib.sha256(f"{train_sha}{valid_sha}".encode()).hexdigest(),
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest


def _identity(settings: CorpusSettings, root: Path) -> dict:
    return {
        "corpus_version": CORPUS_VERSION,
        "python_version": sys.version.split()[0],
        "stdlib": str(root),
        "settings": asdict(settings),
    }


def load_manifest(out_dir: str | Path) -> dict | None:
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); delete it to rebuild") from exc
