"""pronoun_probe against an independent computation (transformers' model and tokenizer, one
sequence at a time), on the quick demo and on the same weights laid out as a Hub cache."""
from __future__ import annotations

import math

import pytest
import torch

from pythia.analysis.base import AnalysisError
from pythia.analysis.pronoun_probe import BUILTIN_TEMPLATES, PronounProbe
from pythia.analysis.runner import run_analyses
from pythia.run import open_run
from tests.test_demo import QUICK_MEMBERS

CONTEXTS = ["        return", "        if not", "    def f(self):\\n        x =", "# the", "        for item in"]


def _reference(step_dir, contexts: list[str], words: tuple[str, str]) -> list[float]:
    """log P(a | c) - log P(b | c) per context, with transformers' GPTNeoXForCausalLM and tokenizer."""
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    tok = AutoTokenizer.from_pretrained(step_dir)
    hf = GPTNeoXForCausalLM.from_pretrained(step_dir, torch_dtype=torch.float32).eval()
    out = []
    for c in contexts:
        ctx = tok(c, add_special_tokens=False)["input_ids"]
        logp = []
        for w in words:
            cont = tok(w, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                lp = torch.log_softmax(hf(torch.tensor([ctx + cont])).logits[0].double(), -1)  # (T, V)
            logp.append(sum(lp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont)))
        out.append(logp[0] - logp[1])
    return out


def _rows(run, member, step, **options):
    run_analyses(run, "pronoun_probe", members=member, steps=str(step), device="cpu", options=options, progress=False)
    return {(r["task"], r["metric"]): r for r in run.results().rows(analysis="pronoun_probe", member=member)
            if r["step"] == step}


def test_probe_matches_transformers_on_code_contexts(quick_demo, tmp_path):
    out, _ = quick_demo
    run = open_run(out, results_dir=tmp_path / "results")
    templates = tmp_path / "code.txt"
    templates.write_text("\n".join(CONTEXTS) + "\n\n")
    member = QUICK_MEMBERS[2]
    rows = _rows(run, member, 20, probe_words=" self, this", probe_templates=str(templates))
    diffs = _reference(run.member(member).checkpoint(20).path, [c.replace("\\n", "\n") for c in CONTEXTS],
                       (" self", " this"))
    n = len(diffs)
    assert rows[("code", "logp_self_minus_this")]["value"] == pytest.approx(sum(diffs) / n, rel=1e-4)
    assert rows[("code", "share_self")]["value"] == sum(d > 0 for d in diffs) / n
    assert rows[("code", "share_this")]["value"] == sum(d < 0 for d in diffs) / n
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    assert rows[("code", "logp_self_minus_this")]["stderr"] == pytest.approx(sd / math.sqrt(n), rel=1e-3)


def test_probe_on_a_hub_repo_with_the_builtin_sentences(quick_hub, quick_demo, tmp_path, monkeypatch):
    cache, repo = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub = open_run(repo, results_dir=tmp_path / "hub")
    got = _rows(hub, hub.member().name, 20)
    assert {m for _, m in got} == {"share_he", "share_she", "logp_he_minus_she"} and {t for t, _ in got} == {"builtin"}
    diffs = _reference(hub.member().checkpoint(20).path, list(BUILTIN_TEMPLATES), (" he", " she"))
    assert got[("builtin", "logp_he_minus_she")]["value"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-4)
    assert got[("builtin", "share_he")]["value"] + got[("builtin", "share_she")]["value"] <= 1.0
    # the same weights in the demo run folder give the same rows
    local = open_run(quick_demo[0], results_dir=tmp_path / "local")
    same = _rows(local, QUICK_MEMBERS[0], 20)
    assert {k: r["value"] for k, r in same.items()} == {k: r["value"] for k, r in got.items()}


def test_options_are_checked_and_the_file_content_is_in_the_cache_key(tmp_path, quick_demo):
    run = open_run(quick_demo[0], results_dir=tmp_path / "r")
    for words in ("he", " he, he", "he,she,they", ", she"):
        with pytest.raises(AnalysisError, match="two different words separated by a comma"):
            run_analyses(run, "pronoun_probe", options={"probe_words": words}, progress=False)
    with pytest.raises(AnalysisError, match="does not exist"):
        run_analyses(run, "pronoun_probe", options={"probe_templates": str(tmp_path / "nope.txt")}, progress=False)
    path = tmp_path / "t.txt"
    path.write_text("\n  \n\n")
    with pytest.raises(AnalysisError, match="holds no template"):
        run_analyses(run, "pronoun_probe", options={"probe_templates": str(path)}, progress=False)
    path.write_text("The nurse said that\n")
    key = PronounProbe(probe_templates=str(path)).cache_key("w:x")
    path.write_text("The pilot said that\n")
    assert PronounProbe(probe_templates=str(path)).cache_key("w:x") != key
