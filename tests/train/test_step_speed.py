"""The step at the hardware's pace, on CPU: train.micro_batch auto, deferred step statistics
(no host sync per step), and torch.compile's fallback when it cannot compile. The compiled
step itself is in test_compile.py (slow: inductor on 2 shared cores)."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from pythia.train import compile as compile_module
from pythia.train import micro_batch as mb
from pythia.train.metrics import read_jsonl
from pythia.train.spec import SpecError, SuiteSpec
from pythia.suite import train_suite
from pythia.train.trainer import MemberRun, StepOptions, Trainer

from .conftest import tiny_spec

ONE = [{"name": "tiny", "num_layers": 2, "hidden_size": 32, "num_heads": 4}]


def _train(datasets, out, **train):
    d = tiny_spec(datasets, out, members=ONE, seeds=[1],
                  train={"iters": 5, "global_batch": 8, "lr": 1e-3, **train}, checkpoints={"interval": 5})
    return train_suite(SuiteSpec.from_dict(d), progress=False) / "tiny-seed1"


def _same_run(a, b) -> None:
    """Same losses, grad norms and lrs in metrics.jsonl and byte-identical final weights."""
    ma, mb_ = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    keys = ("step", "loss", "grad_norm", "lr", "batch_fp", "skipped")
    assert [[r[k] for k in keys] for r in ma] == [[r[k] for k in keys] for r in mb_]
    assert (a / "step5" / "model.safetensors").read_bytes() == (b / "step5" / "model.safetensors").read_bytes()


# -- spec keys ---------------------------------------------------------------------------------
def test_spec_keys(datasets, tmp_path):
    base = tiny_spec(datasets, tmp_path)
    spec = SuiteSpec.from_dict({**base, "train": {**base["train"], "micro_batch": "auto", "compile": True}})
    assert (spec.train.micro_batch, spec.train.compile) == ("auto", True)
    assert SuiteSpec.from_dict(base).train.compile == "auto"  # the default
    assert spec.to_dict()["train"]["compile"] is True and spec.to_dict()["train"]["micro_batch"] == "auto"
    for key, value, message in (("micro_batch", "max", "train.micro_batch must be an integer >= 1 or auto"),
                                ("compile", "yes", "train.compile must be true, false or auto")):
        with pytest.raises(SpecError, match=message):
            SuiteSpec.from_dict({**base, "train": {**base["train"], key: value}})


# -- micro_batch: auto -------------------------------------------------------------------------
def test_micro_batch_choices():
    assert mb.candidates(12) == [12, 6, 4, 3, 2, 1]
    assert mb.cpu_micro_batch(32, 128) == 32  # 4096 tokens
    assert mb.cpu_micro_batch(32, 2048) == 2
    assert mb.cpu_micro_batch(6, 2048, max_tokens=5000) == 2
    assert mb.cpu_micro_batch(3, 8192) == 1  # even one row is over: still 1
    # peak(m) = base + m * per_row against a budget: largest divisor that fits
    assert mb.fit_micro_batch(16, base=10, per_row=3, budget=40) == 8  # 10 + 8*3 = 34; 16 -> 58
    assert mb.fit_micro_batch(12, base=10, per_row=3, budget=40) == 6  # 10 is no divisor of 12
    assert mb.fit_micro_batch(12, base=50, per_row=3, budget=40) == 1


def test_micro_batch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHIA_CACHE_DIR", str(tmp_path / "cache"))
    assert mb.read_cache("k") is None
    mb.write_cache("k", {"base": 1.0, "per_row": 2.0})
    mb.write_cache("other", {"base": 3.0, "per_row": 4.0})
    assert mb.read_cache("k")["per_row"] == 2.0 and mb.read_cache("other")["base"] == 3.0
    (tmp_path / "cache" / mb.CACHE_FILE).write_text("{not json")
    assert mb.read_cache("k") is None  # unreadable: probed again, never an error
    mb.write_cache("k", {"base": 1.0, "per_row": 2.0})
    assert json.loads((tmp_path / "cache" / mb.CACHE_FILE).read_text()) == {"k": {"base": 1.0, "per_row": 2.0}}


def test_micro_batch_auto_equals_explicit(datasets, tmp_path, monkeypatch, capsys):
    """On CPU auto takes the largest divisor within CPU_TOKENS tokens per forward (here 64 tokens
    = 4 rows of 16): the run is byte-identical to one with that micro batch written out, and
    reads the same batches as the whole-batch run."""
    monkeypatch.setattr(mb, "CPU_TOKENS", 64)
    auto = _train(datasets, tmp_path / "auto", micro_batch="auto")
    assert "train.micro_batch auto: 4 x 16 tokens per forward" in capsys.readouterr().out
    explicit = _train(datasets, tmp_path / "explicit", micro_batch=4)
    _same_run(auto, explicit)
    whole = _train(datasets, tmp_path / "whole", micro_batch=8)
    assert [r["batch_fp"] for r in read_jsonl(whole / "metrics.jsonl")] == \
           [r["batch_fp"] for r in read_jsonl(auto / "metrics.jsonl")]
    assert [r["loss"] for r in read_jsonl(whole / "metrics.jsonl")] == \
           pytest.approx([r["loss"] for r in read_jsonl(auto / "metrics.jsonl")], rel=1e-5)


# -- deferred statistics -----------------------------------------------------------------------
class _Order:
    def __init__(self, tokens):
        self.tokens = tokens

    def batch(self, step, batch_size):
        return self.tokens[(np.arange(batch_size) + step * batch_size) % len(self.tokens)]


def _trainer(tmp_path, name, deferred, nan_step=None):
    d = tiny_spec({"train": "unused", "valid": None}, tmp_path / name, members=ONE,
                  train={"iters": 7, "global_batch": 4, "micro_batch": 2, "warmup_fraction": 0.3, "lr": 1e-3})
    spec = SuiteSpec.from_dict(d)
    tokens = np.random.default_rng(0).integers(0, 300, size=(40, 17)).astype(np.int64)
    run = MemberRun(member=spec.resolve_members(384)[0], spec=spec, member_dir=tmp_path / name, order=_Order(tokens),
                    options=StepOptions(fused_adam=True, deferred_stats=deferred, read_stats_every=3))

    class NaNAt(Trainer):  # a non-finite gradient at one step: that update must be skipped
        def _loss(self, rows):
            loss = super()._loss(rows)
            return loss * float("nan") if self.step == nan_step else loss

    t = NaNAt(run)
    t.setup()
    return t


def test_deferred_stats_match_the_host_path(tmp_path):
    """The fused AdamW kernel skips the overflowing update itself, the lr comes from a table on
    the device, and the values are read every 3 steps: the same records, the same update count
    and byte-identical weights as deciding on the host after every step."""
    host, deferred = _trainer(tmp_path, "host", False, nan_step=2), _trainer(tmp_path, "deferred", True, nan_step=2)
    assert (host.deferred, deferred.deferred) == (False, True)
    records = {"host": [], "deferred": []}
    for n in range(7):
        records["host"].append(host.train_step(n))
        records["deferred"].append(deferred.train_step(n))
        if n == 0:
            assert torch.is_tensor(records["deferred"][0]["loss"])  # not read yet: no host sync
    deferred.settle()
    keys = ("step", "loss", "lr", "grad_norm", "skipped", "loss_scale")
    rows = {k: json.dumps([[r[key] for key in keys] for r in v]) for k, v in records.items()}  # NaN == NaN
    assert rows["host"] == rows["deferred"] and "NaN" in rows["host"]
    assert [r["skipped"] for r in records["host"]] == [False, False, True, False, False, False, False]
    assert host.updates == deferred.updates == 6
    assert records["host"][3]["lr"] == records["host"][2]["lr"]  # the skipped update did not advance the schedule
    for p, q in zip(host.model.parameters(), deferred.model.parameters()):
        assert torch.equal(p, q)
    for name in ("exp_avg", "exp_avg_sq", "step"):
        assert all(torch.equal(host.optimizer.state[p][name], deferred.optimizer.state[q][name])
                   for p, q in zip(host.model.parameters(), deferred.model.parameters()))
    host.log.close(), deferred.log.close()


def test_deferred_stats_need_a_fused_optimizer(tmp_path):
    with pytest.raises(ValueError, match="deferred_stats needs a fused AdamW"):
        d = tiny_spec({"train": "unused", "valid": None}, tmp_path / "x", members=ONE)
        spec = SuiteSpec.from_dict(d)
        Trainer(MemberRun(member=spec.resolve_members(384)[0], spec=spec, member_dir=tmp_path / "x",
                          order=_Order(np.zeros((8, 17), dtype=np.int64)),
                          options=StepOptions(fused_adam=False, deferred_stats=True))).setup()


def _with_options(monkeypatch, **options):
    """Every Trainer the suite builds gets these StepOptions."""
    real_init = Trainer.__init__
    monkeypatch.setattr(Trainer, "__init__",
                        lambda self, run: real_init(self, dataclasses.replace(run, options=StepOptions(**options))))


def test_deferred_run_resumes_exactly(datasets, tmp_path, monkeypatch):
    """A whole run with deferred stats (fused AdamW) is byte-identical to the host path, and a
    resume from its step4 reproduces its step5."""
    _with_options(monkeypatch, fused_adam=True, deferred_stats=True)
    deferred = _train(datasets, tmp_path / "deferred", micro_batch=4)
    resumed = tmp_path / "resumed"
    shutil.copytree(deferred.parent, resumed)
    shutil.rmtree(resumed / "tiny-seed1" / "step5")
    again = _train(datasets, resumed, micro_batch=4)
    _same_run(deferred, again)
    monkeypatch.undo()
    _with_options(monkeypatch, fused_adam=True, deferred_stats=False)
    host = _train(datasets, tmp_path / "host", micro_batch=4)
    _same_run(deferred, host)


# -- torch.compile unavailable -----------------------------------------------------------------
def test_no_compiler_warns_and_trains_eagerly(datasets, tmp_path, monkeypatch):
    """compile: true where inductor finds no C++ compiler: one warning for the two members, then
    the eager run."""
    import torch._inductor.config as inductor_config

    eager = _train(datasets, tmp_path / "eager", micro_batch=4, compile=False)
    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, str(tmp_path / "no-such-compiler")))
    with pytest.warns(RuntimeWarning) as warned:
        d = tiny_spec(datasets, tmp_path / "fallback", seeds=[1, 2],
                      members=ONE, train={"iters": 5, "global_batch": 8, "lr": 1e-3, "micro_batch": 4, "compile": True},
                      checkpoints={"interval": 5})
        fallback = train_suite(SuiteSpec.from_dict(d), progress=False) / "tiny-seed1"
    messages = [str(w.message) for w in warned if "train.compile" in str(w.message)]
    assert len(messages) == 1, messages  # once, for both members
    assert "no C++ compiler for inductor" in messages[0] and "training without torch.compile" in messages[0]
    _same_run(eager, fallback)


def test_compile_failure_at_the_first_step_falls_back(datasets, tmp_path, monkeypatch):
    """A compiler that fails when the step first runs (simulated: every compiled function
    raises) is caught by the warm-up step before training: one warning, eager training, the
    eager methods restored."""
    def broken_compile(fn, **options):
        def run(*args, **kwargs):
            raise RuntimeError("simulated inductor failure: cc1plus not found")
        return run

    eager = _train(datasets, tmp_path / "eager", micro_batch=4, compile=False)
    monkeypatch.setattr(compile_module, "compile_unavailable", lambda device: None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    seen = []
    real_setup = Trainer.setup

    def setup(self):
        out = real_setup(self)
        seen.append((self.compiled, [vars(layer).get("forward") for layer in self.model.gpt_neox.layers]))
        return out

    monkeypatch.setattr(Trainer, "setup", setup)
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed \(RuntimeError: simulated inductor failure"):
        fallback = _train(datasets, tmp_path / "fallback", micro_batch=4, compile=True)
    assert seen == [(None, [None, None])]
    _same_run(eager, fallback)
