"""Suite spec parsing: defaults, member resolution, and errors that name the field."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pythia.train.spec import SpecError, SuiteSpec

from .conftest import REPO, tiny_spec


def _spec(tmp_path, **overrides):
    return tiny_spec({"train": "data/train", "valid": None}, tmp_path / "run", **overrides)


def test_defaults_and_members(tmp_path):
    spec = SuiteSpec.from_dict(_spec(tmp_path, members=[{"size": "14m"}, {"name": "tiny", "num_layers": 2,
                               "hidden_size": 32, "num_heads": 4, "vocab_size": 384, "lr": 3e-3}]))
    assert spec.train.precision == "fp32" and spec.train.lr_schedule == "neox"
    assert spec.train.adam_betas == (0.9, 0.95) and spec.train.loss_scale.initial_power == 12
    assert Path(spec.data.train).is_absolute()
    members = spec.resolve_members()
    assert [m.name for m in members] == ["pythia-14m-seed1", "pythia-14m-seed2", "tiny-seed1", "tiny-seed2"]
    assert (members[0].lr, members[0].min_lr) == (1e-3, 1e-4)  # the named size's recipe
    assert members[2].lr == 3e-3 and members[2].min_lr == pytest.approx(3e-4)
    assert members[2].config.vocab_size == 384
    assert {m.data_seed for m in members} == {1234}
    # round trip through the resolved YAML structure
    assert SuiteSpec.from_dict(spec.to_dict()) == spec


def test_per_member_data_seed(tmp_path):
    spec = SuiteSpec.from_dict(_spec(tmp_path, data={"seed": "per_member"}))
    assert [m.data_seed for m in spec.resolve_members(384)] == [1, 2, 1, 2]


@pytest.mark.parametrize("overrides, field", [
    ({"train": {"iters": 0}}, "train.iters"),
    ({"train": {"precision": "fp8"}}, "train.precision"),
    ({"train": {"lr_schedule": "linear"}}, "train.lr_schedule"),
    ({"train": {"global_batch": 10, "micro_batch": 4}}, "train.global_batch"),
    ({"train": {"parallel": "tp"}}, "train.parallel"),
    ({"data": {"seed": "random"}}, "data.seed"),
    ({"checkpoints": {"interval": -1}}, "checkpoints.interval"),
    ({"members": [{"size": "pythia-13m"}]}, "members[0].size"),
    ({"members": [{"name": "x", "num_layers": 2, "hidden_size": 30, "num_heads": 4}]}, "members[0]"),
    ({"members": [{"name": "x", "num_layers": 2, "hidden_size": 32}]}, "members[0].num_heads"),
    ({"seeds": [1, 1]}, "seeds"),
    ({"eval": {"samples": 0}}, "eval.samples"),
])
def test_errors_name_the_field(tmp_path, overrides, field):
    with pytest.raises(SpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        SuiteSpec.from_dict(_spec(tmp_path, **overrides))


def test_unknown_keys_list_allowed(tmp_path):
    with pytest.raises(SpecError, match=r"unknown key 'train.learning_rate'; allowed keys in train: iters, global_batch"):
        SuiteSpec.from_dict(_spec(tmp_path, train={"learning_rate": 1e-3}))
    with pytest.raises(SpecError, match=r"unknown key 'optimizer'; allowed keys: name, data"):
        SuiteSpec.from_dict(_spec(tmp_path, optimizer={}))
    d = _spec(tmp_path)
    del d["output"]
    with pytest.raises(SpecError, match="missing required field 'output'"):
        SuiteSpec.from_dict(d)


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndata: {train: d, seq_len: 0}\n")
    with pytest.raises(SpecError, match=r"bad.yaml: .*"):
        SuiteSpec.from_yaml(path)


def test_example_suite_yaml_parses():
    spec = SuiteSpec.from_yaml(REPO / "examples" / "suite.yaml")
    assert spec.members and spec.checkpoint_steps()[0] == 0


def test_yaml_float_without_dot_gets_a_hint(tmp_path):
    d = _spec(tmp_path)
    text = yaml.safe_dump(d).replace("global_batch: 8", "global_batch: 8\n  lr: 2e-3")
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    assert yaml.safe_load(text)["train"]["lr"] == "2e-3"  # what YAML 1.1 really does
    with pytest.raises(SpecError, match=r"suite\.yaml: train\.lr must be a number, got '2e-3' .*write 2\.0e-3"):
        SuiteSpec.from_yaml(path)
    path.write_text(text.replace("2e-3", "2.0e-3"))
    assert SuiteSpec.from_yaml(path).train.lr == 2e-3


@pytest.mark.parametrize("overrides, match", [
    ({"train": {"lr": 0}}, r"train\.lr must be > 0"),
    ({"members": [{"size": "pythia-14m", "lr": 0.0}]}, r"members\[0\]\.lr must be > 0"),
    ({"data": {"seed": "per-member"}}, r"data\.seed .* got 'per-member' \(did you mean per_member\?\)"),
    ({"train": {"precision": "bf61"}}, r"did you mean bf16\?"),
    ({"train": {"itres": 3}}, r"unknown key 'train\.itres' \(did you mean iters\?\)"),
])
def test_bad_values_are_explained(tmp_path, overrides, match):
    with pytest.raises(SpecError, match=match):
        SuiteSpec.from_dict(_spec(tmp_path, **overrides))


def test_later_errors_name_the_spec_file(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path, members=[{"size": "pythia-14m", "lr": 1e-4, "min_lr": 1e-3}])))
    spec = SuiteSpec.from_yaml(path).replace(output=tmp_path / "elsewhere")
    with pytest.raises(SpecError, match=r"suite\.yaml: member 'pythia-14m': min_lr 0\.001 is above lr 0\.0001"):
        spec.resolve_members()
