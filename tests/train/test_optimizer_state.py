"""`optimizer_state` on a tiny run with a checkpoint after every update: the statistics equal a
recomputation (numpy) from the raw saved moments; the update ratio read post hoc is the update
the next step applied; sharded (DCP) states read like single-file ones; the trainer's kept
training gradients equal a recomputation in transformers; bad states fail clearly."""
from __future__ import annotations

import json
import math
import pickle
import shutil
import warnings

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as np_load

from pythia.analysis.base import AnalysisError
from pythia.analysis.runner import run_analyses
from pythia.run import open_run
from pythia.train.spec import SuiteSpec
from pythia.suite import train_suite

from .conftest import tiny_spec

M = "tiny-seed1"
ITERS = 6


@pytest.fixture(scope="module")
def run_dir(datasets, tmp_path_factory):
    """Checkpoints 0..6 (all keep optimizer state) and the training gradients."""
    root = tmp_path_factory.mktemp("optstate")
    d = tiny_spec(datasets, root / "run", train={"iters": ITERS, "lr": 3e-3, "warmup_fraction": 0.5},
                  checkpoints={"interval": 1, "gradients": True},
                  members=[{"name": "tiny", "num_layers": 2, "hidden_size": 32, "num_heads": 4}], seeds=[1])
    torch.set_num_threads(1)
    return train_suite(SuiteSpec.from_dict(d), progress=False)


def _rows(results_dir, analysis):
    from pythia.results import ResultsStore

    return {(r["step"], r["task"], r["metric"]): r["value"] for r in ResultsStore(results_dir).rows(analysis=analysis)}


@pytest.fixture(scope="module")
def stats(run_dir, tmp_path_factory):
    res = tmp_path_factory.mktemp("optres")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_analyses(open_run(run_dir, results_dir=res), "optimizer_state", progress=False, device="cpu")
    assert summary.ok, summary.format()
    return res, _rows(res, "optimizer_state"), [str(w.message) for w in caught]


def _numpy_stats(step_dir, name):
    """update_ratio, grad_snr, outlier_frac from the raw tensors, written from the definitions."""
    state = json.loads((step_dir / "training_state" / "state.json").read_text())
    group = next(g for g in state["optimizer"]["param_groups"] if name in g["names"])
    opt = np_load(str(step_dir / "training_state" / "optimizer.safetensors"))
    theta = np_load(str(step_dir / "model.safetensors"))[name].astype(np.float64)
    m, v = opt[f"{name}.exp_avg"].astype(np.float64), opt[f"{name}.exp_avg_sq"].astype(np.float64)
    k = float(opt[f"{name}.step"])
    (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
    mh, vh = m / (1 - b1 ** k), v / (1 - b2 ** k)
    update = lr * mh / (np.sqrt(vh) + eps)
    snr = np.divide(mh ** 2, vh, out=np.zeros_like(vh), where=vh > 0)
    spread = np.sqrt(np.maximum(vh - mh ** 2, 0.0))
    return {"update_ratio": np.linalg.norm(update) / np.linalg.norm(theta), "grad_snr": snr.mean(),
            "outlier_frac": (np.abs(mh) > 4 * spread).mean()}, group


MATRICES = ("gpt_neox.embed_in.weight", "gpt_neox.layers.0.attention.query_key_value.weight",
            "gpt_neox.layers.1.mlp.dense_4h_to_h.weight", "embed_out.weight")


def test_statistics_equal_a_recomputation_from_the_raw_moments(run_dir, stats):
    _, rows, messages = stats
    for step in (1, 3, ITERS):
        means = {k: [] for k in ("update_ratio", "grad_snr", "outlier_frac")}
        for name in MATRICES:
            want, _ = _numpy_stats(run_dir / M / f"step{step}", name)
            for metric, value in want.items():
                assert rows[(step, name, metric)] == pytest.approx(value, rel=1e-6, abs=1e-12), (step, name, metric)
        for (s, task, metric), value in rows.items():
            if s == step and task != "all":
                means[metric].append(value)
        for metric, values in means.items():
            assert len(values) == 10  # 2 embeddings + 2 layers x 4 matrices
            assert rows[(step, "all", metric)] == pytest.approx(sum(values) / len(values), rel=1e-12)
        assert 0.0 < rows[(step, "all", "outlier_frac")] < 1.0
        # GPT-NeoX's warmup gives the first update lr 0: step 1's state predicts no move
        assert (rows[(step, "all", "update_ratio")] > 0) == (step > 1)
    # step 0 keeps no state (no update yet): the one warning names it, and no rows
    assert not any(s == 0 for s, _, _ in rows)
    skipped = [m for m in messages if "optimizer_state" in m and "skipped" in m]
    assert len(skipped) == 1 and "tiny-seed1/step0" in skipped[0] and "before any update" in skipped[0]


def test_update_ratio_is_the_update_the_next_step_applied(run_dir, stats):
    """theta_{k+1} = (1 - lr wd) theta_k - lr m^/(sqrt(v^) + eps), m^ and v^ being checkpoint k+1's
    moments and lr its own (torch.optim.AdamW). So ||theta_{k+1} - theta_k|| / ||theta_k|| is
    checkpoint k+1's update_ratio (x ||theta_{k+1}|| / ||theta_k||) up to the decay lr wd ||theta_k||,
    and exactly so once the decay is added back."""
    _, rows, _ = stats
    checked = 0
    for k in range(1, ITERS):
        before = np_load(str(run_dir / M / f"step{k}" / "model.safetensors"))
        after = np_load(str(run_dir / M / f"step{k + 1}" / "model.safetensors"))
        for name in MATRICES:
            _, group = _numpy_stats(run_dir / M / f"step{k + 1}", name)
            lr, wd = group["lr"], group["weight_decay"]
            a, b = after[name].astype(np.float64), before[name].astype(np.float64)
            predicted = rows[(k + 1, name, "update_ratio")] * np.linalg.norm(a)  # ||lr m^/(sqrt(v^)+eps)||
            applied = np.linalg.norm(a - b)
            assert abs(applied - predicted) <= lr * wd * np.linalg.norm(b) * (1 + 1e-6) + 1e-7, (k, name)
            assert np.linalg.norm(a - (1 - lr * wd) * b) == pytest.approx(predicted, rel=2e-4), (k, name)
            checked += 1
    assert checked == (ITERS - 1) * len(MATRICES)


def _as_sharded(step_dir, out_dir):
    """A copy of a checkpoint whose optimizer state is torch.distributed.checkpoint files, as an
    FSDP run writes them (here by one process: one shard)."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    shutil.copytree(step_dir, out_dir)
    ts = out_dir / "training_state"
    flat = load_file(str(ts / "optimizer.safetensors"))
    state: dict = {}
    for key, value in flat.items():
        name, _, field = key.rpartition(".")
        state.setdefault(name, {})[field] = value
    dcp.save({"optimizer": {"state": state}}, checkpoint_id=str(ts / "optimizer"), no_dist=True)
    (ts / "optimizer.safetensors").unlink()
    record = json.loads((ts / "state.json").read_text())
    record["optimizer_state"] = "sharded"
    (ts / "state.json").write_text(json.dumps(record))
    return out_dir


def test_sharded_state_reads_like_the_single_file_one(run_dir, tmp_path):
    from pythia.train.optimizer_state import OptimizerStateError, SavedOptimizer

    full = SavedOptimizer(run_dir / M / "step4")
    sharded = SavedOptimizer(_as_sharded(run_dir / M / "step4", tmp_path / "step4"))
    assert sharded.format == "sharded" and sharded.groups == full.groups
    a, b = full.moments(list(MATRICES)), sharded.moments(list(MATRICES))
    for name in MATRICES:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    with pytest.raises(OptimizerStateError, match="no parameter"):
        sharded.moments(["nope.weight"])
    # a shard file gone: named, before anything is read
    shard = next((tmp_path / "step4" / "training_state" / "optimizer").glob("*.distcp"))
    shard.rename(shard.with_suffix(".gone"))
    with pytest.raises(OptimizerStateError, match=f"shard file\\(s\\) {shard.name} .* missing"):
        SavedOptimizer(tmp_path / "step4")


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_metadata_that_would_run_code_is_refused(run_dir, tmp_path, capsys):
    from pythia.train.optimizer_state import OptimizerStateError, SavedOptimizer

    step = _as_sharded(run_dir / M / "step2", tmp_path / "step2")
    (step / "training_state" / "optimizer" / ".metadata").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(OptimizerStateError, match="unreadable checkpoint metadata.*builtins.print"):
        SavedOptimizer(step)
    assert "must never run" not in capsys.readouterr().out


def test_sharded_checkpoint_through_the_analysis(run_dir, tmp_path, stats):
    """The analysis on a run whose step 4 is sharded: the same rows as the single-file state."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("results", "step4"))
    _as_sharded(run_dir / M / "step4", copy / M / "step4")
    manifest = json.loads((copy / M / "step4" / "manifest.json").read_text())
    from pythia.train.checkpoint import write_manifest

    write_manifest(copy / M / "step4", 4, manifest["weights_digest"])
    res = tmp_path / "res"
    assert run_analyses(open_run(copy, results_dir=res), "optimizer_state", steps="4", progress=False).ok
    got = _rows(res, "optimizer_state")
    want = {k: v for k, v in stats[1].items() if k[0] == 4}
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k


def test_kept_training_gradients_equal_transformers(run_dir):
    """checkpoints.gradients: step{k} keeps the gradient of update k (its training batch, the mean
    loss over the global batch, before clipping), recomputed here with transformers from step{k-1}."""
    import transformers
    from safetensors.torch import load_file

    from pythia.run import open_run as _open

    assert not (run_dir / M / "step0" / "training_state" / "gradients.safetensors").exists()
    member = _open(run_dir).member(M)
    order = member.order()
    for k in (1, 4):
        kept = load_file(str(run_dir / M / f"step{k}" / "training_state" / "gradients.safetensors"))
        assert set(kept) == set(MATRICES) | {n.replace("layers.0.attention.query_key_value", f"layers.{i}.{part}")
                                              for n in MATRICES[1:2] for i in (0, 1)
                                              for part in ("attention.query_key_value", "attention.dense",
                                                           "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")}
        hf = transformers.GPTNeoXForCausalLM.from_pretrained(run_dir / M / f"step{k - 1}").float().train()
        hf.config.hidden_dropout = hf.config.attention_dropout = 0.0
        batch = torch.from_numpy(np.asarray(order.batch(k - 1, member.global_batch), dtype=np.int64))
        logits = hf(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))
        loss.backward()
        params = dict(hf.named_parameters())
        params.setdefault("embed_out.weight", params.get("lm_head.weight"))  # transformers 5 names the head lm_head
        for name, g in kept.items():
            torch.testing.assert_close(g, params[name].grad, rtol=2e-4, atol=2e-6, msg=f"step{k} {name}")


def test_representations_read_the_kept_training_gradients(run_dir, tmp_path):
    res = tmp_path / "res"
    run = open_run(run_dir, results_dir=res)
    assert run_analyses(run, "representations", steps="0,2", progress=False,
                        options={"probe_windows": 4}).ok
    rows = _rows(res, "representations")
    from safetensors.torch import load_file

    kept = load_file(str(run_dir / M / "step2" / "training_state" / "gradients.safetensors"))
    for name, g in kept.items():
        assert rows[(2, name, "train_grad_norm")] == pytest.approx(math.sqrt(float((g.double() ** 2).sum())), rel=1e-9)
        assert (2, name, "train_grad_per") in rows and (2, name, "train_grad_hoyer") in rows
    assert not any(m.startswith("train_grad") for s, _, m in rows if s == 0)  # step 0 keeps none


def test_probe_larger_than_the_validation_split_is_refused_before_any_work(run_dir, tmp_path):
    res = tmp_path / "res"
    with pytest.raises(AnalysisError, match="larger than the validation split"):
        run_analyses(open_run(run_dir, results_dir=res), "representations", progress=False,
                     options={"probe_windows": 100_000})
    assert not (res / "units").exists() and not (res / "artifacts").exists()
