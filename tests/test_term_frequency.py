"""The term-frequency study: lm-eval loads and scores the generated tasks; the analysis joins
synthetic per-item files (the eval analysis' layout) with x1 counts checked by brute force."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pythia.analysis.base import AnalysisError
from pythia.analysis.runner import run_analyses
from pythia.analysis.term_frequency import digit_start_mask, task_name, write_arithmetic_tasks
from pythia.data.tokenizer import load_tokenizer
from pythia.run import open_run
from tests.data.ngram_brute import brute, training_stream


def test_lm_eval_loads_and_scores_the_tasks(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    names = write_arithmetic_tasks(tmp_path / "tasks")
    assert len(names) == 200 and json.loads((tmp_path / "tasks" / "tasks.json").read_text())["tasks"] == names
    from lm_eval import simple_evaluate
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    class HalfRight(LM):
        """Answers x1 + x2 for even x2, x1 + x2 + 1 for odd x2, followed by noise."""

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

        def generate_until(self, requests):
            out = []
            for r in requests:
                q = r.args[0].rsplit("Q:What is ", 1)[1]  # the item asked, after the few-shot examples
                x1, x2 = int(q.split(" plus ")[0]), int(q.split(" plus ")[1].split("?")[0])
                assert r.args[0].count("Q:") == 3 and f"Q:What is {x1} plus" not in r.args[0].rsplit("Q:", 1)[0]
                out.append(f" {x1 + x2 + x2 % 2} apples and 77\n")
            return out

    from pythia.evals.tasks import data_files_relative_to_yaml

    assert data_files_relative_to_yaml()  # the tasks name their data files relative to their YAMLs
    tm = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    res = simple_evaluate(model=HalfRight(), tasks=[task_name("addition", 7)], num_fewshot=2, task_manager=tm,
                          bootstrap_iters=0)
    got = res["results"][task_name("addition", 7)]
    assert got["sample_len"] == 50 and got["exact_match,first_number"] == 0.5
    with pytest.raises(FileExistsError):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "keep.txt").write_text("mine")
        write_arithmetic_tasks(tmp_path / "other")


def write_items(results, member, step, task, correct) -> None:
    folder = results / "artifacts" / "eval" / member / f"step{step}"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{task}.items.npz", doc_id=np.arange(len(correct), dtype=np.int64),
             pred=np.full(len(correct), -1, np.int64), correct=np.asarray(correct, np.uint8),
             metric=np.array(["exact_match"]))


def accuracy(x1: int, step: int) -> float:
    return ((x1 * 7 + step) % 51) / 50 if (x1 * 7 + step) % 51 <= 50 else 1.0


def test_join_per_item_accuracy_with_counts(quick_demo, tmp_path):
    from scipy.stats import spearmanr

    out, _ = quick_demo
    results = tmp_path / "results"
    run = open_run(out / "run", results_dir=results)
    with pytest.raises(AnalysisError, match="no per-item results"):
        run_analyses(run, "term_frequency", options={"ngram_index": str(tmp_path / "sa")}, progress=False)
    names = [m.name for m in run.members[:2]]
    for name in names:
        for step in (4, 20):
            for x1 in range(100):
                n = round(accuracy(x1, step) * 50)
                write_items(results, name, step, task_name("addition", x1) + "@2shot", [1] * n + [0] * (50 - n))
    write_items(results, names[0], 20, task_name("multiplication", 3), [1, 0, 0, 0])
    summary = run_analyses(run, "term_frequency", members=names, options={"ngram_index": str(tmp_path / "sa")},
                           progress=False)
    assert summary.ok
    rows = run.results().rows(analysis="term_frequency")
    table = {(r["member"], r["step"], r["task"], r["metric"]): r["value"] for r in rows}
    member = run.member(names[0])
    tok = load_tokenizer(member.tokenizer_path)
    mask, order = digit_start_mask(tok), member.order()
    stream = training_stream(order)
    for step in (4, 20):
        freq = np.zeros(100)
        for x1 in range(100):
            ids = tok.encode(f" {x1}", add_special_tokens=False).ids
            per_pos = brute(order, ids, range(step * member.global_batch), stream, not_followed_by=mask)
            freq[x1] = per_pos.sum()
            task = task_name("addition", x1) + "@2shot"
            assert table[names[0], step, task, "frequency"] == freq[x1]
            assert table[names[0], step, task, "acc"] == pytest.approx(accuracy(x1, step))
        acc = np.array([accuracy(x, step) for x in range(100)])
        ranked = sorted(range(100), key=lambda x: (freq[x], x))
        gap = 100 * (acc[ranked[-10:]].mean() - acc[ranked[:10]].mean())
        assert table[names[0], step, "num_reasoning_arithmetic_addition@2shot", "gap"] == pytest.approx(gap)
        assert table[names[0], step, "num_reasoning_arithmetic_addition@2shot", "spearman"] == pytest.approx(
            spearmanr(freq, acc).statistic)
    assert freq.sum() > 0 and freq[1] > 0  # " 1" is in the trained Python source
    assert table[names[0], 20, task_name("multiplication", 3), "acc"] == 0.25
    assert (names[0], 20, "num_reasoning_arithmetic_multiplication", "gap") not in table  # 1 x1 only
    assert {r["member"] for r in rows} == set(names)


def test_digit_mask(quick_demo):
    tok = load_tokenizer(open_run(quick_demo[0] / "run").members[0].tokenizer_path)
    mask = digit_start_mask(tok)
    assert mask.shape == (tok.get_vocab_size(with_added_tokens=True),)
    assert mask[tok.token_to_id("7")] and not mask[tok.token_to_id("a")] and not mask[0]
    assert all(mask[i] == tok.decode([i])[:1].isdigit() for i in (tok.encode(" 12 a3 45").ids))


def test_the_study_on_a_hub_run_with_preshuffled_data(quick_demo, quick_hub, tmp_path, monkeypatch):
    """Real Pythia checkpoints are a Hub repo in the local cache plus the preshuffled Pile: the
    study's counts there equal the counts over the GPT-NeoX order the data was exported from."""
    from tests.hub_cache import hub_run_on_preshuffled

    out, _ = quick_demo
    member = open_run(out / "run").members[0]
    hub = hub_run_on_preshuffled(member, *quick_hub, tmp_path, monkeypatch, results="hub")
    local = open_run(out / "run", results_dir=tmp_path / "local")
    for run, name in ((hub, hub.members[0].name), (local, member.name)):
        for x1 in range(100):
            write_items(run.results_dir, name, 20, task_name("addition", x1), [1, 0] if x1 % 3 else [1, 1])
        assert run_analyses(run, "term_frequency", members=name, progress=False,
                            options={"ngram_index": str(tmp_path / f"sa-{run.kind}")}).ok

    def table(run):
        return {(r["task"], r["metric"]): r["value"] for r in run.results().rows(analysis="term_frequency")}

    got, want = table(hub), table(local)
    assert got == want and len(got) == 2 * 100 + 2
    assert want[task_name("addition", 1), "frequency"] > 0
