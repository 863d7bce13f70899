"""`pythia data count` / `count-index` through pythia.cli.main, on a tokenized corpus and on
the quick demo run (whose data folder is never written to by these tests: their indexes go to
tmp_path; the demo's own studies stage builds data/train.sa)."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from pythia.cli import main
from pythia.data.indexed import IndexedDataset
from pythia.data.tokenizer import load_tokenizer
from pythia.run import open_run

from .conftest import write_jsonl
from .ngram_brute import brute, training_stream


def corpus_count(prefix, ids) -> int:
    ds, n = IndexedDataset(prefix), len(ids)
    return sum(int(np.sum(np.all(sliding_window_view(np.asarray(d, np.int64), n) == ids, 1)))
               for d in ds if len(d) >= n)


def test_count_on_a_dataset(tmp_path, tiny_tokenizer, capsys):
    from pythia.data.tokenize import tokenize_corpus

    write_jsonl(tmp_path / "c.jsonl", 80)
    prefix = str(tmp_path / "corpus")
    tokenize_corpus([tmp_path / "c.jsonl"], tiny_tokenizer, prefix, progress=False)
    assert main(["data", "count-index", prefix, "--shard-tokens", "300", "--no-progress"]) == 0
    assert "shard(s)" in capsys.readouterr().out
    ids = load_tokenizer(tiny_tokenizer).encode(" the cat", add_special_tokens=False).ids
    assert main(["data", "count", prefix, " the cat", "--json", "--documents", "--max-documents", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == ids and out["first_step"] is None
    assert out["count"] == out["corpus_count"] == corpus_count(prefix, ids) > 0
    assert len(out["documents"]) == min(3, out["documents_total"])
    assert out["documents"][0]["source"]["fields"]["meta"]["pile_set_name"] in ("Wiki", "Books")
    assert main(["data", "count", prefix, "--tokens", ",".join(map(str, ids))]) == 0
    assert f"{out['count']} occurrences" in capsys.readouterr().out
    (tmp_path / "terms.txt").write_text(" the cat\n\n sat\n")
    assert main(["data", "count", prefix, "--terms", str(tmp_path / "terms.txt"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in rows] == [" the cat", " sat"] and rows[0]["count"] == out["count"]
    for argv, message in ((["data", "count", prefix, ""], "tokenizes to no tokens"),
                          (["data", "count", prefix, "--tokens", "3,100000"], "outside the vocabulary"),
                          (["data", "count", prefix], "give PREFIX TEXT")):
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    write_jsonl(tmp_path / "c.jsonl", 81)  # the dataset changes: the index is refused
    tokenize_corpus([tmp_path / "c.jsonl"], tiny_tokenizer, prefix, progress=False)
    assert main(["data", "count", prefix, " the cat"]) == 2
    assert "changed since this index was built" in capsys.readouterr().err
    assert main(["data", "count-index", prefix, "--rebuild", "--no-progress"]) == 0
    assert main(["data", "count", prefix, " the cat"]) == 0


def test_count_on_the_quick_demo(quick_demo, tmp_path, capsys):
    out, _ = quick_demo
    data_files = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in (out / "data").rglob("*"))
    run = open_run(out / "run")
    member = run.members[1]
    index = str(tmp_path / "sa")
    tok = load_tokenizer(member.tokenizer_path)
    ids = tok.encode(" return", add_special_tokens=False).ids
    argv = ["data", "count", "--run", str(out / "run"), "--member", member.name, " return", "--index", index,
            "--no-progress", "--json"]
    assert main([*argv, "--by-step"]) == 0
    got = json.loads(capsys.readouterr().out)
    order, B = member.order(), member.global_batch
    per_step = brute(order, ids, range(member.train_iters * B)).reshape(-1, B).sum(1)
    assert got["tokens"] == ids and got["count"] == per_step.sum() > 0
    assert got["first_step"] == int(np.flatnonzero(per_step)[0])
    assert [r["count"] for r in got["by_step"]] == [int(per_step[:s].sum()) for s in member.steps]
    assert len(list((tmp_path / "sa").glob("steps-*/manifest.json"))) == 1  # the order's step sidecar
    assert main([*argv, "--by-step", "--no-step-index"]) == 0  # from the suffix array alone: the same
    assert json.loads(capsys.readouterr().out) == got
    assert main([*argv, "--until-step", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == per_step[:3].sum()
    assert main([*argv, "--until-step", "100000"]) == 2
    assert "outside" in capsys.readouterr().err
    from pythia.data.counts import sequence_counts

    positions = np.arange(0, 20 * B, 7)
    counts = sequence_counts(member, positions, until_step=10, index_dir=index)
    stream = training_stream(order)
    toks, slot = stream
    for k, c in zip(positions, counts):
        g = int(order.shuffle_idx[k]) * member.seq_len
        if len(set(slot[g:g + 64].tolist())) > 1:
            assert c == -1
        else:
            assert c == brute(order, toks[g:g + 64], range(10 * B), stream).sum() >= (k < 10 * B)
    assert (counts >= 1).any()
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in (out / "data").rglob("*")) == data_files


def test_terms_go_to_the_results_table(quick_demo, tmp_path, capsys):
    import shutil

    out, _ = quick_demo
    run_dir = tmp_path / "run"
    shutil.copytree(out / "run", run_dir, ignore=shutil.ignore_patterns("step1*", "step2*"))
    (tmp_path / "terms.txt").write_text(" return\n def\n")
    assert main(["data", "count", "--run", str(run_dir), "--terms", str(tmp_path / "terms.txt"),
                 "--index", str(tmp_path / "sa"), "--no-progress"]) == 0
    rows = open_run(run_dir).results().rows(analysis="term_counts")
    members = open_run(run_dir).members
    assert {(r["member"], r["step"], r["task"]) for r in rows} == {
        (m.name, s, t) for m in members for s in m.steps for t in (" return", " def")}
    m = members[0]
    ids = load_tokenizer(m.tokenizer_path).encode(" def", add_special_tokens=False).ids
    per_pos = brute(m.order(), ids, range(8 * m.global_batch))
    step8 = next(r for r in rows if r["member"] == m.name and r["step"] == 8 and r["task"] == " def")
    assert step8["value"] == per_pos.sum() and step8["metric"] == "count" and step8["tokens"] == 8 * 8 * 64
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["data", "count", "--help"], ["data", "count-index", "--help"],
                                  ["data", "arithmetic-tasks", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "examples:" in capsys.readouterr().out


def test_hub_run_with_preshuffled_data_counts_the_same(quick_demo, quick_hub, tmp_path, monkeypatch):
    """A Hub run reads its order from a preshuffled file (item k = position k): the same counts
    as the GPT-NeoX order it was exported from, for n-grams without <|endoftext|>."""
    from pythia.data.counts import TermCounter
    from tests.hub_cache import hub_run_on_preshuffled

    out, _ = quick_demo
    member = open_run(out / "run").members[0]
    hub = hub_run_on_preshuffled(member, *quick_hub, tmp_path, monkeypatch)
    via_hub = TermCounter.for_member(hub.member(), index_dir=tmp_path / "sa-hub", tokenizer=member.tokenizer_path)
    via_order = TermCounter.for_member(member, index_dir=tmp_path / "sa")
    for text in (" return", " self", " in"):
        ids = via_order.encode(text)
        assert 0 not in ids
        a, b = via_hub.count(ids), via_order.count(ids)
        assert a.count == b.count > 0 and a.first_step == b.first_step
        assert a.by_step(range(21)) == b.by_step(range(21))


def test_count_index_builds_the_sidecar_a_count_uses(quick_demo, tmp_path, capsys, monkeypatch):
    """`count-index --run` builds the member's step sidecar (size and time printed); a later count
    reads it, building nothing even with a zero limit; over the limit a count falls back with one
    warning and the same answers."""
    import re
    import warnings

    from pythia.data import stepindex

    out, _ = quick_demo
    run_dir, member = str(out / "run"), open_run(out / "run").members[1]
    index = str(tmp_path / "sa")
    prebuild = ["data", "count-index", "--run", run_dir, "--member", member.name, "--index", index, "--no-progress"]
    assert main(prebuild) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"^{member.name}: wrote \S+steps-\S+: [\d.]+ \w?i?B \(\d+ bytes; estimated at most [\d.]+ "
                     r"\w?i?B\) in [\d.]+ s$", printed, re.M), printed
    assert len(list((tmp_path / "sa").glob("steps-*/manifest.json"))) == 1
    assert main(prebuild) == 0
    assert "up to date" in capsys.readouterr().out

    read = []
    count, build = stepindex.StepIndex.count, stepindex.build_step_index
    monkeypatch.setattr(stepindex.StepIndex, "count", lambda self, p: read.append(p) or count(self, p))
    monkeypatch.setattr(stepindex, "build_step_index", None)  # any build would fail
    monkeypatch.setenv(stepindex.MAX_ENV, "0")  # and none would be allowed
    argv = ["data", "count", "--run", run_dir, "--member", member.name, " return", "--index", index,
            "--no-progress", "--json", "--by-step"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(read) == 1 and got["count"] > 0
    assert main([*argv, "--no-step-index"]) == 0
    assert json.loads(capsys.readouterr().out) == got and len(read) == 1

    other = tmp_path / "sa-guarded"
    monkeypatch.delenv(stepindex.MAX_ENV)
    monkeypatch.setattr(stepindex, "build_step_index", build)
    with pytest.warns(UserWarning, match=r"would take up to .* over 1 B \(the limit asked for\).*count-index --run"):
        assert main([*argv[:-5], "--index", str(other), "--no-progress", "--json", "--by-step",
                     "--step-index-max", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == got and len(read) == 1
    assert not list(other.glob("*steps-*"))

    with pytest.warns(UserWarning, match="is a fork"):
        assert main(["data", "count-index", "--run", run_dir, "--index", str(other), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()  # every member: built, or sharing a sidecar built above
    assert sorted(line.split(":")[0] for line in lines) == sorted(m.name for m in open_run(run_dir).members)
    assert any(": wrote " in line for line in lines)
    fork = next(m for m in open_run(run_dir).members if m.intervention is not None)  # counted as its base
    for name in (fork.base, fork.name):
        with pytest.warns(UserWarning, match="is a fork") if name == fork.name else contextlib.nullcontext():
            assert main(["data", "count", "--run", run_dir, "--member", name, " return", "--index", str(other),
                         "--no-progress", "--json"]) == 0
    base_count, fork_count = (json.loads(x) for x in capsys.readouterr().out.replace("}\n{", "}\0{").split("\0"))
    assert (base_count.pop("member"), fork_count.pop("member")) == (fork.base, fork.name)
    assert fork_count == base_count and base_count["count"] > 0
    for bad, message in ((["data", "count-index"], "give PREFIX"),
                         (["data", "count-index", "x", "--member", member.name], "go with --run"),
                         (["data", "count-index", "x", "--run", run_dir], "give no PREFIX"),
                         (["data", "count", "--run", run_dir, "x", "--step-index-max", "lots"], "a size such as")):
        with pytest.raises(SystemExit) if "lots" in bad else contextlib.nullcontext():
            assert main(bad) == 2
        assert message in capsys.readouterr().err
