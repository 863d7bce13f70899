"""Benchmarks made from a held-out corpus, so a suite has lm-eval tasks without a download.

`build_corpus_tasks(valid.jsonl, out)` reads documents `{"text", ...}` and writes, under
`out/`, one JSONL data file per task (`data/`) and the task YAMLs shipped in `pythia/tasks/`
with their `data_files` pointing at them; `out` is then an lm-eval `--include-path`.
`build_demo_tasks(demo_root)` does this for `pythia demo`'s `corpus/valid.jsonl`.

The tasks (`DEMO_TASKS`), all cut from the same held-out documents:
- `pythia_demo_lastword`: LAMBADA-style (Paperno et al. 2016, arXiv 1606.06031) last-word
  prediction -- a passage ending with an identifier that closes its line; acc + perplexity.
- `pythia_demo_lastword_gen`: the same passages, greedy generation + a regex filter.
- `pythia_demo_nextline`: 4-way multiple choice of a passage's next line; acc, acc_norm.
- `pythia_demo_docppl`: rolling perplexity of documents; word/byte perplexity, bits per byte.

Last-word passages come from the even documents, next-line ones from the odd documents: a
passage of one task then never equals a context + choice of the other token for token. Such
a coincidence, split at different points, hits a bug of lm-eval 0.4.13's `hf` model (its
one-token-continuation cache gathers the shared logits at the leading, not the trailing,
positions: lm-evaluation-harness issue #2984), and the demo's numbers are meant to be
comparable with `hf`'s.

Everything is deterministic: items follow the documents' order and every "random" choice
(distractor lines, the answer's position) is a sha256 of the item's coordinates, so the same
corpus gives byte-identical files on every machine and Python version.
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

from ..io import write_text_atomic

__all__ = ["DEMO_TASKS", "build_corpus_tasks", "build_demo_tasks", "template_dir"]

DEMO_TASKS = ("pythia_demo_lastword", "pythia_demo_lastword_gen", "pythia_demo_nextline", "pythia_demo_docppl")
FORMAT_VERSION = 1  # tick when the item selection changes

CONTEXT_CHARS = 240  # ~ the demo's training window (64-128 tokens): longer contexts leave it
MIN_CONTEXT = 60
ITEMS_PER_DOC = 4
MAX_ITEMS = 400
DOC_CHARS = 1500
LAST_WORD = re.compile(r"(?<= )([A-Za-z_][A-Za-z0-9_]{2,})(?=\n)")


def _h(*key) -> int:
    return int(hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16], 16)


def _context(text: str, end: int) -> str | None:
    """The CONTEXT_CHARS before `end`, starting at a line start when that leaves enough."""
    window = text[max(0, end - CONTEXT_CHARS):end]
    nl = window.find("\n")
    if end > CONTEXT_CHARS and nl != -1 and len(window) - nl - 1 >= MIN_CONTEXT:
        window = window[nl + 1:]
    return window if len(window.strip()) >= MIN_CONTEXT else None


def lastword_items(docs: list[str]) -> list[dict]:
    """Passages ending in ' word\\n' (an identifier of >= 3 chars closing its line), at most
    ITEMS_PER_DOC per document, 2 contexts apart, MAX_ITEMS in all; even documents only."""
    items = []
    for d, text in enumerate(docs):
        if d % 2:
            continue
        last, taken = -2 * CONTEXT_CHARS, 0
        for m in LAST_WORD.finditer(text):
            if taken == ITEMS_PER_DOC or len(items) == MAX_ITEMS:
                break
            start = m.start() - 1  # the space before the word goes to the target
            ctx = _context(text, start) if start - last >= 2 * CONTEXT_CHARS else None
            if ctx is None:
                continue
            items.append({"context": ctx, "target": " " + m[1], "word": m[1], "doc": d})
            last, taken = start, taken + 1
    return items


def _candidate_lines(text: str) -> list[tuple[int, str]]:
    """(offset, line) of lines worth asking about: 12-80 visible characters."""
    out, pos = [], 0
    for line in text.split("\n"):
        if 12 <= len(line.strip()) <= 80:
            out.append((pos, line))
        pos += len(line) + 1
    return out


def nextline_items(docs: list[str]) -> list[dict]:
    """Context = the text before a line (ending with its newline); choices = that line and
    three lines of other documents chosen by hash; label = the true line's index. Odd
    documents only (see the module docstring)."""
    lines = [_candidate_lines(t) for t in docs]
    pool = [(d, line) for d, ls in enumerate(lines) for _, line in ls]
    items = []
    for d, text in enumerate(docs):
        if d % 2 == 0:
            continue
        last, taken = -2 * CONTEXT_CHARS, 0
        others = [line for dd, line in pool if dd != d]
        if len(set(others)) < 3:
            continue
        for off, line in lines[d]:
            if taken == ITEMS_PER_DOC or len(items) == MAX_ITEMS:
                break
            ctx = _context(text, off) if off - last >= 2 * CONTEXT_CHARS else None
            if ctx is None or not ctx.endswith("\n"):
                continue
            distract, k = [], 0
            while len(distract) < 3:
                cand = others[_h(d, off, k) % len(others)]
                k += 1
                if cand != line and cand not in distract:
                    distract.append(cand)
            label = _h(d, off, "label") % 4
            choices = distract[:label] + [line] + distract[label:]
            items.append({"context": ctx, "choices": choices, "label": label, "doc": d})
            last, taken = off, taken + 1
    return items


def docppl_items(docs: list[str]) -> list[dict]:
    """Each document's first DOC_CHARS characters, cut after the last full line."""
    items = []
    for d, text in enumerate(docs):
        head = text[:DOC_CHARS]
        if len(text) > DOC_CHARS and "\n" in head:
            head = head[: head.rindex("\n") + 1]
        if head.strip():
            items.append({"text": head, "doc": d})
        if len(items) == MAX_ITEMS:
            break
    return items


def template_dir():
    """The task YAMLs shipped with the package (templates: data_files are bare file names)."""
    return resources.files("pythia") / "tasks"


def _read_docs(valid_jsonl: Path) -> list[str]:
    docs = []
    with open(valid_jsonl, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line)["text"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{valid_jsonl}:{n}: not a {{\"text\": ...}} document ({exc})") from None
    if not docs:
        raise ValueError(f"{valid_jsonl}: no documents")
    return docs


def _jsonl(items: list[dict]) -> str:
    return "".join(json.dumps(it, ensure_ascii=False, sort_keys=True) + "\n" for it in items)


def build_corpus_tasks(valid_jsonl: str | Path, out_dir: str | Path) -> Path:
    """Write the DEMO_TASKS for the documents of `valid_jsonl` into `out_dir` (an lm-eval
    include path: `out_dir/*.yaml` + `out_dir/data/*.jsonl`); returns `out_dir`.

    Re-running rewrites identical bytes (files are replaced atomically)."""
    import yaml

    valid_jsonl, out_dir = Path(valid_jsonl), Path(out_dir).absolute()
    docs = _read_docs(valid_jsonl)
    data = {"pythia_demo_lastword": lastword_items(docs), "pythia_demo_nextline": nextline_items(docs),
            "pythia_demo_docppl": docppl_items(docs)}
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    for name, items in data.items():
        if not items:
            raise ValueError(f"{valid_jsonl}: too little text to build {name} (no item qualifies)")
        write_text_atomic(out_dir / "data" / f"{name}.jsonl", _jsonl(items))
    for name in DEMO_TASKS:
        config = yaml.safe_load((template_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
        files = config["dataset_kwargs"]["data_files"]
        for split, fname in files.items():
            files[split] = f"data/{fname}"  # relative to the YAML: the folder can move (tasks.data_files_relative_to_yaml)
        header = (f"# written by pythia.evals.demo_tasks (format {FORMAT_VERSION}) from {valid_jsonl.name}; "
                  f"template: pythia/tasks/{name}.yaml\n")
        write_text_atomic(out_dir / f"{name}.yaml", header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return out_dir


def build_demo_tasks(demo_out_dir: str | Path) -> Path:
    """The demo's benchmarks: tasks from DEMO/corpus/valid.jsonl written to DEMO/tasks/;
    returns that include path (`pythia analyze DEMO eval` finds it on its own)."""
    root = Path(demo_out_dir)
    valid = root / "corpus" / "valid.jsonl"
    if not valid.is_file():
        raise FileNotFoundError(f"{valid}: no held-out corpus; run `pythia demo` first")
    return build_corpus_tasks(valid, root / "tasks")
