"""`term_frequency`: the Pythia paper's term-frequency study (Biderman et al. 2023, §5; code in
github.com/EleutherAI/pythia case-studies/term_frequency): arithmetic accuracy per operand x1
against how often x1 had been seen in training by each checkpoint.

Tasks (`write_arithmetic_tasks`): for each x1 in 0..99 and each operation, the lm-eval 0.4 task
`num_reasoning_arithmetic_{op}_{x1}` (the study's names), 50 items x2 = 1..50 with prompt
"Q:What is {x1} plus {x2}? A:" (or "times") and target "{y}"; few-shot examples come from the
items of every other x1, as in the study. Output type generate_until, as the study's
greedy_until: greedy, stop at "\n", 16 new tokens, the answer is the first run of 1-5 digits of
the output (lm-eval's regex filter), scored by exact match with the target. (A loglikelihood
task would score the probability of the right answer instead: smoother near chance, but not
the study's metric.) The eval analysis writes the per-item outcomes this analysis reads:
RUN/results/artifacts/eval/{member}/step{N}/{task}.items.npz.

Counting unit: occurrences of the tokens of " {x1}" (the number as a word: a space, then the
digits, as the GPT-2 pre-tokenizer splits " 12" off the text around it) that are not followed
by a token starting with a digit (so " 123" never counts as " 12"), in what the member trained
on before the checkpoint (`pythia.data.counts`). The study counted numbers appearing within
1-3 words of another number (its "number-pair windows", a subset of these occurrences), on the
training data decoded between checkpoints.

Rows per (member, step, operation, shots): per x1, task `{task}` metrics "acc" and "frequency";
per operation, task `num_reasoning_arithmetic_{op}[@Nshot]` metrics "gap" (mean accuracy of the
--tf-top most frequent x1 minus that of the --tf-top least frequent, x 100: the study's table;
ties in frequency are broken by x1) and "spearman" (rank correlation of frequency and accuracy).
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from .base import Analysis, AnalysisError, Option, register
from .term_counts import INDEX_OPTION, member_counters

OPERATIONS = {"addition": ("plus", lambda a, b: a + b), "multiplication": ("times", lambda a, b: a * b)}
X1_RANGE, X2_RANGE = range(100), range(1, 51)
TASK_PREFIX = "num_reasoning_arithmetic"
TASKS_FORMAT, MARKER = "pythia-arithmetic-tasks/1", "tasks.json"
TASK_RE = re.compile(rf"^{TASK_PREFIX}_(?P<op>{'|'.join(OPERATIONS)})_(?P<x1>\d+)(?P<shots>@\d+shot)?$")


def task_name(op: str, x1: int) -> str:
    return f"{TASK_PREFIX}_{op}_{x1}"


def _template(op: str) -> dict:
    word = OPERATIONS[op][0]
    return {
        "dataset_path": "json",
        "output_type": "generate_until",
        "test_split": "test",
        "fewshot_split": "validation",
        "doc_to_text": f"Q:What is {{{{x1}}}} {word} {{{{x2}}}}? A:",
        "doc_to_target": "{{y}}",
        "target_delimiter": " ",
        "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": 16},
        "filter_list": [{"name": "first_number", "filter": [
            {"function": "regex", "regex_pattern": r"(\d{1,5})", "group_select": 0},
            {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def write_arithmetic_tasks(out_dir, ops=tuple(OPERATIONS), x2_max: int = X2_RANGE[-1]) -> list[str]:
    """Write the study's tasks as lm-eval 0.4 YAML + JSON-lines data under out_dir (data files
    named relative to the YAMLs, so the folder can move: `pythia analyze ... eval` and
    `python -m pythia.lm_eval` read them so, pythia.evals.tasks.data_files_relative_to_yaml);
    returns the task names. Each operation's
    tasks share the tag `num_reasoning_arithmetic_{op}`, so `--tasks` can name all 100 at once.
    `x2_max` < 50 keeps the items x2 = 1..x2_max only (fewer items and a smaller few-shot pool:
    lm-eval iterates every task's pool when it loads it), for a quick look such as the demo's."""
    import yaml

    from ..io import atomic_dir

    if not 1 <= x2_max <= X2_RANGE[-1]:
        raise ValueError(f"x2_max must be in 1..{X2_RANGE[-1]}, got {x2_max}")
    x2_range = range(1, x2_max + 1)
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise FileExistsError(f"{out_dir}: exists and is not a folder of generated tasks (no {MARKER}); "
                              "choose a new or empty folder")
    names = []
    with atomic_dir(out_dir) as tmp:
        (tmp / "data").mkdir()
        for op in ops:
            if op not in OPERATIONS:
                raise ValueError(f"unknown operation {op!r}; choose from {', '.join(OPERATIONS)}")
            fn = OPERATIONS[op][1]
            files = {x1: Path("data") / f"{op}_{x1}.jsonl" for x1 in X1_RANGE}  # relative to the YAML
            for x1 in X1_RANGE:
                lines = [f'{{"x1": {x1}, "x2": {x2}, "y": "{fn(x1, x2)}"}}\n' for x2 in x2_range]
                (tmp / "data" / files[x1].name).write_text("".join(lines), encoding="utf-8")
            template = f"_{TASK_PREFIX}_{op}.yaml"
            (tmp / template).write_text(yaml.safe_dump(_template(op), sort_keys=False), encoding="utf-8")
            for x1 in X1_RANGE:
                cfg = {"include": template, "task": task_name(op, x1), "tag": f"{TASK_PREFIX}_{op}",
                       "dataset_kwargs": {"data_files": {
                           "test": str(files[x1]),
                           "validation": [str(files[x]) for x in X1_RANGE if x != x1]}}}
                (tmp / f"{task_name(op, x1)}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
                names.append(task_name(op, x1))
        (tmp / MARKER).write_text(json.dumps({"format": TASKS_FORMAT, "x2_max": x2_max, "tasks": names}, indent=1) + "\n")
    return names


def digit_start_mask(tokenizer) -> np.ndarray:
    """(vocab,) True for tokens whose text starts with a digit (they would extend a number)."""
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    return np.array([tokenizer.decode([i])[:1].isdigit() for i in range(n)], dtype=bool)


def read_item_accuracy(results_dir, member: str) -> dict:
    """{(step, op, shots suffix): {x1: accuracy}} from the eval analysis' per-item files."""
    base = Path(results_dir) / "artifacts" / "eval" / member
    out: dict = defaultdict(dict)
    for path in sorted(base.glob(f"step*/{TASK_PREFIX}_*.items.npz")):
        m = TASK_RE.match(path.name[: -len(".items.npz")])
        step = path.parent.name[4:]
        if m is None or not step.isdigit():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                correct = np.asarray(z["correct"], dtype=np.float64)
        except (OSError, ValueError, KeyError) as exc:
            raise AnalysisError(f"{path}: unreadable per-item file ({exc})") from None
        if correct.size:
            out[int(step), m["op"], m["shots"] or ""][int(m["x1"])] = float(correct.mean())
    return dict(out)


def gap(freq: np.ndarray, acc: np.ndarray, top: int) -> float | None:
    """100 x (mean acc of the `top` most frequent - mean acc of the `top` least frequent);
    frequency ties are broken by position (x1 order)."""
    if freq.size < 2 * top:
        return None
    order = np.argsort(freq, kind="stable")
    return 100.0 * (float(acc[order[-top:]].mean()) - float(acc[order[:top]].mean()))


def spearman(freq: np.ndarray, acc: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if freq.size < 3 or np.ptp(freq) == 0 or np.ptp(acc) == 0:
        return None
    return float(spearmanr(freq, acc).statistic)


@register
class TermFrequency(Analysis):
    name = "term_frequency"
    summary = "arithmetic accuracy per operand x1 vs how often x1 was seen in training (Pythia's term-frequency study)"
    scope = "run"
    cacheable = False  # reads the eval analysis' per-item files, outside the results table
    options = (INDEX_OPTION, Option("tf_top", int, 10, "x1 values at each end of the frequency ranking for the gap"))

    def check(self, run, members) -> None:
        if self.opts["tf_top"] < 1:
            raise AnalysisError(f"--tf-top must be >= 1, got {self.opts['tf_top']}")
        if not any(read_item_accuracy(run.results_dir, m.name) for m in members):
            raise AnalysisError(
                f"term_frequency: no per-item results of {TASK_PREFIX}_* tasks under {run.results_dir}/artifacts/eval; "
                f"write the tasks (`pythia data arithmetic-tasks --out DIR`) and run the eval analysis on them first "
                f"(`pythia analyze RUN eval --include-path DIR --tasks {TASK_PREFIX}_addition`)")

    def compute_run(self, run, store, members) -> list[dict]:
        counters = member_counters(members, self.opts["ngram_index"])
        counts: dict = {}
        rows = []
        for m in members:
            counter = counters[m.name]
            if id(counter) not in counts:
                counts[id(counter)] = self.x1_counts(counter)
            for (step, op, shots), acc_of in sorted(read_item_accuracy(run.results_dir, m.name).items()):
                rows += self.rows_for(m.name, step, op, shots, acc_of, counts[id(counter)])
        return rows

    @staticmethod
    def x1_counts(counter) -> dict:
        """{x1: TermCount} of " {x1}" not followed by a digit (the counting unit, module doc)."""
        mask = digit_start_mask(counter.tokenizer)
        return {x1: counter.count(counter.encode(f" {x1}"), not_followed_by=mask, text=f" {x1}") for x1 in X1_RANGE}

    def rows_for(self, member, step, op, shots, acc_of: dict, counts: dict) -> list[dict]:
        xs = sorted(acc_of)
        freq = np.array([counts[x].at(step) for x in xs], dtype=np.float64)
        acc = np.array([acc_of[x] for x in xs])
        base = {"member": member, "step": step}
        rows = []
        for x, f, a in zip(xs, freq, acc):
            rows.append(base | {"task": task_name(op, x) + shots, "metric": "acc", "value": a})
            rows.append(base | {"task": task_name(op, x) + shots, "metric": "frequency", "value": f})
        summary = {"gap": gap(freq, acc, self.opts["tf_top"]), "spearman": spearman(freq, acc)}
        rows += [base | {"task": f"{TASK_PREFIX}_{op}{shots}", "metric": k, "value": v}
                 for k, v in summary.items() if v is not None]
        return rows
