"""What a new user hit (issue: runs you can open): a typo that pinned a spec, a vocabulary too
small for the data, verify/report on a demo root or a member, untrained positions in `where`."""
from __future__ import annotations

import re

import pytest
import yaml

from pythia.cli import main
from pythia.suite import describe, train_suite
from pythia.train.spec import SpecError, SuiteSpec

from .conftest import tiny_spec


def test_a_bad_data_path_writes_nothing_and_the_fixed_spec_trains(datasets, tmp_path, capsys):
    good = tiny_spec(datasets, tmp_path / "run", train={"iters": 2}, seeds=[1])
    typo = {**good, "data": {**good["data"], "train": datasets["train"] + "-typo"}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(typo))
    assert main(["train", str(path), "--no-progress"]) == 2
    assert "data.train" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # no suite.yaml pinned to the typo, no lock, nothing
    path.write_text(yaml.safe_dump(good))
    assert main(["train", str(path), "--no-progress"]) == 0


@pytest.mark.parametrize("names, message", [
    (["val_loss", "nope"], r"suite\.yaml: analyses\[1\]: unknown analysis 'nope'; available: "),
    (["train_loss"], r"suite\.yaml: analyses\[0\]: 'train_loss' is a whole-run analysis"),
])
def test_an_unknown_analysis_is_refused_before_anything_is_written(datasets, tmp_path, capsys, names, message):
    """The schema reads `analyses:` as names (parsing loads no plug-in); the suite checks them
    against the registry first: the same error for `pythia train` and `--dry-run`, even before
    the data exists, and nothing written."""
    spec = tiny_spec(datasets, tmp_path / "run", train={"iters": 2}, seeds=[1], analyses=names)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert SuiteSpec.from_yaml(path).analyses == tuple(names)
    for extra in ([], ["--dry-run"]):
        assert main(["train", str(path), "--no-progress", *extra]) == 2
        assert re.search(message, capsys.readouterr().err)
    spec["data"]["train"] = str(tmp_path / "absent")  # --dry-run without data still checks the names
    path.write_text(yaml.safe_dump(spec))
    assert main(["train", str(path), "--dry-run"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()
    with pytest.raises(SpecError, match="analyses must be a list of analysis names"):
        SuiteSpec.from_dict({**spec, "analyses": "val_loss"})


def test_vocab_smaller_than_the_data_is_refused_up_front(datasets, tmp_path):
    d = tiny_spec(datasets, tmp_path / "run", seeds=[1],
                  members=[{"name": "small", "num_layers": 1, "hidden_size": 32, "num_heads": 4, "vocab_size": 128}])
    spec = SuiteSpec.from_dict(d)
    for attempt in (lambda: describe(spec), lambda: train_suite(spec, progress=False)):  # --dry-run too
        with pytest.raises(SpecError, match=r"vocab_size 128 is too small .* largest token id is 29\d"):
            attempt()
    assert not (tmp_path / "run").exists()


def test_verify_report_and_where_on_a_demo_root_and_a_member(quick_demo, tmp_path, capsys):
    from tests.test_demo import QUICK_MEMBERS

    out, _ = quick_demo
    for source in (out, out / "run" / QUICK_MEMBERS[0]):
        assert main(["verify", str(source)]) == 0
        text = capsys.readouterr().out
        assert "OK" in text and QUICK_MEMBERS[0] in text
    assert (QUICK_MEMBERS[1] in text) is False  # a member folder verifies that member only
    assert main(["report", str(out / "run" / QUICK_MEMBERS[0]), "--out", str(tmp_path / "rep"), "--no-verify"]) == 0
    assert (tmp_path / "rep" / "index.html").is_file()
    capsys.readouterr()
    assert main(["data", "where", "--run", str(out), "--document", "5", "--json", "--no-progress"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["trained"] == (r["step"] < 20) for r in rows)
    assert any(not r["trained"] for r in rows)  # the order runs past the 20 trained steps
