"""The run view: every kind of source opens the same way and knows the run's layout."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from pythia.run import RunError, open_run, parse_revision, select_steps
from tests.test_demo import QUICK_FORK, QUICK_FORK_STEPS, QUICK_MEMBERS, QUICK_STEPS


def test_demo_root_run_member_and_step_open_alike(quick_demo):
    out, _ = quick_demo
    views = {src: open_run(src) for src in (out, out / "run", out / "run" / QUICK_MEMBERS[1],
                                            out / "run" / QUICK_MEMBERS[1] / "step8")}
    kinds = [v.kind for v in views.values()]
    assert kinds == ["demo", "run", "member", "step"]
    for v in views.values():
        assert v.root == (out / "run").resolve()
        assert [m.name for m in v.members] == QUICK_MEMBERS + [QUICK_FORK]
        assert v.results_dir == (out / "run" / "results").resolve()
    member_view, step_view = list(views.values())[2:]
    assert member_view.member().name == QUICK_MEMBERS[1] and step_view.focus_step == 8
    assert [m.name for m in member_view.select(None)] == [QUICK_MEMBERS[1]]
    m = views[out].member(QUICK_MEMBERS[0])
    assert m.steps == QUICK_STEPS  # numeric order
    assert (m.seq_len, m.global_batch, m.train_iters) == (64, 8, 20)
    assert m.dataset.endswith("data/train") and m.tokenizer_path.name == "tokenizer.json"
    ck = m.checkpoint("step10")
    assert ck.tokens == 10 * 8 * 64 and ck.digest.startswith("w:") and ck.problems() == []
    assert m.checkpoint().step == 20 and m.checkpoint("main").step == 20 and m.checkpoint(4).step == 4
    # the order the member trained on: the batches its metrics.jsonl fingerprinted
    from pythia.train.metrics import batch_fingerprint

    logged = {r["step"]: r["batch_fp"] for r in m.metrics()}
    assert all(batch_fingerprint(m.order().batch(n, 8)) == logged[n + 1] for n in (0, 7, 19))
    # a fork: its base's shape and seeds, the base and intervention it came from, steps from its from_step
    fork = views[out].member(QUICK_FORK)
    base = views[out].member(fork.base)
    assert (fork.shape, fork.seed, fork.data_seed) == (base.shape, base.seed, base.data_seed)
    assert fork.intervention.name == "this" and fork.steps == QUICK_FORK_STEPS == [s for s in QUICK_STEPS if s >= fork.from_step]
    assert m.base is None and m.intervention is None and m.from_step is None


def test_errors_name_what_to_pass(quick_demo, tmp_path):
    out, _ = quick_demo
    run = open_run(out)
    with pytest.raises(RunError, match="pass a member: " + QUICK_MEMBERS[0]):
        run.member()
    with pytest.raises(RunError, match="no member 'nope'.*members: d32"):
        run.member("nope")
    with pytest.raises(RunError, match=r"no checkpoint at step 3; available: 0, 1, 2, 4, 8, 10, 20"):
        run.member(QUICK_MEMBERS[0]).checkpoint(3)
    for bad in ("../x/step1", "best", -1, True):
        with pytest.raises(RunError, match="revision"):
            parse_revision(bad)
    with pytest.raises(RunError, match="no such folder"):
        open_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a run"):
        open_run(tmp_path / "empty")
    assert select_steps([0, 1, 2, 4, 8], "1:5") == [1, 2, 4]
    assert select_steps([0, 1, 2, 4, 8], "last") == [8]
    assert select_steps([0, 1, 2, 4, 8], "step2,0") == [0, 2]
    with pytest.raises(RunError, match=r"no checkpoint at step\(s\) \[3\]"):
        select_steps([0, 1, 2, 4, 8], "3")


def test_hub_repo_opens_as_a_member(quick_hub, quick_demo, monkeypatch):
    cache, repo = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    run = open_run(repo)
    assert run.kind == "hub" and [m.name for m in run.members] == ["pythia-quick-test"]
    m = run.member()
    assert m.steps == QUICK_STEPS
    ck = m.checkpoint("step20")
    assert ck.digest.startswith("hub:") and ck.problems() == []
    out, _ = quick_demo
    ours = open_run(out).member(QUICK_MEMBERS[0]).checkpoint(20).load()
    ids = torch.randint(0, ours.config.vocab_size, (1, 12))
    with torch.no_grad():
        assert torch.equal(ck.load()(ids), ours(ids))
    with pytest.raises(RunError, match="no training data known"):
        m.order()


def test_spec_paths_are_relative_to_the_spec_file(quick_demo, tmp_path, monkeypatch):
    """A spec with relative paths means the same from any working directory."""
    from pythia.train.spec import SuiteSpec

    out, _ = quick_demo
    shutil.copytree(out / "data", tmp_path / "proj" / "data")
    spec = json.loads(json.dumps(SuiteSpec.from_yaml(out / "suite.yaml").to_dict()))
    spec["data"].update(train="data/train", valid="data/valid", order_dir=None)
    spec["output"] = "runs/x"
    (tmp_path / "proj" / "suite.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)
    loaded = SuiteSpec.from_yaml("proj/suite.yaml")
    assert loaded.data.train == str(tmp_path / "proj" / "data" / "train")
    assert loaded.output == str(tmp_path / "proj" / "runs" / "x")
