"""The `pythia` lm-eval model gives lm-eval's own `hf` model's numbers, bit for bit.

Reference: lm-eval 0.4's `hf` model (transformers' GPTNeoXForCausalLM loading the same step
folder) at its default batch_size=1, through `simple_evaluate`; ours through the same function.
Compared: every aggregate (acc, acc_norm, perplexity, word/byte perplexity, bits per byte,
exact_match after a regex filter, their stderrs) and every sample's raw and filtered model
responses, zero-shot and two-shot (the second with max_length=64, so long contexts are
truncated and documents span several rolling windows).
"""
from __future__ import annotations

import pytest

TASK_NAMES = ["t_mc", "t_lambada", "t_rolling", "t_gen"]


def _evaluate(model, tasks_dir, shots, **kw):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from pythia.evals.tasks import go_offline

    go_offline()
    tm = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    return simple_evaluate(model=model, tasks=TASK_NAMES, task_manager=tm, num_fewshot=shots, device="cpu",
                           bootstrap_iters=200, log_samples=True, **kw)


def _assert_same(ours: dict, ref: dict) -> None:
    assert set(ours["results"]) == set(TASK_NAMES)
    for task in TASK_NAMES:
        assert ours["results"][task] == ref["results"][task], task
        assert ours["n-shot"][task] == ref["n-shot"][task]
        mine, theirs = ours["samples"][task], ref["samples"][task]
        assert len(mine) == len(theirs) > 0
        for a, b in zip(mine, theirs):
            assert a["arguments"] == b["arguments"]  # same prompts, same few-shot examples
            assert a["resps"] == b["resps"] and a["filtered_resps"] == b["filtered_resps"], (task, a["doc_id"])


@pytest.mark.parametrize("shots,max_length", [(0, None), (2, 64)])
def test_numbers_equal_lm_eval_hf_model(quick_demo, eval_tasks, step_dir, shots, max_length):
    from pythia.evals.lm import PythiaLM

    extra = {} if max_length is None else {"max_length": max_length}
    hf_args = f"pretrained={step_dir},dtype=float32" + (f",max_length={max_length}" if max_length else "")
    ref = _evaluate("hf", eval_tasks, shots, model_args=hf_args, batch_size=1)
    out, _ = quick_demo
    lm = PythiaLM(pretrained=str(out / "run"), member="d64-l2-seed1", revision="step20", batch_size=8, **extra)
    ours = _evaluate(lm, eval_tasks, shots)
    _assert_same(ours, ref)
    res = ours["results"]
    # the comparison is not vacuous: every kind of metric is there, with real values
    assert {"acc,none", "acc_norm,none"} <= set(res["t_mc"]) and {"perplexity,none", "acc,none"} <= set(res["t_lambada"])
    assert {"word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"} <= set(res["t_rolling"])
    assert "exact_match,first_word" in res["t_gen"] and res["t_lambada"]["perplexity,none"] > 1
    generated = [s["resps"][0][0] for s in ours["samples"]["t_gen"]]
    assert any(g.strip() for g in generated) and all("\n" not in g and "." not in g for g in generated)
    assert any(f[0] != "[invalid]" for f in (s["filtered_resps"] for s in ours["samples"]["t_gen"]))
    if shots:
        assert ours["n-shot"]["t_mc"] == 2 and ours["n-shot"]["t_rolling"] == 0  # its YAML fixes 0


def test_tokenization_matches_hf(step_dir):
    """Context/continuation split and special tokens as lm-eval's hf model makes them."""
    from lm_eval.models.huggingface import HFLM

    from pythia.evals.lm import PythiaLM, load_hf_tokenizer
    from pythia import load_model

    hf = HFLM(pretrained=str(step_dir), device="cpu", batch_size=1)
    ours = PythiaLM(model=load_model(step_dir), tokenizer=load_hf_tokenizer(step_dir))
    pairs = [("def f(x):", " return x"), ("a = 1 ", "+ 2"), ("x\n\n", "    pass"), ("<|endoftext|>import", " os"),
             ("héllo wörld", " ünïcode")]
    for ctx, cont in pairs:
        assert ours._encode_pair(ctx, cont) == hf._encode_pair(ctx, cont)
    for text in ("", "plain", "<|endoftext|>starts with EOT", "  leading spaces"):
        assert ours.tok_encode(text) == hf.tok_encode(text)
    assert (ours.eot_token_id, ours.prefix_token_id, ours.max_length) == (hf.eot_token_id, hf.prefix_token_id,
                                                                           hf.max_length)


def test_registered_next_to_hf():
    """Registering `pythia` keeps lm-eval's own models resolvable (the registry pitfall)."""
    from lm_eval.api.registry import get_model

    from pythia.evals.lm import PythiaLM

    assert get_model("pythia") is PythiaLM
    assert get_model("hf").__name__ == "HFLM"


@pytest.mark.slow  # lm-eval's CLI collects an environment report (pip, git): ~10 s
def test_lm_eval_command_line(quick_demo, eval_tasks, tmp_path):
    """`python -m pythia.lm_eval --model pythia ...` = lm-eval's CLI; its results file holds
    the numbers the API gives."""
    import json

    from pythia.lm_eval import main

    out, _ = quick_demo
    args = ["--model", "pythia", "--model_args", f"pretrained={out / 'run'},member=d64-l2-seed1,revision=step20",
            "--include_path", str(eval_tasks), "--tasks", "t_mc,t_lambada", "--device", "cpu", "--batch_size", "4",
            "--output_path", str(tmp_path / "out")]
    assert main(args) == 0
    (result,) = list((tmp_path / "out").rglob("results_*.json"))
    data = json.loads(result.read_text())
    assert data["config"]["model"] == "pythia" and data["config"]["model_revision"] == "step20"
    assert set(data["results"]) == {"t_mc", "t_lambada"}
    assert 0 <= data["results"]["t_mc"]["acc,none"] <= 1


def test_bad_model_args(quick_demo):
    from pythia.evals.lm import PythiaLM

    out, _ = quick_demo
    with pytest.raises(ValueError, match="pretrained=RUN"):
        PythiaLM()
    with pytest.raises(ValueError, match="no checkpoint at step 7"):
        PythiaLM(pretrained=str(out / "run"), member="d64-l2-seed1", revision="step7")
    with pytest.raises(ValueError, match="pass a member: d32-l2-seed1"):
        PythiaLM(pretrained=str(out / "run"))


def test_generation_settings_and_cuts(step_dir):
    """Greedy only (settings that would change hf's output are refused, named); the text stops at
    EOT and at the first stop string, as lm-eval's hf model cuts it."""
    from lm_eval.api.instance import Instance

    from pythia.evals.lm import PythiaLM, load_hf_tokenizer
    from pythia import load_model

    lm = PythiaLM(model=load_model(step_dir), tokenizer=load_hf_tokenizer(step_dir), progress=False)

    def ask(kwargs):
        return lm.generate_until([Instance("generate_until", {}, ("def f(x):\n", kwargs), 0)])

    with pytest.raises(ValueError, match="sampling"):
        ask({"until": ["\n"], "do_sample": True, "temperature": 0.7})
    with pytest.raises(ValueError, match="repetition_penalty"):
        ask({"until": ["\n"], "repetition_penalty": 1.3})
    (text,) = ask({"until": ["\n"], "max_gen_toks": 5, "top_p": 0.9})
    assert "\n" not in text
    ids = lm.tok_encode(" return x\n    pass")
    eot = lm.eot_token_id
    assert lm._text(ids + [eot] + ids, ["\n"]) == (" return x", True)
    assert lm._text(ids[:2] + [eot] + ids, []) == (lm.tok_decode(ids[:2]), True)
    assert lm._text(ids[:2], ["\n"]) == (lm.tok_decode(ids[:2]), False)
