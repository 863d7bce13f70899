"""`scaling` over a results table: a synthetic suite that follows a known law (the canary), the
quick demo's own run, Pythia's published evaluations imported into a store, and bad tables."""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize

from pythia.analysis.base import AnalysisError
from pythia.analysis.runner import run_analyses
from pythia.analysis.scaling import CAVEAT
from pythia.config import PYTHIA_SIZES
from pythia.results import ResultsStore
from pythia.run import open_run
from pythia.scaling import DELTA, fit_chinchilla

FINAL = Path(__file__).parents[1] / "fixtures" / "pythia-evals-final"
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
SIZES = ("pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b", "pythia-2.8b")
STEPS = (0, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000)
PER_STEP = 1024 * 2048


def non_embedding(num_layers: int, hidden: int) -> int:
    """Written out here, not taken from pythia.config: L (12 d^2 + 13 d) + 2 d."""
    return num_layers * (12 * hidden * hidden + 13 * hidden) + 2 * hidden


def law(n, d):
    c = CHINCHILLA
    return c["E"] + c["A"] / n ** c["alpha"] + c["B"] / d ** c["beta"]


def synthetic_store(root: Path, seeds=(1, 2, 3), noise=0.003, sizes=SIZES, value=None) -> ResultsStore:
    """A store of val_loss rows that follow Chinchilla's published law at Pythia's sizes, one
    member per (size, seed), with multiplicative seed noise; step 0 has the untrained ln V."""
    store = ResultsStore(root)
    rng = np.random.default_rng(0)
    for size in sizes:
        c = PYTHIA_SIZES[size]
        n = non_embedding(c.num_layers, c.hidden_size)
        for seed in seeds:
            member = f"{size}-seed{seed}"
            for step in STEPS:
                v = np.log(50304) if step == 0 else law(n, step * PER_STEP) * np.exp(rng.normal(0, noise))
                if value is not None:
                    v = value(size, seed, step, v)
                store.put("val_loss", [{"suite": "synth", "member": member, "size": size, "seed": seed, "step": step,
                                        "tokens": step * PER_STEP, "metric": "val_loss", "value": v}],
                          key={"synthetic": 1}, member=member, step=step)
    return store


def by_key(rows, **want):
    return {(r["task"], r["metric"]): r for r in rows if all(r.get(k) == v for k, v in want.items())}


def test_a_suite_that_follows_a_law_gives_it_back_with_the_caveat(tmp_path):
    synthetic_store(tmp_path / "store")
    run = open_run(tmp_path / "store")
    assert run.kind == "store" and run.members == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_analyses(run, "scaling", options={"bootstrap": 0}, progress=False)
    assert summary.ok and summary.computed == ["scaling"]
    assert any(CAVEAT in str(w.message) for w in caught)  # D from intermediate checkpoints of one schedule
    fit = by_key(ResultsStore(tmp_path / "store").rows(analysis="scaling"), member="synth/*")
    # by default the first 10% of training is left out: steps 16000 to 143000, 6 sizes x 3 seeds
    assert fit[("chinchilla", "n_points")]["value"] == 4 * 6 * 3
    assert fit[("chinchilla", "n_sizes")]["value"] == 6 and fit[("chinchilla", "n_steps")]["value"] == 4
    assert fit[("chinchilla", "alpha")]["stderr"] is None and fit[("chinchilla", "n_bootstrap")]["value"] == 0

    # from step 1000 on, two decades of D: the law comes back
    run_analyses(run, "scaling", options={"bootstrap": 40, "min_step": 1000}, progress=False)
    rows = ResultsStore(tmp_path / "store").rows(analysis="scaling")
    fit = by_key(rows, member="synth/*")
    assert fit[("chinchilla", "n_points")]["value"] == 8 * 6 * 3
    for name, tolerance in (("alpha", 0.03), ("beta", 0.03), ("E", 0.1)):
        row = fit[("chinchilla", name)]
        assert abs(row["value"] - CHINCHILLA[name]) < tolerance, (name, row)
        assert 0 < row["stderr"] and abs(row["value"] - CHINCHILLA[name]) < 4 * row["stderr"], (name, row)
    # fit-small-predict-large: the five smaller sizes predict 2.8b at step 143000
    c = PYTHIA_SIZES["pythia-2.8b"]
    truth = law(non_embedding(c.num_layers, c.hidden_size), 143000 * PER_STEP)
    predicted, measured = fit[("chinchilla", "predicted_largest")], fit[("chinchilla", "measured_largest")]
    assert predicted["size"] == "pythia-2.8b" and predicted["step"] == 143000 and predicted["stderr"] > 0
    assert abs(predicted["value"] / truth - 1) < 0.01 and abs(measured["value"] / truth - 1) < 0.01
    assert fit[("chinchilla", "relative_error_largest")]["value"] == pytest.approx(
        predicted["value"] / measured["value"] - 1)
    # Kaplan at the last step: a pure power law through these points, and its own check
    assert 0 < fit[("kaplan", "alpha")]["value"] < 0.34 and fit[("kaplan", "n_points")]["value"] == 18
    assert ("kaplan", "relative_error_largest") in fit
    # the curve and its band at every (size, step) fitted, each size's N
    curve = [r for r in rows if r["task"] == "chinchilla" and r["metric"] == "fit"]
    assert len(curve) == 6 * 8 and all(r["member"].endswith("/*") for r in curve)
    lo = {(r["member"], r["step"]): r["value"] for r in rows if r["task"] == "chinchilla" and r["metric"] == "fit_lo"}
    hi = {(r["member"], r["step"]): r["value"] for r in rows if r["task"] == "chinchilla" and r["metric"] == "fit_hi"}
    assert all(lo[(r["member"], r["step"])] <= r["value"] <= hi[(r["member"], r["step"])] for r in curve)
    ns = {r["member"]: r["value"] for r in rows if r["task"] == "chinchilla" and r["metric"] == "N"}
    assert ns == {f"{s}/*": non_embedding(PYTHIA_SIZES[s].num_layers, PYTHIA_SIZES[s].hidden_size) for s in SIZES}
    # determinism: the same table gives the same rows, byte for byte
    again = run_analyses(open_run(tmp_path / "store"), "scaling", options={"bootstrap": 40, "min_step": 1000},
                         progress=False, force=True)
    assert again.computed == ["scaling"]
    assert ResultsStore(tmp_path / "store").rows(analysis="scaling") == rows


def test_the_quick_demo_ran_scaling_on_its_own_points(quick_demo):
    """The demo's rows: its val_loss points, N counted here from its shapes, and the parameters
    fit_chinchilla gives on exactly those points."""
    from pythia.demo.pipeline import QUICK

    out, _ = quick_demo
    store = open_run(out).results()
    rows = store.rows(analysis="scaling")
    n_of = {s.name: non_embedding(s.num_layers, s.hidden_size) for s in QUICK.sizes}
    per_step = QUICK.global_batch * QUICK.seq_len
    val = [r for r in store.rows(analysis="val_loss", metric="val_loss") if "+" not in r["member"]]  # no fork
    last = max(r["step"] for r in val)
    used = sorted((r["member"], r["step"], r["value"]) for r in val if r["step"] >= 0.1 * last)
    points = sorted((r["member"], r["step"], r["value"]) for r in rows
                    if r["task"] == "chinchilla" and r["metric"] == "observed:val_loss")
    assert points == used and len(points) > 5
    assert {r["member"]: r["value"] for r in rows if r["task"] == "chinchilla" and r["metric"] == "N"} == {
        f"{k}/*": v for k, v in n_of.items()}
    N = [n_of[m.rsplit("-seed", 1)[0]] for m, _, _ in used]
    D = [s * per_step for _, s, _ in used]
    again = fit_chinchilla(N, D, [v for _, _, v in used], bootstrap=0)
    fit = by_key(rows, member=f"{open_run(out).name}/*")
    for name, value in again.params.items():
        assert fit[("chinchilla", name)]["value"] == pytest.approx(value, rel=1e-9), name
    # two sizes: no size is left to predict the largest from (a note, not a failure)
    assert ("chinchilla", "predicted_largest") not in fit


def test_published_pythia_evaluations_lambada_vs_parameters(tmp_path):
    """Pythia's own evaluations at step 143,000 (15 files: 7 standard sizes, 8 deduped, and
    the 1b in bf16), imported into a store: ln(LAMBADA perplexity) vs N per suite, and LAMBADA
    accuracy against it."""
    from pythia.cli import main

    store = tmp_path / "store"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["results", "import", str(FINAL), "--into", str(store)]) == 0
        assert main(["analyze", str(store), "scaling", "--metric", "perplexity", "--task", "lambada_openai",
                     "--bootstrap", "100"]) == 0, buf.getvalue()
    said = " ".join(str(w.message) for w in caught)
    assert "pythia-bf16: no kaplan fit" in said and "pythia: no chinchilla fit" in said  # one size; one step
    rows = ResultsStore(store).rows(analysis="scaling")
    assert {r["suite"] for r in rows} == {"pythia", "pythia-deduped"}
    # the points, read here from the JSON files themselves
    for suite, sizes in (("pythia", ("70m", "160m", "410m", "1.4b", "2.8b", "6.9b", "12b")),
                         ("pythia-deduped", ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"))):
        tail = "-deduped" if suite.endswith("deduped") else ""
        n, loss = [], []
        for size in sizes:
            f = FINAL / f"pythia-{size}{tail}" / "zero-shot" / f"{size}{tail}_step143000.json"
            loss.append(np.log(json.loads(f.read_text())["results"]["lambada_openai"]["ppl"]))
            c = PYTHIA_SIZES[f"pythia-{size}"]
            n.append(non_embedding(c.num_layers, c.hidden_size))
        points = sorted((r["member"], r["value"]) for r in rows
                        if r["suite"] == suite and r["task"] == "kaplan" and r["metric"] == "observed:lambada_openai:ln_perplexity")
        assert points == sorted(zip((f"pythia-{s}{tail}" for s in sizes), loss))
        fit = by_key(rows, member=f"{suite}/*")
        alpha, n_c = fit[("kaplan", "alpha")]["value"], fit[("kaplan", "N_c")]["value"]
        # an independent optimum: Nelder-Mead on the Huber loss of ln L = alpha (ln N_c - ln N), L = ln(ppl)
        x, y = np.log(n), np.log(loss)

        def huber(p):
            r = p[0] * (p[1] - x) - y
            return np.sum(np.where(np.abs(r) <= DELTA, 0.5 * r * r, DELTA * (np.abs(r) - 0.5 * DELTA)))

        best = minimize(huber, [0.1, 25.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-16,
                                                                           "maxiter": 20000})
        assert huber([alpha, np.log(n_c)]) <= best.fun * (1 + 1e-6)
        assert alpha == pytest.approx(best.x[0], rel=1e-3)
        assert 0.15 < alpha < 0.3 and fit[("kaplan", "alpha")]["stderr"] > 0  # larger models: lower loss
        assert fit[("kaplan", "n_points")]["value"] == len(sizes)
        assert fit[("kaplan", "measured_largest")]["value"] == pytest.approx(loss[-1])
        # accuracy against the task's loss: the 12b's accuracy predicted from the smaller sizes
        sig = fit[("sigmoid:lambada_openai", "relative_error_largest")]["value"]
        assert abs(sig) < 0.05
        assert fit[("sigmoid:lambada_openai", "a")]["value"] < 0 < fit[("sigmoid:lambada_openai", "k")]["value"]
        assert ("chinchilla", "E") not in fit


def test_bad_tables_get_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    synthetic_store(empty, sizes=("pythia-70m",))
    with pytest.raises(AnalysisError, match="nothing to fit.*1 size"):
        run_analyses(open_run(empty), "scaling", options={"bootstrap": 0}, progress=False)
    with pytest.raises(AnalysisError, match="no rows of metric 'perplexity'.*metrics there: val_loss"):
        run_analyses(open_run(empty), "scaling", options={"metric": "perplexity"}, progress=False)
    negative = tmp_path / "negative"
    synthetic_store(negative, value=lambda size, seed, step, v: -1.0 if (size, seed, step) == ("pythia-70m", 2, 8000)
                    else v)
    with pytest.raises(AnalysisError, match="val_loss of pythia-70m-seed2 at step 8000 is -1.0"):
        run_analyses(open_run(negative), "scaling", options={"bootstrap": 0}, progress=False)
    undefined = tmp_path / "undefined"  # NaN (an undefined metric) is stored as no value
    synthetic_store(undefined, value=lambda size, seed, step, v: float("nan") if seed == 1 else v)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_analyses(open_run(undefined), "scaling", options={"bootstrap": 0}, progress=False)
    assert any("without a value (undefined metric) left out" in str(w.message) for w in caught)
    fit = by_key(ResultsStore(undefined).rows(analysis="scaling"), member="synth/*")
    assert fit[("chinchilla", "n_points")]["value"] == 4 * 6 * 2  # seed 1's rows are not fitted
    with pytest.raises(AnalysisError, match="without checkpoints: val_loss"):
        run_analyses(open_run(undefined), "val_loss", progress=False)


def test_the_options_appear_in_pythia_analyze_help(capsys):
    from pythia.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["analyze", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--metric", "--task", "--analysis", "--min-step", "--sigmoid-tasks", "--bootstrap ", "--bootstrap-seed"):
        assert flag in text, flag
    assert "results store" in text
