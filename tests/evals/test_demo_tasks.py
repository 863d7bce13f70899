"""The demo's benchmark files: deterministic, well-formed, loadable by lm-eval offline."""
from __future__ import annotations

import json

import pytest

from pythia.evals.demo_tasks import DEMO_TASKS, build_corpus_tasks, build_demo_tasks


def _corpus(path, n_docs=8):
    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()
    docs = []
    for d in range(n_docs):
        lines = [f"    line {d}-{i} says " + " ".join(words[(d + i + k) % len(words)] for k in range(3 + i % 4))
                 for i in range(60)]
        docs.append({"text": "\n".join(lines) + "\n", "meta": {"path": f"mod{d}.py"}})
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_items_are_what_they_claim_and_bytes_repeat(tmp_path):
    corpus = _corpus(tmp_path / "valid.jsonl")
    docs = [d["text"] for d in _read(corpus)]
    out = build_corpus_tasks(corpus, tmp_path / "tasks")
    lastword = _read(out / "data" / "pythia_demo_lastword.jsonl")
    nextline = _read(out / "data" / "pythia_demo_nextline.jsonl")
    docppl = _read(out / "data" / "pythia_demo_docppl.jsonl")
    assert lastword and nextline and len(docppl) == len(docs)
    for it in lastword:  # the passage + " word" + newline is in the document, the word closes its line
        assert it["doc"] % 2 == 0 and it["target"] == " " + it["word"]
        assert it["context"] + it["target"] + "\n" in docs[it["doc"]]
    for it in nextline:  # the labelled choice is the true next line, the others come from other documents
        assert it["doc"] % 2 == 1 and len(set(it["choices"])) == 4
        assert it["context"] + it["choices"][it["label"]] + "\n" in docs[it["doc"]]
        assert all(c not in docs[it["doc"]] for i, c in enumerate(it["choices"]) if i != it["label"])
    assert {it["label"] for it in nextline} == {0, 1, 2, 3}
    assert all(docs[it["doc"]].startswith(it["text"]) for it in docppl)
    first = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    build_corpus_tasks(corpus, tmp_path / "tasks")
    assert {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == first
    assert len(first) == 3 + len(DEMO_TASKS)


def test_lm_eval_loads_them_offline(tmp_path):
    from pythia.evals.tasks import load_tasks

    out = build_corpus_tasks(_corpus(tmp_path / "valid.jsonl"), tmp_path / "tasks")
    specs = load_tasks(list(DEMO_TASKS), str(out))
    types = {s.name: next(iter(s.loaded["tasks"].values())).OUTPUT_TYPE for s in specs}
    assert types == {"pythia_demo_lastword": "loglikelihood", "pythia_demo_lastword_gen": "generate_until",
                     "pythia_demo_nextline": "multiple_choice", "pythia_demo_docppl": "loglikelihood_rolling"}
    task = next(iter(specs[2].loaded["tasks"].values()))
    doc = task.eval_docs[0]
    assert task.doc_to_choice(doc)[task.doc_to_target(doc)] + "\n" in _read(tmp_path / "valid.jsonl")[doc["doc"]]["text"]


def test_bad_corpus_is_named(tmp_path):
    bad = tmp_path / "valid.jsonl"
    bad.write_text('{"text": "ok"}\n{"meta": 1}\n')
    with pytest.raises(ValueError, match=r"valid.jsonl:2: not a"):
        build_corpus_tasks(bad, tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="run `pythia demo` first"):
        build_demo_tasks(tmp_path / "nowhere")
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="too little text"):
        build_corpus_tasks(tiny, tmp_path / "t")
