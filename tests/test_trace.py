"""`pythia trace` and the `trace` analysis on the quick demo and on a Hub-cache run (the span
search itself is checked against a brute force in tests/data/test_trace.py). The demo's data
folder is never written to: these tests keep their indexes in tmp_path."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pythia.cli import main
from pythia.data.provenance import locate
from pythia.run import open_run


def _member(quick_demo):
    out, _ = quick_demo
    return out, open_run(out / "run").members[1]


def _trained_text(member, position: int, n: int = 40) -> str:
    """Text of training position `position` (trained at step position // batch), without <|endoftext|>."""
    from pythia.data.tokenizer import load_tokenizer

    row = member.order().sample(position)[:n]
    return load_tokenizer(member.tokenizer_path).decode([int(t) for t in row if t != 0])


def test_trace_json_on_the_quick_demo(quick_demo, tmp_path, capsys):
    out, member = _member(quick_demo)
    position = 9 * member.global_batch + 3  # trained at step 9
    text = _trained_text(member, position)
    argv = ["trace", "--run", str(out / "run"), "--member", member.name, "--index", str(tmp_path / "sa"),
            "--no-progress", "--json", "--span-density", "0", "--max-frequency", "0", "--max-documents", "1000"]
    assert main([*argv, "--step", "4", text]) == 0
    cap = capsys.readouterr()
    assert "building it first" in cap.err and "tokens" in cap.err  # the index's size is stated before it is built
    got = json.loads(cap.out)
    assert got["text"] == text and got["member"] == member.name and got["until_step"] == 4
    assert got["checkpoints"] == member.steps and got["trained_steps"] == member.train_iters
    spans = got["spans"]
    assert spans and all(set(s) >= {"start", "end", "text", "count", "count_until_step", "first_step", "last_step",
                                    "documents"} for s in spans)
    assert [s["start"] for s in spans] == sorted(s["start"] for s in spans)
    for s in spans:  # each span's counts are `pythia data count`'s for its tokens
        assert main(["data", "count", "--run", str(out / "run"), "--member", member.name, "--tokens",
                     ",".join(map(str, s["tokens"])), "--index", str(tmp_path / "sa"), "--json", "--until-step", "4",
                     "--no-progress"]) == 0
        count = json.loads(capsys.readouterr().out)
        assert s["count_until_step"] == count["count"]
        assert (s["first_step"] is not None and s["first_step"] < 4) == (count["count"] > 0)
        assert s["count"] >= s["count_until_step"] and s["first_step"] <= s["last_step"]
        assert sum(i["count"] for i in s["intervals"]) == s["count"]
    seg = locate(member.order(), position)[0]
    assert any(d["document"] == seg["document"] for s in spans for d in s["documents"])  # its own document
    # the knowledge of a later checkpoint: the text's own position was trained at step 9
    assert main([*argv, "--step", "20", text]) == 0
    later = json.loads(capsys.readouterr().out)
    assert sum(s["count_until_step"] for s in later["spans"]) > sum(s["count_until_step"] for s in spans)
    assert main([*argv, "--step", "20", text]) == 0
    assert json.loads(capsys.readouterr().out) == later  # deterministic
    assert main(["trace", "--run", str(out / "run"), "--member", member.name, "--index", str(tmp_path / "sa"),
                 text]) == 0
    shown = capsys.readouterr().out
    assert "span(s) kept" in shown and "trained" in shown


def test_generate_then_trace(quick_demo, tmp_path, capsys):
    import torch

    from pythia.generate import generate_greedy

    out, member = _member(quick_demo)
    argv = ["trace", "--run", str(out / "run"), "--member", member.name, "--index", str(tmp_path / "sa"),
            "--no-progress", "--json", "--step", "20", "--generate", "    def __init__(self", "--max-new-tokens", "12"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    model = member.checkpoint(20).load()
    want = generate_greedy(model, torch.tensor([got["prompt_tokens"]]), 12, suppress=[0])[0, -12:].tolist()
    assert got["tokens"] == want and got["prompt"] == "    def __init__(self"
    assert got["until_step"] == 20


@pytest.mark.parametrize("extra,message", [
    (["--step", "10", ""], "no tokens"),
    (["--tokens", "5,999999"], "outside the vocabulary"),
    (["--step", "999", " return"], "beyond the run"),
    (["--step", "3", "--generate", "x"], "needs a checkpoint"),
    (["--rank", "length", "--span-density", "3", " return"], "--span-density"),
    ([" return", "--tokens", "5"], "one of TEXT"),
])
def test_bad_input(quick_demo, tmp_path, capsys, extra, message):
    out, member = _member(quick_demo)
    assert main(["trace", "--run", str(out / "run"), "--member", member.name, "--index", str(tmp_path / "sa"),
                 "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["trace", "--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "examples:" in text and "--generate" in text


def test_hub_run_traces_the_same_spans(quick_demo, quick_hub, tmp_path, monkeypatch):
    """Real Pythia checkpoints: a Hub repo in the local cache read with the preshuffled rows it
    trained on (data=). Spans, counts and steps equal those over the GPT-NeoX order the rows were
    exported from (for a text without <|endoftext|>); a document is then a training row."""
    from pythia.analysis.trace import open_tracer, trace_member
    from pythia.data.trace import TraceOptions
    from tests.hub_cache import hub_run_on_preshuffled

    out, _ = quick_demo
    member = open_run(out / "run").members[0]
    hub = hub_run_on_preshuffled(member, *quick_hub, tmp_path, monkeypatch)
    text = _trained_text(member, 5 * member.global_batch + 1)
    opts = TraceOptions(max_frequency=None, span_density=None, max_documents=1000)
    local = trace_member(member, text, step=8, options=opts, tracer=open_tracer(member, index_dir=tmp_path / "sa"))
    hub_member = hub.member()
    remote = trace_member(hub_member, text, step=8, options=opts,
                          tracer=open_tracer(hub_member, index_dir=tmp_path / "sa-hub"))

    def key(t):
        return [(s.start, s.end, s.count, s.count_until_step, s.first_step, s.last_step, s.intervals) for s in t.spans]

    assert key(remote) == key(local) and local.spans
    position = 5 * member.global_batch + 1
    assert any(d["document"] == position for s in remote.spans for d in s.documents)  # item k = position k


def test_the_analysis_stores_traces_and_the_report_draws_them(quick_demo, tmp_path):
    """The analysis traces the sequences memorization found memorized (here two positions marked
    so: the quick demo's models memorize nothing), the prompts' continuations and a task's items;
    the report draws them."""
    import shutil

    from pythia.analysis.memorization_store import Positions, compute_chunked
    from pythia.analysis.runner import run_analyses
    from pythia.report import build_report

    out, _ = quick_demo
    run_dir = tmp_path / "run"
    shutil.copytree(out / "run", run_dir, ignore=shutil.ignore_patterns("results"))
    run = open_run(run_dir)
    member = run.members[0]
    marked = (17, 90)
    compute_chunked(run_dir / "results" / "artifacts" / "memorization" / member.name / "step20", Positions(0, 160),
                    {"member": member.name, "step": 20, "prompt_len": 32, "cont_len": 4, "score": "full"},
                    lambda pos: np.where(np.isin(pos, marked), 4, 1).astype(np.uint8), chunk=64)
    (tmp_path / "prompts.txt").write_text("import\nclass\n")
    options = {"prompts": str(tmp_path / "prompts.txt"), "max_new_tokens": 8, "ngram_index": str(tmp_path / "sa")}
    summary = run_analyses(run, "trace", members=member.name, steps="20", progress=False, options=options)
    assert summary.ok, summary.format()
    stored = json.loads((run_dir / "results" / "artifacts" / "trace" / member.name / "step20" / "traces.json").read_text())
    kinds = [t["kind"] for t in stored["traces"]]
    assert kinds == ["memorized", "memorized", "generation", "generation"]
    assert len(stored["traces"][-1]["tokens"]) == 8
    rows = run.results().rows(analysis="trace")
    value = {(r["step"], r["task"], r["metric"]): r["value"] for r in rows}
    for t in stored["traces"]:
        covered = np.zeros(len(t["tokens"]), bool)
        for s in t["spans"]:
            covered[s["start"]:s["end"]] = True
        assert value[20, t["label"], "covered"] == pytest.approx(covered.mean())
    for p in marked:  # a memorized sequence's spans were trained at its own position at the latest
        trace = next(t for t in stored["traces"] if t["label"] == f"memorized@{p}")
        assert trace["tokens"] == member.order().sample(p)[:36].tolist()
        assert value[20, f"memorized@{p}", "trained_step"] == p // member.global_batch
        if trace["spans"]:
            assert value[20, f"memorized@{p}", "first_seen"] <= p // member.global_batch
    assert any(t["spans"] for t in stored["traces"] if t["kind"] == "memorized")
    # contamination: items with a span of >= 8 tokens first trained before each checkpoint
    summary = run_analyses(run, "trace_contamination", members=member.name, progress=False,
                           options={"task": "pythia_demo_lastword", "include_path": str(out / "tasks"), "items": 6,
                                    "ngram_index": str(tmp_path / "sa")})
    assert summary.ok, summary.format()
    items = json.loads((run_dir / "results" / "artifacts" / "trace" / "contamination-pythia_demo_lastword.json")
                       .read_text())["members"][member.name]
    value = {(r["step"], r["metric"]): r["value"] for r in run.results().rows(analysis="trace_contamination")}
    assert len(items) == 6
    for step in member.steps:
        seen = [any(s["first_step"] is not None and s["first_step"] < step for s in it["spans"]) for it in items]
        assert value[step, "contaminated"] == pytest.approx(np.mean(seen)) and value[step, "items"] == 6
    longest = [value[s, "longest_seen"] for s in member.steps]
    assert longest == sorted(longest) and longest[0] == 0 and longest[-1] > 0
    report = build_report(run_dir, tmp_path / "report", verify=False)
    sec = next(s for s in report.sections if s.key == "tracing")
    assert not sec.errors and sec.figures and sec.tables
    page = report.html.read_text(encoding="utf-8")
    assert 'id="tracing"' in page and "first step seen" in page


def test_tracing_section_notes_missing_artifacts():
    """Rows without their stored texts (a results table copied alone): a note, no error."""
    from pythia.report.sections import ReportData, render_sections

    rows = [{"suite": "s", "member": "m", "size": "m", "seed": 1, "step": 4, "tokens": 0, "analysis": "trace",
             "task": "generation0", "metric": "spans", "value": 1.0, "stderr": None}]
    sec = next(s for s in render_sections(ReportData(rows)) if s.key == "tracing")
    assert not sec.errors and any("no traced texts" in n for n in sec.notes)


def test_a_fork_is_traced_over_its_bases_data(quick_demo, tmp_path):
    """A fork's order comes from the run view (its base's, transformed from its first step): its
    spans are counted over the base's data, with a warning, so they equal the base's."""
    from pythia.analysis.trace import open_tracer, trace_member
    from pythia.data.trace import TraceOptions

    out, _ = quick_demo
    run = open_run(out / "run")
    fork = next(m for m in run.members if m.base is not None)
    base = run.member(fork.base)
    text = _trained_text(base, 3 * base.global_batch)
    opts = TraceOptions(max_frequency=None, span_density=None)
    with pytest.warns(UserWarning, match="fork"):
        forked = trace_member(fork, text, step=20, options=opts, tracer=open_tracer(fork, index_dir=tmp_path / "sa"))
    want = trace_member(base, text, step=20, options=opts, tracer=open_tracer(base, index_dir=tmp_path / "sa"))
    def key(t):  # the intervals differ: they run between each member's own checkpoints
        return [{k: v for k, v in s.to_json().items() if k != "intervals"} for s in t.spans]

    assert key(forked) == key(want) and want.spans
    assert [i["from"] for i in forked.spans[0].intervals] == [0] + fork.steps[:-1]
