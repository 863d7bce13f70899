"""Synthetic results-table rows of every analysis the report draws, in the row shapes the
analyses write (docs of pythia.report.sections.*): a suite `synth` of two sizes x four seeds,
plus imported `pythia` results. Values are smooth functions of (size, seed, step) so that tests
can recompute what a figure must show."""
from __future__ import annotations

import math
from pathlib import Path

from pythia.results import ResultsStore

SIZES = ("small", "large")
SEEDS = (1, 2, 3, 4)
STEPS = (0, 1, 2, 4, 8, 16, 32, 64)
CONT = 4  # memorization continuation length: histogram bins 0..4


def member(size: str, seed: int) -> str:
    return f"{size}-seed{seed}"


def val_loss(si: int, seed: int, step: int) -> float:
    return 7.0 - math.log1p(step) * (0.5 + 0.25 * si) - 0.03 * seed


def _row(analysis, size, seed, step, metric, value, task="", suite="synth", name=None, stderr=None) -> dict:
    return {"suite": suite, "member": name or member(size, seed), "size": size, "seed": seed, "step": step,
            "tokens": None if step is None else step * 4 * 32, "analysis": analysis, "task": task, "metric": metric,
            "value": value, "stderr": stderr}


def members():
    for si, size in enumerate(SIZES):
        for seed in SEEDS:
            yield si, size, seed


def learning_rows() -> list[dict]:
    rows = []
    for si, size, seed in members():
        rows += [_row("val_loss", size, seed, s, "val_loss", val_loss(si, seed, s)) for s in STEPS]
        rows += [_row("train_loss", size, seed, s, "train_loss", val_loss(si, seed, s) - 0.1) for s in range(1, 65)]
    return rows


def eval_rows() -> list[dict]:
    rows = []
    for si, size, seed in members():
        for s in STEPS:
            acc = 0.25 + 0.05 * si + 0.01 * math.log1p(s)
            rows += [_row("eval", size, seed, s, "acc", acc, "demo_mc", stderr=0.01),
                     _row("eval", size, seed, s, "acc_norm", acc + 0.01, "demo_mc"),
                     _row("eval", size, seed, s, "perplexity", 100 / (1 + s), "demo_lastword"),
                     _row("eval", size, seed, s, "acc", acc, "demo_mc@5shot")]
    for size in ("pythia-70m", "pythia-160m"):
        for s in (0, 1000, 143000):
            name = f"{size}-deduped"
            rows.append(_row("eval_import", size, None, s, "acc", 0.3 + s / 1e6, "demo_mc", suite="pythia", name=name))
    return rows


def memorization_rows() -> list[dict]:
    rows = []
    for si, size, seed in members():
        for s in STEPS[1:]:
            n = s * 4
            task = f"positions=0:{n}"
            frac = 0.01 * (si + 1) * math.log1p(s)
            hist = [n - 3 - si, 1, 1, 0, 1 + si]  # scores 0..CONT
            rows += [_row("memorization", size, seed, s, "sequences", n, task),
                     _row("memorization", size, seed, s, "memorized_frac", frac, task, stderr=0.001),
                     _row("memorization", size, seed, s, "mean_score", frac * 2, task)]
            rows += [_row("memorization", size, seed, s, f"score_hist_{k}", c, task) for k, c in enumerate(hist)]
            rows += [_row("memorization", size, seed, s, "memorized_frac", frac * (b + 1) / 2, f"trained_step={b * s // 2}:"
                          f"{(b + 1) * s // 2}") for b in range(2)]
            for b, (lo, hi) in enumerate(DUP_BINS):  # memorization vs duplicates: rises with the count
                task = f"duplicates={lo}:{hi}" if lo >= 0 else "duplicates=uncountable"
                rows += [_row("memorization", size, seed, s, "memorized_frac", dup_frac(si, s, b), task),
                         _row("memorization", size, seed, s, "sequences", n // 8 + b, task)]
            rows += [_row("memorization", size, seed, s, "spearman", 0.1 * (si + 1) * math.log1p(s) / 5, "duplicates"),
                     _row("memorization", size, seed, s, "countable", n - 1, "duplicates")]
    for a in ("small-seed1", "large-seed1"):
        for b in ("small-seed1", "large-seed1"):
            for s in (8, 64):
                for t in (8, 64):
                    if (a, s) == (b, t) or not (s == t or a == b):
                        continue
                    rows += [{**_row("memorization_predictability", b.split("-")[0], 1, t, m, v, f"predictor={a}@step{s}"),
                              "member": b} for m, v in (("precision", precision(a, s, b, t)), ("recall", 0.5))]
    return rows


DUP_BINS = ((1, 2), (2, 3), (3, 5), (5, 9), (-1, -1))  # duplicate-count bins [lo, hi), then uncountable


def dup_frac(si: int, step: int, b: int) -> float:
    return round(0.01 * (si + 1) * (b + 1) + step / 1000, 6)


def precision(a: str, s: int, b: str, t: int) -> float:
    return round(0.1 + 0.1 * len(a) / 10 + s / 1000 + t / 10000, 6)


def seeds_rows() -> list[dict]:
    rows = []
    for si, size in enumerate(SIZES):
        for s in STEPS:
            vals = sorted(val_loss(si, seed, s) for seed in SEEDS)
            stats = {"n": 4, "median": (vals[1] + vals[2]) / 2, "q25": vals[0] + 0.75 * (vals[1] - vals[0]),
                     "q75": vals[2] + 0.25 * (vals[3] - vals[2]), "min": vals[0], "max": vals[3], "std": 0.03}
            rows += [{**_row("seeds", size, None, s, f"val_loss:val_loss:{k}", v), "member": f"{size}/*"}
                     for k, v in stats.items()]
            rows += [{**_row("seeds", size, None, s, f"memorization:score_hist_{k}:median", 1.0), "member": f"{size}/*"}
                     for k in range(3)]
    rows += [_row("seeds", "large", 4, s, "val_loss:val_loss:outlier_z", 4.2 + s / 100) for s in (32, 64)]
    for si, size, seed in members():
        for s in STEPS:
            rows.append(_row("seeds", size, seed, s, "self_consistency", min(1.0, s / 64), "demo_mc"))
            if seed != 1:
                rows.append(_row("seeds", size, seed, s, "inter_seed", 0.5 + s / 200, "demo_mc"))
    for si, size, seed in members():
        for s in STEPS:
            rows += [_row("weights", size, seed, s, f, (k + 1) * math.log1p(s) + si) for k, f in enumerate(("l1", "l2", "trace"))]
            rows.append(_row("training_map", size, seed, s, "state", map_state(seed, s)))
            rows.append(_row("training_map", size, seed, s, "score", s / 64 - 0.5))
        rows += [_row("training_map", size, seed, None, "detour", float(seed == 3)),
                 _row("training_map", size, seed, None, "n_states", 3.0)]
    return rows


def map_state(seed: int, step: int) -> int:
    return 0 if step < 4 else (2 if seed == 3 and step < 32 else 1)


def term_rows() -> list[dict]:
    rows = []
    for si, size, seed in members():
        for s in (0, 8, 64):
            for x in range(10):
                task = f"num_reasoning_arithmetic_addition_{x}"
                rows += [_row("term_frequency", size, seed, s, "acc", term_acc(x, s), task),
                         _row("term_frequency", size, seed, s, "frequency", term_count(x, s), task)]
            rows += [_row("term_frequency", size, seed, s, "gap", 2.0 * si + s / 64, "num_reasoning_arithmetic_addition"),
                     _row("term_frequency", size, seed, s, "spearman", 0.1 * si, "num_reasoning_arithmetic_addition")]
        for s in STEPS:
            rows += [_row("term_counts", size, seed, s, "count", term_count(k, s), term) for k, term in
                     enumerate((" def", " self", " return"))]
    return rows


def term_acc(x: int, step: int) -> float:
    return min(1.0, 0.02 * x * step / 64)


def term_count(x: int, step: int) -> int:
    return x * step


def compare_rows() -> list[dict]:
    rows = []
    for s in (32, 64):
        base, fork = val_loss(0, 1, s), val_loss(0, 1, s) + 0.05
        for role, v in (("base", base), ("fork", fork), ("diff", fork - base)):
            rows.append({**_row("compare", "small", 1, s, f"val_loss:val_loss:{role}", v), "member": "small-seed1+swap"})
            rows.append({**_row("compare", "small", 1, s, f"eval:acc:{role}", v / 10, "demo_mc"),
                         "member": "small-seed1+swap"})
    return rows


def unknown_rows() -> list[dict]:
    rows = [_row("my_probe", size, seed, s, "probe_acc", 0.1 * si + s / 100) for si, size, seed in members() for s in STEPS]
    rows.append(_row("my_probe", "small", 1, None, "final_score", 0.75))
    return rows


def induction(si: int, seed: int, step: int, layer: int, head: int) -> float:
    """Head L1.H{seed % 2} of each member forms an induction head from step 8 on."""
    formed = layer == 1 and head == seed % 2 and step >= 8
    return 0.9 - 0.01 * si if formed else 0.02 * (1 + layer + head)


def icl_score(si: int, seed: int, step: int) -> float:
    return -0.1 * si - (1.0 if step >= 8 else 0.01 * step) - 0.01 * seed


def mechanism_rows() -> list[dict]:
    rows = []
    for si, size, seed in members():
        for s in STEPS:
            rows.append(_row("icl", size, seed, s, "icl_score", icl_score(si, seed, s)))
            rows += [_row("icl", size, seed, s, "loss_at_position", 5.0 - 0.1 * k.bit_length() * (s >= 8), str(k))
                     for k in (2, 4, 8, 16, 32, 33)]
            scores = {(l, h): induction(si, seed, s, l, h) for l in range(2) for h in range(2)}
            rows += [_row("heads", size, seed, s, "induction", v, f"L{l}.H{h}") for (l, h), v in scores.items()]
            rows.append(_row("heads", size, seed, s, "induction", max(scores.values()), "max"))
            rows += [_row("lens", size, seed, s, "kl_to_final", (2 - l) / (1 + s), f"layer{l}") for l in range(3)]
            rows.append(_row("lens", size, seed, s, "prediction_depth", 1.5))
        rows.append(_row("phase_change", size, seed, None, "induction_phase_step", 8.0))
        rows.append(_row("phase_change", size, seed, None, "induction_rise", 0.85))
    rows += [_row("lens", "large", 1, 64, "tuned_kl_to_final", (2 - l) / 130, f"layer{l}") for l in range(2)]
    for si, size in enumerate(SIZES):
        rows += [{**_row("phase_change", size, None, None, f"induction_phase_step:{stat}", 8.0), "member": f"{size}/*"}
                 for stat in ("n", "median", "min", "max", "std")]
    return rows


def all_rows() -> list[dict]:
    return (learning_rows() + eval_rows() + memorization_rows() + seeds_rows() + term_rows() + compare_rows()
            + unknown_rows() + mechanism_rows())


def write_store(root: Path, rows: list[dict]) -> Path:
    """A standalone results store holding `rows`, one unit per (analysis, member) (few files:
    fast to write; the table is the same however rows are split into units)."""
    store = ResultsStore(root)
    units: dict[tuple, list[dict]] = {}
    for r in rows:
        units.setdefault((r["analysis"], r["member"]), []).append(r)
    for (analysis, name), group in units.items():
        store.put(analysis, group, key={}, member=name)
    return root


PYTHIA_STEPS = tuple([0] + [2 ** k for k in range(10)] + list(range(1000, 143001, 1000)))
"""Pythia's 154 checkpoints."""


def many_rows(sizes: int = 5, seeds: int = 10, steps=PYTHIA_STEPS, tasks: int = 10) -> list[dict]:
    """A PolyPythias-shaped table (`sizes` x `seeds` members at `steps`): val_loss, eval (`tasks`
    tasks x acc, acc_norm), the 14 weights statistics, memorization by training step at the last
    step. Values are pseudo-random (a fixed seed): no two curves alike, as in a real run."""
    import random

    rng = random.Random(1234)
    names = [f"pythia-{70 * 2 ** i}m" for i in range(sizes)]
    rows = []
    for si, size in enumerate(names):
        for seed in range(1, seeds + 1):
            m = member(size, seed)
            for s in steps:
                rows.append(_row("val_loss", size, seed, s, "val_loss", 7 - math.log1p(s) / 3 + rng.random() / 10, name=m))
                rows += [_row("eval", size, seed, s, metric, rng.random(), f"task{t}", name=m)
                         for t in range(tasks) for metric in ("acc", "acc_norm")]
                rows += [_row("weights", size, seed, s, f"stat{k}", k + rng.random(), name=m) for k in range(14)]
            rows += [_row("memorization", size, seed, steps[-1], "memorized_frac", rng.random() / 100,
                          f"trained_step={b * 1000}:{(b + 1) * 1000}", name=m) for b in range(20)]
    return rows
