"""`weights`: the 14 Hu et al. features against an independent float64 numpy transcription of
PolyPythias' extract_metrics.py (per-matrix loop, np.linalg.svd, lower median)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pythia.analysis.weights import FEATURES, selected_parameters, weight_features
from pythia.config import custom_config
from pythia.model import GPTNeoX


def numpy_features(state: dict[str, np.ndarray]) -> dict[str, float]:
    """The features from a name -> array dict, written from the script's definitions."""
    def skip(k):
        return "norm" in k or k.startswith(("embed", "gpt_neox.embed"))

    mats = [v.astype(np.float64).reshape(v.shape[0], -1) for k, v in state.items()
            if k.endswith(".weight") and not skip(k)]
    biases = [v.astype(np.float64).ravel() for k, v in state.items() if k.endswith(".bias") and not skip(k)]
    per = {k: [] for k in ("L1", "L2", "L1/L2", "trace", "lambda_max", "trace/lambda", "mu_lambda", "sigma_lambda")}
    for x in mats:
        s = np.linalg.svd(x, compute_uv=False)
        s[s < 1e-5] = 0.0
        l1, l2, tr, lam = np.abs(x).sum(), np.sqrt((x * x).sum()), np.trace(x), np.linalg.norm(x, 2)
        for k, v in (("L1", l1), ("L2", l2), ("L1/L2", l1 / l2), ("trace", tr), ("lambda_max", lam),
                     ("trace/lambda", tr / lam), ("mu_lambda", s.mean()), ("sigma_lambda", s.var(ddof=1))):
            per[k].append(v)
    out = {k: float(np.mean(v)) for k, v in per.items()}
    for key, arrays in (("w", mats), ("b", biases)):
        flat = np.sort(np.concatenate([a.ravel() for a in arrays]))
        out[f"mu_{key}"], out[f"sigma_{key}"] = flat.mean(), flat.var(ddof=1)
        out[f"median_{key}"] = flat[(flat.size - 1) // 2]  # torch.median: the lower middle value
    return out


def tiny_model(seed=0, hidden=32, layers=2):
    torch.manual_seed(seed)
    model = GPTNeoX(custom_config(num_layers=layers, hidden_size=hidden, num_heads=4, vocab_size=256))
    with torch.no_grad():  # move every parameter off its init (biases 0, LayerNorm 1) so all features vary
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def assert_close(ours, ref, rtol=2e-5):
    assert list(ours) == list(FEATURES)
    for k in FEATURES:
        assert ours[k] == pytest.approx(ref[k], rel=rtol, abs=1e-9), k


def test_features_match_numpy_transcription():
    model = tiny_model()
    ref = numpy_features({k: v.numpy() for k, v in model.state_dict().items()})
    assert_close(weight_features(model), ref)


def test_parameter_selection_excludes_embeddings_and_layernorms():
    model = tiny_model()
    weights, biases = selected_parameters(model)
    names = [n for n, _ in weights + biases]
    assert len(weights) == len(biases) == 2 * 4  # qkv, dense, h_to_4h, 4h_to_h per layer
    assert not [n for n in names if "embed" in n or "norm" in n]
    before = weight_features(model)
    with torch.no_grad():
        model.gpt_neox.embed_in.weight.mul_(3.0)
        model.embed_out.weight.add_(1.0)
        model.gpt_neox.layers[0].input_layernorm.weight.add_(1.0)
    assert weight_features(model) == before
    with torch.no_grad():
        model.gpt_neox.layers[1].mlp.dense_4h_to_h.weight.mul_(2.0)  # a wide (d, 4d) matrix
    after = weight_features(model)
    assert after["lambda_max"] != before["lambda_max"] and after["L1"] != before["L1"]


def test_batched_grouping_equals_one_matrix_at_a_time():
    """Several layers share shapes (batched svdvals); one layer has none to share with."""
    from pythia.analysis.weights import singular_values

    gen = torch.Generator().manual_seed(1)
    mats = [torch.randn(12, 5, generator=gen), torch.randn(5, 12, generator=gen), torch.randn(12, 5, generator=gen),
            torch.randn(7, 7, generator=gen)]
    got = singular_values(mats)
    for m, s in zip(mats, got):
        np.testing.assert_allclose(s.numpy(), np.linalg.svd(m.double().numpy(), compute_uv=False), rtol=1e-5)


def test_non_finite_weights_are_named():
    model = tiny_model()
    with torch.no_grad():
        model.gpt_neox.layers[1].attention.dense.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layers\.1\.attention\.dense\.weight"):
        weight_features(model)


def test_bfloat16_model_uses_float32_singular_values():
    model = tiny_model().to(torch.bfloat16)
    ref = numpy_features({k: v.float().numpy() for k, v in model.state_dict().items()})
    assert_close(weight_features(model), ref)


def test_weights_through_the_runner_on_demo_checkpoints(quick_demo, tmp_path):
    """The command path: checkpoints loaded from disk; compared with the safetensors read by numpy."""
    from safetensors.numpy import load_file

    from pythia.analysis.runner import run_analyses
    from pythia.run import open_run

    out, _ = quick_demo
    run = open_run(out / "run", results_dir=tmp_path / "results")
    member = run.members[0]
    summary = run_analyses(run, "weights", members=[member.name], steps="0,20", device="cpu", progress=False)
    assert summary.ok and len(summary.computed) == 2
    rows = run.results().rows(analysis="weights")
    assert {r["metric"] for r in rows} == set(FEATURES) and len(rows) == 2 * 14
    for step in (0, 20):
        ref = numpy_features(load_file(str(member.checkpoint(step).path / "model.safetensors")))
        got = {r["metric"]: r["value"] for r in rows if r["step"] == step}
        assert_close({k: got[k] for k in FEATURES}, ref)
    again = run_analyses(run, "weights", members=[member.name], steps="0,20", device="cpu", progress=False)
    assert not again.computed and len(again.cached) == 2


def test_benchmark_runs_on_cpu(capsys):
    """The benchmark's code path (the one --device cuda takes, on the CPU device), tiny shape."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_weights.py"
    spec = importlib.util.spec_from_file_location("bench_weights", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--shape", "layers=2,hidden=32,heads=4,vocab=256", "--reps", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "s/checkpoint" in out and "154 x 10 seeds" in out
    worst = float(out.rsplit("worst relative difference", 1)[1])
    assert worst < 1e-4


@pytest.mark.gpu
def test_features_on_cuda_match_numpy():
    if not torch.cuda.is_available():
        pytest.fail("the gpu marker was selected but torch sees no CUDA device")
    model = tiny_model(hidden=64, layers=3)
    ref = numpy_features({k: v.numpy() for k, v in model.state_dict().items()})
    assert_close(weight_features(model.to("cuda")), ref)
