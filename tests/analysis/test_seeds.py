"""`seeds`: spread over seeds, outlier runs, one-seed and missing-step inputs (synthetic tables)."""
from __future__ import annotations

import statistics
import warnings

import numpy as np
import pytest

from pythia.analysis.runner import run_analyses

from .synthetic import put_series, synthetic_run

STEPS = [0, 1, 2, 4, 8, 16, 32, 64]


def stats_rows(run):
    return {(r["member"], r["step"], r["metric"]): r["value"] for r in run.results().rows(analysis="seeds")}


def test_spread_matches_statistics_module(tmp_path):
    run = synthetic_run(tmp_path, {"s": [1, 2, 3], "t": [1, 2]})
    rng = np.random.default_rng(0)
    data = {m.name: {t: float(rng.normal(3.0, 1.0)) for t in STEPS} for m in run.members}
    for name, values in data.items():
        put_series(run, "val_loss", name, "val_loss", values)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert run_analyses(run, "seeds", progress=False).ok
    got = stats_rows(run)
    for shape, names in (("s", ["s-seed1", "s-seed2", "s-seed3"]), ("t", ["t-seed1", "t-seed2"])):
        assert got[(f"{shape}/*", None, "n_seeds")] == len(names)
        for t in STEPS:
            vals = [data[n][t] for n in names]
            q1, q2, q3 = statistics.quantiles(vals, n=4, method="inclusive")
            want = {"n": len(vals), "median": statistics.median(vals), "q25": q1, "q75": q3, "min": min(vals),
                    "max": max(vals), "std": statistics.stdev(vals)}
            for stat, v in want.items():
                assert got[(f"{shape}/*", t, f"val_loss:val_loss:{stat}")] == pytest.approx(v, rel=1e-12), (shape, t, stat)
            assert q2 == pytest.approx(want["median"])
    row = next(r for r in run.results().rows(analysis="seeds") if r["member"] == "s/*" and r["step"] == 4)
    assert row["size"] == "s" and row["task"] == ""


def test_outlier_run_is_flagged_on_its_steps_only(tmp_path):
    seeds = [0, 1, 2, 3, 4, 5]
    run = synthetic_run(tmp_path, {"m": seeds})
    rng = np.random.default_rng(1)
    for s in seeds:
        curve = {t: 5.0 / (1 + t) + float(rng.normal(0, 0.01)) for t in STEPS}
        if s == 3:  # goes astray from step 16 on
            curve.update({t: curve[t] + 0.5 for t in (16, 32, 64)})
        if s == 4:  # one single-checkpoint blip: not a run going astray
            curve[8] += 0.5
        put_series(run, "val_loss", f"m-seed{s}", "val_loss", curve)
        put_series(run, "eval", f"m-seed{s}", "acc", {t: 0.5 + float(rng.normal(0, 0.01)) for t in STEPS}, task="sciq")
    assert run_analyses(run, "seeds", progress=False).ok
    flagged = {(r["member"], r["metric"], r["step"]) for r in run.results().rows(analysis="seeds")
               if r["metric"].endswith(":outlier_z")}
    assert flagged == {("m-seed3", "val_loss:val_loss:outlier_z", t) for t in (16, 32, 64)}
    table = (run.results_dir / "artifacts" / "seeds" / "outliers.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["member", "size", "analysis", "task", "metric", "steps", "max_abs_z"]
    assert [line.split("\t")[:6] for line in table[1:]] == [["m-seed3", "m", "val_loss", "", "val_loss", "16,32,64"]]
    z = next(r for r in run.results().rows(analysis="seeds") if r["metric"] == "val_loss:val_loss:outlier_z")
    assert z["value"] > 3.5 and z["seed"] == 3 and z["size"] == "m"


def test_a_single_blip_is_flagged_with_outlier_steps_1(tmp_path):
    seeds = [0, 1, 2, 3]
    run = synthetic_run(tmp_path, {"m": seeds})
    for s in seeds:
        put_series(run, "val_loss", f"m-seed{s}", "val_loss", {t: 1.0 + 0.01 * s + (1.0 if (s, t) == (2, 8) else 0)
                                                               for t in STEPS})
    assert run_analyses(run, "seeds", options={"outlier_steps": 1}, progress=False).ok
    flagged = [(r["member"], r["step"]) for r in run.results().rows(analysis="seeds") if r["metric"].endswith("outlier_z")]
    assert flagged == [("m-seed2", 8)]


def test_one_seed_per_shape_says_so_without_nans(tmp_path):
    run = synthetic_run(tmp_path, {"a": [1], "b": [7]})
    for m in run.members:
        put_series(run, "val_loss", m.name, "val_loss", {0: 1.0, 1: 0.5})
    with pytest.warns(UserWarning, match=r"shape a has a single seed \(a-seed1\)"):
        assert run_analyses(run, "seeds", progress=False).ok
    rows = run.results().rows(analysis="seeds")
    assert [(r["member"], r["metric"], r["value"]) for r in rows] == [("a/*", "n_seeds", 1.0), ("b/*", "n_seeds", 1.0)]
    assert "nan" not in (run.results_dir / "results.csv").read_text().lower()


def test_missing_steps_are_dropped_with_a_warning(tmp_path):
    run = synthetic_run(tmp_path, {"m": [1, 2, 3]})
    for m in run.members:
        steps = [t for t in STEPS if not (m.seed == 2 and t in (32, 64))]
        put_series(run, "val_loss", m.name, "val_loss", {t: 1.0 / (1 + t) + m.seed for t in steps})
    with pytest.warns(UserWarning, match=r"because a seed lacks them.*shape m: steps 32, 64 \(m-seed2 lacks them\) for val_loss:val_loss"):
        assert run_analyses(run, "seeds", progress=False).ok
    steps = sorted({r["step"] for r in run.results().rows(analysis="seeds") if r["metric"].endswith(":median")})
    assert steps == STEPS[:-2]


def test_selection_of_summarised_analyses_and_determinism(tmp_path):
    run = synthetic_run(tmp_path, {"m": [1, 2]})
    for m in run.members:
        put_series(run, "val_loss", m.name, "val_loss", {0: 1.0 + m.seed, 4: 0.5})
        put_series(run, "train_loss", m.name, "train_loss", {0: 2.0 + m.seed, 1: 1.5})
    run_analyses(run, "seeds", progress=False)
    unit = run.results_dir / "units" / "seeds" / "_run.json"
    first = unit.read_bytes()
    assert {r["metric"].split(":")[0] for r in run.results().rows(analysis="seeds") if ":" in r["metric"]} == {"val_loss"}
    run_analyses(run, "seeds", progress=False, force=True)
    assert unit.read_bytes() == first
    assert run_analyses(run, "seeds", progress=False).cached == ["seeds"]
    run.results().put("training_map", [{"member": "m-seed1", "step": 0, "metric": "state", "value": 0.0}],
                      key={"other": 1})  # a unit seeds does not read: still cached
    assert run_analyses(run, "seeds", progress=False).cached == ["seeds"]
    run.results().put("val_loss", [{"member": "m-seed1", "step": 4, "metric": "val_loss", "value": 0.25}],
                      key={"test": 2}, member="m-seed1", step=4)  # an input recomputed: so is seeds
    assert run_analyses(run, "seeds", progress=False).computed == ["seeds"]
    run_analyses(run, "seeds", options={"seed_analyses": "train_loss"}, progress=False)
    assert {r["metric"].split(":")[0] for r in run.results().rows(analysis="seeds") if ":" in r["metric"]} == {"train_loss"}


def test_robust_score_is_calibrated_on_well_behaved_seeds():
    """Normal noise whose spread shrinks 100x along the schedule: few false flags, a real shift found."""
    from pythia.analysis._seedstats import flagged, robust_z

    rng = np.random.default_rng(7)
    scale = np.logspace(0, -2, 30)
    false_runs = [sum(flagged(z).size > 0 for z in robust_z(rng.normal(size=(10, 30)) * scale)) for _ in range(100)]
    assert sum(false_runs) / (100 * 10) < 0.02
    m = rng.normal(size=(10, 30)) * scale
    m[4, 20:] += 8 * scale[20:]
    assert list(flagged(robust_z(m)[4])) == list(range(20, 30))
    same_start = np.ones((5, 3))  # identical inits at step 0: no division by zero, no flag
    assert not np.any(robust_z(same_start))


def test_discrete_metric_scale_is_never_finer_than_one_step():
    """Accuracy on 48 items: three seeds agree exactly (MAD 0). One item's difference is not an
    outlier; five items' difference at two consecutive checkpoints is."""
    from pythia.analysis._seedstats import flagged, resolution, robust_z

    same = np.array([10, 12, 15, 20, 24, 30]) / 48
    near = np.vstack([same, same, same, same + np.array([0, 1, 0, 1, 0, 0]) / 48])
    assert resolution(near) == pytest.approx(1 / 48)
    assert np.abs(robust_z(near)).max() == pytest.approx(1.0)  # was ~1e5 with a MAD of 0
    assert flagged(robust_z(near)[3]).size == 0
    far = np.vstack([same, same, same, same + np.array([0, 0, 5, 5, 0, 0]) / 48])
    assert flagged(robust_z(far)[3]).tolist() == [2, 3]
    assert resolution(np.full((4, 3), 0.5)) == 0.0


def test_spreads_of_all_steps_are_each_steps_spread_bit_for_bit():
    """The statistics of a whole (seeds, steps) matrix at once equal `spread` of each step."""
    from pythia.analysis._seedstats import spread, spreads

    rng = np.random.default_rng(11)
    for n in (2, 3, 4, 7, 8, 9, 10, 13):
        m = rng.normal(size=(n, 20)) * 10 ** rng.uniform(-4, 4)
        m[:, 3] = np.round(m[:, 3] * 48) / 48  # ties
        got = spreads(m)
        for j in range(m.shape[1]):
            for stat, value in spread(m[:, j]).items():
                assert got[stat][j] == value, (n, j, stat)
