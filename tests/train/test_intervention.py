"""Data interventions: forks start from their base's checkpoint, never retrain the steps before it,
read the base's batches transformed, resume exactly after kill -9, and bad input is refused before
any training."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pythia.cli import main as cli_main
from pythia.layout import digest_of_checkpoint
from pythia.run import open_run
from pythia.suite import train_suite
from pythia.train.intervention import InterventionOrder, Transform, resolve_token_map
from pythia.train.metrics import batch_fingerprint, read_jsonl
from pythia.train.spec import SpecError, SuiteSpec

from .conftest import run_cli, tiny_spec

BASE = "tiny-seed1"
STEPS = [0, 1, 2, 4, 8, 10]
MAP = {i: i + 150 for i in range(2, 40)}  # ids of the random data are 2..299: ~13% of the tokens change
SRC = np.array(sorted(MAP))
ONE_MEMBER = {"members": [{"name": "tiny", "num_layers": 2, "hidden_size": 32, "num_heads": 4}], "seeds": [1]}


def _spec(datasets, out, interventions=None, **overrides) -> dict:
    d = tiny_spec(datasets, out, **{**ONE_MEMBER, **overrides})
    if interventions is not None:
        d["interventions"] = interventions
    return d


def _fork(name: str, step: int, **transform) -> dict:
    return {"name": name, "members": [BASE], "from_step": step,
            **(transform or {"token_map": [[a, b] for a, b in MAP.items()]})}


def _files(member_dir: Path) -> dict:
    return {p.relative_to(member_dir).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(member_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def forked(datasets, tmp_path_factory):
    """A one-member run trained first alone, then given two forks of that member (from steps 2
    and 8): (run folder, the base folder's files before the forks existed)."""
    out = tmp_path_factory.mktemp("forked") / "run"
    train_suite(SuiteSpec.from_dict(_spec(datasets, out)), progress=False)
    before = _files(out / BASE)
    spec = _spec(datasets, out, [_fork("early", 2), _fork("late", 8)])
    train_suite(SuiteSpec.from_dict(spec), progress=False)
    return out, before


def _manifest(step_dir: Path) -> dict:
    return json.loads((step_dir / "manifest.json").read_text())


@pytest.mark.parametrize("name, start", [("early", 2), ("late", 8)])
def test_fork_starts_from_its_base_checkpoint_and_never_retrains_before(forked, name, start):
    run, before = forked
    fork = run / f"{BASE}+{name}"
    assert sorted(int(p.name[4:]) for p in fork.glob("step*")) == [s for s in STEPS if s >= start]
    ours, theirs = fork / f"step{start}", run / BASE / f"step{start}"
    assert _manifest(ours)["weights_digest"] == _manifest(theirs)["weights_digest"] == digest_of_checkpoint(ours)
    for rel in ("model.safetensors", "training_state/optimizer.safetensors", "training_state/rng.safetensors",
                "training_state/state.json"):
        if (theirs / rel).is_file():  # step0 holds no optimizer moments yet
            assert (ours / rel).read_bytes() == (theirs / rel).read_bytes(), rel
    assert [r["step"] for r in read_jsonl(fork / "metrics.jsonl")] == list(range(start + 1, 11))
    assert [r["step"] for r in read_jsonl(fork / "evals.jsonl")] == [s for s in STEPS if s >= start]
    assert _files(run / BASE) == before  # the base was not touched (nor retrained)
    assert _manifest(fork / "step10")["weights_digest"] != _manifest(run / BASE / "step10")["weights_digest"]
    record = json.loads((fork / "intervention.json").read_text())
    assert (record["base"], record["from_step"], record["transform"]["kind"]) == (BASE, start, "token_map")
    assert sorted(map(tuple, record["transform"]["pairs"])) == sorted(MAP.items())


@pytest.mark.parametrize("name, start", [("early", 2), ("late", 8)])
def test_fork_reads_the_base_batches_transformed(forked, name, start):
    run, _ = forked
    view = open_run(run)
    fork = view.member(f"{BASE}+{name}")
    assert (fork.shape, fork.seed, fork.base, fork.intervention.name, fork.from_step) == ("tiny", 1, BASE, name, start)
    base_order, fork_order = view.member(BASE).order(), fork.order()
    logged = {r["step"]: r for r in fork.metrics()}
    for n in range(10):
        a, b = base_order.batch(n, 8), fork_order.batch(n, 8)  # (8, 17)
        if n < start:
            assert np.array_equal(a, b)
            continue
        expected = np.array([[MAP.get(int(t), int(t)) for t in row] for row in a])  # independent of the LUT
        hit = np.isin(a, SRC)
        assert hit.any() and np.array_equal(b, expected)
        assert not np.isin(b, SRC).any()  # no source token left
        assert np.array_equal(b[~hit], a[~hit])  # every other token unchanged
        assert logged[n + 1]["batch_fp"] == batch_fingerprint(expected)
        assert logged[n + 1]["changed_tokens"] == int(hit.sum())


def test_fork_in_the_cli_and_verify(forked, capsys):
    run, _ = forked
    fork = f"{BASE}+early"
    assert cli_main(["data", "batch", "--run", str(run), "--member", fork, "--steps", "0:10", "--check",
                     "--no-progress"]) == 0
    assert capsys.readouterr().out.count("match") == 10
    assert cli_main(["data", "batch", "--run", str(run), "--member", fork, "--step", "5", "--diff",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    a = open_run(run).member(BASE).order().batch(5, 8)
    assert f"{int(np.isin(a, SRC).sum())} tokens changed" in out
    r, c = map(int, np.argwhere(np.isin(a, SRC))[0])
    assert f"row {r} (position {5 * 8 + r}) token {c}: {a[r, c]} -> {MAP[int(a[r, c])]}" in out
    assert cli_main(["verify", str(run)]) == 0  # a fork's schedule starts at its from_step
    assert cli_main(["compare", str(run), BASE, fork, "--no-plot"]) == 0
    assert "val_loss" in capsys.readouterr().out
    assert cli_main(["data", "batch", "--run", str(run), "--member", BASE, "--step", "5", "--diff",
                     "--no-progress"]) == 2
    assert "--diff shows what a fork's intervention changed: give --run RUN --member FORK (forks: tiny-seed1+early, " \
           "tiny-seed1+late)" in capsys.readouterr().err


def test_fork_kill_and_resume_is_bit_identical(datasets, tmp_path):
    """Killed while writing its step8, then right after update 9, the fork ends with the bytes of an
    uninterrupted run (subprocesses, as test_resume.py)."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    spec_path = tmp_path / "suite.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(datasets, ref, [_fork("late", 4)])))
    cmd = ["-m", "pythia.train", str(spec_path), "--no-progress", "--out"]
    assert run_cli(cmd + [str(ref)]).returncode == 0
    run.mkdir()
    for part in (BASE, "order"):  # the same finished base: only the fork trains below
        shutil.copytree(ref / part, run / part)
    fork = f"{BASE}+late"
    p = run_cli(cmd + [str(run)], {"PYTHIA_TRAIN_CRASH_AT": "ckpt:8"})
    assert p.returncode == 137, p.stderr
    assert (run / fork / "step4").is_dir() and not (run / fork / "step8").exists()
    p = run_cli(cmd + [str(run)], {"PYTHIA_TRAIN_CRASH_AT": "step:9"})
    assert p.returncode == 137, p.stderr
    assert (run / fork / "step8").is_dir() and not (run / fork / "step10").exists()
    assert run_cli(cmd + [str(run)]).returncode == 0
    for rel in ("step10/model.safetensors", "step10/training_state/optimizer.safetensors"):
        assert (ref / fork / rel).read_bytes() == (run / fork / rel).read_bytes(), rel
    got, want = read_jsonl(run / fork / "metrics.jsonl"), read_jsonl(ref / fork / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(5, 11))
    assert [(r["loss"], r["batch_fp"], r["changed_tokens"]) for r in got] == \
        [(r["loss"], r["batch_fp"], r["changed_tokens"]) for r in want]


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "members": [BASE], "from_step": 3, "token_map": [[5, 6]]},
     r"interventions\[0\].from_step: 3 is not a checkpoint a fork can start from .*usable steps: 0, 1, 2, 4, 8$"),
    ({"name": "x", "members": [BASE], "from_step": 10, "token_map": [[5, 6]]}, r"before the last step 10"),
    ({"name": "x", "members": ["tiny-seed9"], "from_step": 4, "token_map": [[5, 6]]},
     r"interventions\[0\].members\[0\]: no member 'tiny-seed9' \(did you mean tiny-seed1\?\); members: tiny-seed1"),
    ({"name": "x", "members": [BASE], "from_step": 4}, r"exactly one transform, token_map or function \(got neither"),
    ({"name": "x", "members": [BASE], "from_step": 4, "token_map": [[5, 6]], "function": "m:f"},
     r"exactly one transform"),
    ({"name": "x", "members": [BASE], "from_step": 4, "token_map": "pythia_pronoun"},
     r"names no preset: 'pythia_pronoun' \(did you mean pythia_pronouns\?\)"),
    ({"name": "x", "members": [BASE], "from_step": 4, "token_map": [[5, 6, 7]]}, r"token_map\[0\] must be a \[source"),
    ({"name": "x", "members": [BASE], "from_step": 4, "function": "no_colon"}, r"'module:function'"),
    ({"name": "a/b", "members": [BASE], "from_step": 4, "token_map": [[5, 6]]}, r"interventions\[0\].name must be"),
    ({"name": "x", "members": [BASE], "from_step": 4, "token_map": [[5, 6]], "at": 1},
     r"unknown key 'interventions\[0\].at'; allowed keys in interventions\[0\]: name, members, from_step, token_map, function"),
])
def test_spec_errors_name_the_field(tmp_path, entry, message):
    with pytest.raises(SpecError, match=message):
        SuiteSpec.from_dict(_spec({"train": "data/train", "valid": None}, tmp_path / "run", [entry]))


def test_spec_round_trip_and_usable_steps_follow_optimizer_state(tmp_path):
    data = {"train": "data/train", "valid": None}
    spec = SuiteSpec.from_dict(_spec(data, tmp_path / "run", [_fork("a", 4), {**_fork("b", 8), "token_map": "pythia_pronouns"}]))
    assert SuiteSpec.from_dict(spec.to_dict()) == spec
    assert [k[0] for k in spec.fork_keys()] == [f"{BASE}+a", f"{BASE}+b"]
    with pytest.raises(SpecError, match=r"train.optimizer_state_every: 2\); usable steps: 0, 2, 8$"):
        SuiteSpec.from_dict(_spec(data, tmp_path / "run", [_fork("a", 4)], train={"optimizer_state_every": 2}))
    with pytest.raises(SpecError, match=r"fork 'tiny-seed1\+a' is also made by interventions\[0\]"):
        SuiteSpec.from_dict(_spec(data, tmp_path / "run", [_fork("a", 4), _fork("a", 8)]))


def test_dry_run_lists_forks_and_the_checkpoints_they_write(datasets, tmp_path):
    from pythia.suite import describe

    text = describe(SuiteSpec.from_dict(_spec(datasets, tmp_path / "run", [_fork("late", 8)])))
    assert "tiny-seed1+late              fork of tiny-seed1 from step8: token_map 2->152, 3->153" in text
    disk = [line for line in text.splitlines() if line.startswith("tiny-seed1+late ") and "optimizer state" in line]
    assert len(disk) == 1 and "(1 x " in disk[0] and "+ 0 x " in disk[0]  # step10 only: step8 is a hard link
    assert not (tmp_path / "run").exists()


def test_base_checkpoint_without_optimizer_state_is_refused_before_training(datasets, tmp_path):
    """The base was trained keeping optimizer state only on every 2nd checkpoint; a later spec
    (optimizer_state_every is resume-free) forking at a step without it lists the usable ones."""
    out = tmp_path / "run"
    train_suite(SuiteSpec.from_dict(_spec(datasets, out, train={"optimizer_state_every": 2})), progress=False)
    with pytest.raises(SpecError, match=r"fork tiny-seed1\+a: cannot start from step 4 of tiny-seed1: its checkpoint "
                                        r"keeps no optimizer state .*can start from: 0, 2, 8$"):
        train_suite(SuiteSpec.from_dict(_spec(datasets, out, [_fork("a", 4)])), progress=False)
    assert not (out / f"{BASE}+a").exists()
    # a base checkpoint damaged after training: the fork is refused before it trains a step
    with open(out / BASE / "step8" / "model.safetensors", "ab") as f:
        f.write(b"x")
    with pytest.raises(SpecError, match=r"fork tiny-seed1\+b: tiny-seed1's step8 fails its manifest"):
        train_suite(SuiteSpec.from_dict(_spec(datasets, out, [_fork("b", 8)])), progress=False)
    assert not list((out / f"{BASE}+b").glob("step*")) and not (out / f"{BASE}+b" / "metrics.jsonl").exists()


@pytest.fixture(scope="module")
def text_data(tmp_path_factory, gpt_neox_20b_tokenizer):
    """A small dataset tokenized with the GPT-NeoX-20B tokenizer (strings in a map are its tokens)."""
    from pythia.data.tokenize import tokenize_corpus

    root = tmp_path_factory.mktemp("text")
    lines = [json.dumps({"text": f"He said that his friend {i} saw him, and she agreed with her."}) for i in range(40)]
    (root / "c.jsonl").write_text("\n".join(lines) + "\n")
    tokenize_corpus([root / "c.jsonl"], gpt_neox_20b_tokenizer, root / "train", workers=1, progress=False)
    return {"train": str(root / "train"), "valid": None}


def test_map_side_that_is_not_one_token_is_refused_before_training(text_data, tmp_path):
    out = tmp_path / "run"
    entry = {"name": "x", "members": [BASE], "from_step": 4, "token_map": [[" he", " she"], [" him", " hello world"]]}
    with pytest.raises(SpecError, match=r"interventions\[0\] \(x\).token_map\[1\] target: ' hello world' is not one "
                                        r"token of .*20B_tokenizer.json: it is 2 tokens \(' hello' \+ ' world'\)"):
        train_suite(SuiteSpec.from_dict(_spec(text_data, out, [entry])), progress=False)
    entry["token_map"] = {"Himself": " herself"}
    with pytest.raises(SpecError, match=r"token_map\[0\] source: 'Himself' is not one token .* 3 tokens"):
        train_suite(SuiteSpec.from_dict(_spec(text_data, out, [entry])), progress=False)
    assert not out.exists()


@pytest.mark.parametrize("body, message", [
    ("return np.concatenate([tokens, tokens])", r"returned an array of shape \(4, 17\) int64 for a batch of shape \(2, 17\)"),
    ("return tokens.astype(np.float32)", r"returned an array of shape \(2, 17\) float32"),
    ("return tokens.tolist()", r"returned a list"),
    ("return tokens + 10**6", r"outside the vocabulary 0..383"),
    ("raise RuntimeError('boom')", r"failed on a batch of shape \(2, 17\) int64 \(RuntimeError: boom\)"),
])
def test_function_changing_the_batch_is_refused_before_training(datasets, tmp_path, body, message):
    (tmp_path / "tf.py").write_text(f"import numpy as np\n\ndef f(tokens):\n    {body}\n")
    out = tmp_path / "run"
    spec = _spec(datasets, out, [_fork("fn", 4, function=f"{tmp_path / 'tf.py'}:f")])
    with pytest.raises(SpecError, match=r"interventions\[0\] \(fn\): .*" + message):
        train_suite(SuiteSpec.from_dict(spec), progress=False)
    assert not out.exists()


def test_function_fork_records_its_source_and_a_changed_function_is_refused(datasets, tmp_path):
    module = tmp_path / "swap.py"
    module.write_text("import numpy as np\n\ndef swap(tokens):\n    return np.where(tokens == 7, 9, tokens)\n")
    spec_path = tmp_path / "suite.yaml"  # a relative path in the YAML is the spec file's folder's
    spec_path.write_text(yaml.safe_dump(_spec(datasets, tmp_path / "run", [_fork("fn", 8, function="swap.py:swap")])))
    spec = SuiteSpec.from_yaml(spec_path)
    assert spec.interventions[0].function == f"{module}:swap"
    train_suite(spec, progress=False)
    fork = open_run(tmp_path / "run").member(f"{BASE}+fn")
    a = open_run(tmp_path / "run").member(BASE).order().batch(9, 8)
    assert np.array_equal(fork.order().batch(9, 8), np.where(a == 7, 9, a))
    record = json.loads((tmp_path / "run" / fork.name / "intervention.json").read_text())
    assert record["transform"]["kind"] == "function" and len(record["transform"]["sha256"]) == 64
    module.write_text(module.read_text() + "# edited\n")
    with pytest.raises(SpecError, match=r"fork tiny-seed1\+fn was trained with another intervention \(transform: "
                                        r".*a changed intervention is a new fork"):
        train_suite(SuiteSpec.from_yaml(spec_path), progress=False)
    with pytest.raises(ValueError, match="changed since the fork trained"):
        fork.order()


# ---------------------------------------------------------------------------------- transforms


def test_pythia_pronoun_preset_is_the_intervention_branch_map(gpt_neox_20b_tokenizer):
    from pythia.data.tokenizer import load_tokenizer

    tok = load_tokenizer(gpt_neox_20b_tokenizer)
    # gpt-neox@df1bdca0 (branch `intervention`), megatron/training.py, as transcribed in the spec
    branch = {754: 1500, 3032: 4058, 8389: 10759, 1328: 2993, 521: 617, 344: 703, 779: 617, 8701: 379,
              13243: 379, 248: 6689}
    t = resolve_token_map("pythia_pronouns", tok, "20B", None)
    assert dict(t.pairs) == branch and len(t.pairs) == len(branch)
    assert dict(t.spelled)[" he"] == " she" and dict(t.spelled)[" him"] == " her"
    assert resolve_token_map([[" he", " she"], [754, 1500]], tok, "20B", None).pairs == ((344, 703), (754, 1500))
    with pytest.raises(SpecError, match=r"token id 60000 is outside the vocabulary \(0..50276\)"):
        resolve_token_map([[" he", 60000]], tok, "20B", tok.get_vocab_size())


def test_token_map_applies_all_pairs_at_once():
    swap = Transform(kind="token_map", pairs=((3, 5), (5, 3), (9, 1)))
    tokens = np.array([[3, 5, 9, 1, 2], [5, 5, 3, 0, 1000]], dtype=np.int64)
    out = swap.apply(tokens)
    assert out.tolist() == [[5, 3, 1, 1, 2], [3, 3, 5, 0, 1000]] and tokens[0, 0] == 3  # input untouched

    class Base:
        seq_len = 4

        def batch(self, step, b):
            return tokens + step

    order = InterventionOrder(Base(), swap, from_step=2)
    assert order.batch_and_changes(1, 2)[1] is None and np.array_equal(order.batch(1, 2), tokens + 1)
    changed = order.batch_and_changes(2, 2)
    assert changed[1] == int((swap.apply(tokens + 2) != tokens + 2).sum()) and order.seq_len == 4
