"""Fixtures for the benchmark tests: tiny lm-eval tasks over local JSON files (no download),
cut from the quick demo's own held-out text so a 20-step model says something code-like."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

# One of each kind the issue names: multiple choice (acc, acc_norm), LAMBADA-style loglikelihood
# (acc, perplexity), rolling perplexity (word/byte perplexity, bits per byte) and generation with
# a regex filter. Each task reads its own documents (d % 4), so no request of one task has the
# same tokens as a request of another (see pythia.evals.demo_tasks on lm-eval's hf cache bug).
TASKS = {
    "t_mc": """
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
  - {metric: acc_norm, aggregation: mean, higher_is_better: true}
""",
    "t_lambada": """
output_type: loglikelihood
doc_to_text: "{{context}}"
doc_to_target: "{{' ' + word}}"
metric_list:
  - {metric: perplexity, aggregation: perplexity, higher_is_better: false}
  - {metric: acc, aggregation: mean, higher_is_better: true}
""",
    "t_rolling": """
output_type: loglikelihood_rolling
num_fewshot: 0
doc_to_text: ""
doc_to_target: text
metric_list:
  - {metric: word_perplexity}
  - {metric: byte_perplexity}
  - {metric: bits_per_byte}
""",
    "t_gen": """
output_type: generate_until
doc_to_text: "{{context}}"
doc_to_target: word
target_delimiter: " "
generation_kwargs: {until: ["\\n", "."], do_sample: false, max_gen_toks: 12}
filter_list:
  - name: first_word
    filter:
      - {function: regex, regex_pattern: "([A-Za-z_]+)", group_select: 0}
      - {function: take_first}
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
""",
}


def _docs(corpus: Path) -> list[str]:
    return [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]


def _items(kind: str, texts: list[str]) -> list[dict]:
    """Up to 10 items, each from 6 consecutive lines (of > 20 characters) of a document."""
    out = []
    for text in texts:
        lines = [ln for ln in text.split("\n") if len(ln.strip()) > 20]
        for at in range(0, len(lines) - 5, 6):
            w, i = lines[at:at + 6], len(out)
            words = w[2].split()
            if kind == "t_mc":  # choices 2 and 3 differ in their last word only: one shared input
                out.append({"context": "\n".join(w[:2]) + "\n", "label": i % 4,
                            "choices": [w[2], w[3], w[4] + " end", w[4] + " stop"]})
            elif kind == "t_rolling":
                out.append({"text": "\n".join(w[: 2 + i % 5])})
            elif len(words) > 2:
                out.append({"context": "\n".join(w[:2]) + "\n" + " ".join(words[:-1]), "word": words[-1]})
    return out[:10]


def write_tasks(folder: Path, corpus: Path) -> Path:
    """The four TASKS with their JSONL data under `folder`; returns it (an include path)."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = _docs(corpus)
    for k, (name, body) in enumerate(TASKS.items()):
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(it) + "\n" for it in _items(name, docs[k::4])), encoding="utf-8")
        head = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
                "test_split: test\nmetadata: {version: 1.0}\n")
        (folder / f"{name}.yaml").write_text(head + body.lstrip("\n"), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def eval_tasks(quick_demo, tmp_path_factory) -> Path:
    out, _ = quick_demo
    return write_tasks(tmp_path_factory.mktemp("tasks"), out / "corpus" / "valid.jsonl")


@pytest.fixture(scope="session")
def step_dir(quick_demo) -> Path:
    """A checkpoint of the quick demo: d64-l2-seed1 at its last step."""
    out, _ = quick_demo
    return out / "run" / "d64-l2-seed1" / "step20"
