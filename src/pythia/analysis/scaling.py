"""`scaling`: scaling laws fitted to the results table (`pythia.scaling`), per suite.

From the table's rows of one metric (default `val_loss`; `--metric`, `--task`, `--analysis`
pick any other), each suite in the table is a series, its sizes the points' N (non-embedding
parameters: the member's shape in the run's spec, else the Pythia size named by the row's
`size`, as for imported results) and its checkpoints the points' D (the row's tokens); seeds
are replicates (every seed is a point). A perplexity is fitted as its loss, ln(perplexity).

- `chinchilla`: L(N, D) = E + A/N^alpha + B/D^beta on every checkpoint from `--min-step` on
  (default: 10% of the series' last step, as OLMo's ladder skips the first 10%: warmup and the
  first plateau follow no power law), when the series has two sizes and two token counts;
- `kaplan`: L(N) = (N_c/N)^alpha at the last step that most sizes share;
- `sigmoid:{task}`: accuracy = a / (1 + e^(-k (L - L0))) + b against the task's loss
  ln(perplexity), for every task with both (`--sigmoid-tasks`; OLMo's ladder, step 2).

Rows of a fit (member `{suite}/*`): its parameters with bootstrap standard errors (E, A, B, alpha,
beta; alpha, N_c; a, k, L0, b), `n_points`, `n_sizes`, `n_steps`, and the fit-small-predict-large
check: the law fitted without the largest size predicts it at its last step
(`predicted_largest`, with the bootstrap's stderr), against the mean over its seeds
(`measured_largest`), `relative_error_largest` = predicted / measured - 1. For the report: the
fitted points (member rows, metric `observed:` + the quantity fitted: `observed:val_loss`,
`observed:lambada_openai:ln_perplexity`; sigmoid: `task_loss` and `accuracy`), the curve and its 95% bootstrap band at them (`fit`,
`fit_lo`, `fit_hi`, member `{shape}/*` for chinchilla and kaplan) and each size's N (`N`).
"""
from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .. import scaling as laws
from ..config import TOKENIZER_VOCAB, custom_config, model_config
from .base import Analysis, AnalysisError, Option, register

CAVEAT = ("D comes from intermediate checkpoints of one schedule: every member shares one cosine learning-rate "
          "schedule, and an intermediate checkpoint is not the end of a shorter run, so fitting D on them biases "
          "beta (Hoffmann et al. 2022's own warning); an unbiased beta needs final checkpoints of runs of "
          "different lengths")
MIN_STEP_FRACTION = 0.1
SKIP = ("scaling", "seeds", "training_map")
"""Analyses whose rows are never fitted (their metrics are statistics of other rows)."""
OBSERVED = "observed:"
"""Prefix of the fitted points' metric (`observed:val_loss`): never the source metric's own name."""


@dataclass(frozen=True)
class Point:
    suite: str
    member: str
    shape: str
    size: str | None
    seed: int | None
    step: int
    tokens: float | None
    N: float
    value: float


def quantity(metric: str, task: str) -> str:
    """What a fit is of: the metric, ln of a perplexity, prefixed by its task."""
    name = f"ln_{metric}" if is_perplexity(metric) else metric
    return f"{task}:{name}" if task else name


def is_perplexity(metric: str) -> bool:
    return metric.endswith("perplexity")


def shape_label(shape: str) -> str:
    return f"{shape}/*"


def series_label(suite: str) -> str:
    return f"{suite}/*"


@register
class Scaling(Analysis):
    name = "scaling"
    summary = "scaling laws over sizes and checkpoints: Chinchilla L(N, D), Kaplan L(N), accuracy vs task loss"
    scope = "run"
    version = 1
    options = (
        Option("metric", str, "val_loss", "metric fitted (a perplexity is fitted as ln(perplexity))"),
        Option("task", str, None, "task of the metric (needed when the metric has several)"),
        Option("analysis", str, None, "analysis whose rows are fitted (needed when several have the metric)"),
        Option("min_step", int, None, "fit checkpoints from this step on (default: a tenth of the last step)"),
        Option("sigmoid_tasks", str, "auto", "tasks whose accuracy is fitted against ln(perplexity): a comma "
               "list, auto (every task with both) or none"),
        Option("accuracy", str, "acc", "the accuracy metric of --sigmoid-tasks"),
        Option("bootstrap", int, laws.BOOTSTRAP, "bootstrap resamples for standard errors and bands (0: none)"),
        Option("bootstrap_seed", int, 0, "seed of the bootstrap's resampling"),
    )

    def reads(self, analysis: str) -> bool:
        if self.opts["analysis"]:
            return analysis == self.opts["analysis"]
        return analysis not in SKIP

    def compute_run(self, run, store, members) -> list[dict]:
        counts = _param_counts(run)
        forks = {m.name for m in run.members if getattr(m, "base", None) is not None}
        wanted = [self.opts["metric"], "perplexity", self.opts["accuracy"]]
        table = [r for r in store.rows(metric=wanted, analysis=self.opts["analysis"] or None)  # one read
                 if r["analysis"] not in SKIP]
        points = self._points(store, table, self.opts["metric"], self.opts["task"], counts, forks, run.name)
        out, reasons = [], []
        for suite, pts in sorted(points.items()):
            q = quantity(self.opts["metric"], pts[0][0])
            pts = [p for _, p in pts]
            out += self._chinchilla(suite, q, pts, reasons)
            out += self._kaplan(suite, q, pts, reasons)
        out += self._sigmoids(table, counts, forks, run.name, reasons)
        if not any(r["metric"] == "n_points" for r in out):
            raise AnalysisError("scaling: nothing to fit: " + "; ".join(reasons))
        for reason in reasons:
            warnings.warn(f"scaling: {reason}", stacklevel=2)
        return out

    # -- inputs --------------------------------------------------------------------------------
    def _select(self, store, table, metric: str, task: str | None) -> list[dict]:
        rows = [r for r in table if r["metric"] == metric and (task is None or (r.get("task") or "") == task)]
        if not rows:
            known = sorted({r["metric"] for r in store.rows(analysis=self.opts["analysis"] or None)
                            if r["analysis"] not in SKIP})
            raise AnalysisError(f"scaling: no rows of metric {metric!r}"
                                + (f" (task {task!r})" if task else "")
                                + (f" from analysis {self.opts['analysis']!r}" if self.opts["analysis"] else "")
                                + f" in {store.root}; metrics there: {_few(known)}")
        by_suite = defaultdict(set)
        for r in rows:
            by_suite[r.get("suite") or ""].add((r["analysis"], r.get("task") or ""))
        for suite, keys in by_suite.items():
            analyses = sorted({a for a, _ in keys})
            if len(analyses) > 1:
                raise AnalysisError(f"scaling: metric {metric!r} of suite {suite!r} comes from analyses "
                                    f"{', '.join(analyses)}: pick one with --analysis")
            tasks = sorted({t for _, t in keys})
            if len(tasks) > 1:
                raise AnalysisError(f"scaling: metric {metric!r} of suite {suite!r} has tasks "
                                    f"{_few(tasks)}: pick one with --task")
        return rows

    def _points(self, store, table, metric, task, counts, forks, run_name) -> dict[str, list]:
        """{suite: [(task, Point)]} of the chosen metric; rows without a value or N are dropped
        with a warning, non-positive values refused."""
        rows = self._select(store, table, metric, task)
        out, undefined, unknown = defaultdict(list), [], set()
        for r in rows:
            if r["member"] in forks or r.get("step") is None:
                continue
            if r.get("value") is None:
                undefined.append(f"{r['member']}@{r['step']}")
                continue
            value = float(r["value"])
            if is_perplexity(metric):
                if value <= 0:
                    raise AnalysisError(f"scaling: {metric} of {r['member']} at step {r['step']} is {value!r}; "
                                        "a perplexity is >= 1")
                value = float(np.log(value))
            elif value <= 0:
                raise AnalysisError(f"scaling: {metric} of {r['member']} at step {r['step']} is {value!r}; a loss "
                                    "fitted by a power law must be positive")
            n = _n_of(r, counts)
            if n is None:
                unknown.add(r["member"])
                continue
            out[r.get("suite") or run_name].append((r.get("task") or "", _point(r, n, value, run_name)))
        if undefined:
            warnings.warn(f"scaling: {len(undefined)} {metric} row(s) without a value (undefined metric) left out: "
                          f"{_few(undefined)}", stacklevel=3)
        if unknown:
            warnings.warn(f"scaling: no parameter count for {_few(sorted(unknown))} (not a member of the run's spec "
                          "and no Pythia size in the row's size): left out", stacklevel=3)
        if not out:
            raise AnalysisError(f"scaling: no usable {metric} rows (see the warnings above)")
        return out

    def _min_step(self, pts: list[Point]) -> float:
        if self.opts["min_step"] is not None:
            return self.opts["min_step"]
        return MIN_STEP_FRACTION * max(p.step for p in pts)

    # -- the fits ------------------------------------------------------------------------------
    def _chinchilla(self, suite: str, q: str, pts: list[Point], reasons: list[str]) -> list[dict]:
        lo = self._min_step(pts)
        use = [p for p in pts if p.step >= lo and p.tokens]
        shapes, steps = {p.shape for p in use}, {p.step for p in use}
        if len(use) < laws.MIN_POINTS or len(shapes) < 2 or len({p.tokens for p in use}) < 2:
            reasons.append(f"{suite}: no chinchilla fit ({len(use)} points with tokens from step {lo:g} on, "
                           f"{len(shapes)} size(s), {len(steps)} step(s); it needs {laws.MIN_POINTS} points, "
                           "2 sizes and 2 token counts)")
            return []
        fit = self._try(f"{suite}: no chinchilla fit", reasons, laws.fit_chinchilla, use, lambda p: (p.N, p.tokens),
                        lambda p: p.value)
        if fit is None:
            return []
        if len(steps) > 1:
            warnings.warn(f"scaling: {suite}: {CAVEAT}", stacklevel=3)
        out = self._rows(suite, "chinchilla", fit, use, lambda p: (p.N, p.tokens), q)
        return out + self._check(suite, "chinchilla", use, laws.fit_chinchilla, lambda p: (p.N, p.tokens),
                                 lambda p: p.value, reasons)

    def _kaplan(self, suite: str, q: str, pts: list[Point], reasons: list[str]) -> list[dict]:
        by_step = defaultdict(set)
        for p in pts:
            by_step[p.step].add(p.shape)
        step = max(by_step, key=lambda s: (len(by_step[s]), s))
        use = [p for p in pts if p.step == step]
        if len(use) < laws.MIN_POINTS or len(by_step[step]) < 2:
            reasons.append(f"{suite}: no kaplan fit ({len(use)} points of {len(by_step[step])} size(s) at step "
                           f"{step}; it needs {laws.MIN_POINTS} points and 2 sizes)")
            return []
        fit = self._try(f"{suite}: no kaplan fit", reasons, laws.fit_kaplan, use, lambda p: (p.N,), lambda p: p.value)
        if fit is None:
            return []
        out = self._rows(suite, "kaplan", fit, use, lambda p: (p.N,), q)
        return out + self._check(suite, "kaplan", use, laws.fit_kaplan, lambda p: (p.N,), lambda p: p.value, reasons)

    def _sigmoids(self, table, counts, forks, run_name, reasons) -> list[dict]:
        choice = (self.opts["sigmoid_tasks"] or "none").strip()
        if choice == "none":
            return []
        acc_name = self.opts["accuracy"]
        losses = [r for r in table if r["metric"] == "perplexity"]
        accs = [r for r in table if r["metric"] == acc_name]
        have = sorted({r.get("task") or "" for r in losses} & {r.get("task") or "" for r in accs} - {""})
        tasks = have if choice == "auto" else [t.strip() for t in choice.split(",") if t.strip()]
        missing = [t for t in tasks if t not in have]
        if missing:
            raise AnalysisError(f"scaling: --sigmoid-tasks {', '.join(missing)}: no task with both perplexity and "
                                f"{acc_name} rows of that name; tasks with both: {_few(have)}")
        out = []
        for task in tasks:
            acc = {(r["member"], r["step"]): r.get("value") for r in accs if (r.get("task") or "") == task}
            series = defaultdict(list)
            for r in losses:
                key = (r["member"], r.get("step"))
                if ((r.get("task") or "") != task or r["member"] in forks or key[1] is None or not r.get("value")
                        or r["value"] <= 0 or acc.get(key) is None):
                    continue
                n = _n_of(r, counts)
                if n is not None:
                    p = _point(r, n, float(np.log(r["value"])), run_name)
                    series[p.suite].append((p, float(acc[key])))
            for suite, pairs in sorted(series.items()):
                out += self._sigmoid(suite, task, pairs, reasons)
        return out

    def _sigmoid(self, suite, task, pairs, reasons) -> list[dict]:
        lo = self._min_step([p for p, _ in pairs])
        pairs = [(p, a) for p, a in pairs if p.step >= lo]
        label = f"sigmoid:{task}"
        if len(pairs) < laws.MIN_POINTS or len({p.value for p, _ in pairs}) < 4:
            reasons.append(f"{suite}: no {label} fit ({len(pairs)} points from step {lo:g} on; it needs "
                           f"{laws.MIN_POINTS} points with 4 different losses)")
            return []
        # a Point whose value is the accuracy and whose N field carries nothing the fit reads
        use = [Point(p.suite, p.member, p.shape, p.size, p.seed, p.step, p.tokens, p.N, a) for p, a in pairs]
        loss = {(p.member, p.step): p.value for p, _ in pairs}
        x = lambda p: (loss[(p.member, p.step)],)  # noqa: E731
        fit = self._try(f"{suite}: no {label} fit", reasons, laws.fit_sigmoid, use, x, lambda p: p.value)
        if fit is None:
            return []
        out = _params(suite, label, fit) + _counts(suite, label, use)
        lo_b, hi_b = fit.band([x(p)[0] for p in use])
        for p, m, a, b in zip(use, fit.predict([x(p)[0] for p in use]), lo_b, hi_b):
            out += [_member_row(p, label, metric, v) for metric, v in
                    (("task_loss", x(p)[0]), ("accuracy", p.value), ("fit", m), ("fit_lo", a), ("fit_hi", b))]
        return out + self._check(suite, label, use, laws.fit_sigmoid, x, lambda p: p.value, reasons)

    def _try(self, what: str, reasons: list[str], law, pts, x, y):
        """`law` fitted to the points (x(p) its inputs, y(p) its output); None, with the reason
        in `reasons`, when the points leave it undefined (pythia.scaling.ScalingError)."""
        try:
            return law(*zip(*(x(p) for p in pts)), [y(p) for p in pts], bootstrap=self.opts["bootstrap"],
                       seed=self.opts["bootstrap_seed"])
        except laws.ScalingError as exc:
            reasons.append(f"{what} ({exc})")
            return None

    def _rows(self, suite, task, fit, use, x, q) -> list[dict]:
        """Parameters, counts, the curve and band per (size, step), each size's N, the points."""
        out = _params(suite, task, fit) + _counts(suite, task, use)
        cells = {}
        for p in use:
            cells[(p.shape, p.step)] = p
        cells = sorted(cells.values(), key=lambda p: (p.N, p.step))
        xs = list(zip(*(x(p) for p in cells)))
        lo, hi = fit.band(*xs)
        for p, m, a, b in zip(cells, fit.predict(*xs), lo, hi):
            out += [_shape_row(p, task, metric, v) for metric, v in (("fit", m), ("fit_lo", a), ("fit_hi", b))]
        sizes = {p.shape: p for p in use}
        out += [dict(_shape_row(p, task, "N", p.N), step=None, tokens=None) for p in sizes.values()]
        out += [_member_row(p, task, OBSERVED + q, p.value) for p in use]
        return out

    def _check(self, suite, task, use, law, x, y, reasons) -> list[dict]:
        """Fit without the largest size; predict it at its last step (mean x over its seeds there)."""
        largest = max(use, key=lambda p: p.N).shape
        rest = [p for p in use if p.shape != largest]
        if len({p.shape for p in rest}) < 2 or len(rest) < laws.MIN_POINTS:
            reasons.append(f"{suite}: no {task} check of the largest size ({largest}): the other sizes "
                           f"({len({p.shape for p in rest})}, {len(rest)} points) are too few to fit")
            return []
        held = self._try(f"{suite}: no {task} check of the largest size ({largest})", reasons, law, rest, x, y)
        if held is None:
            return []
        last = max(p.step for p in use if p.shape == largest)
        target = [p for p in use if p.shape == largest and p.step == last]
        at = [float(np.mean(v)) for v in zip(*(x(p) for p in target))]
        measured = np.array([y(p) for p in target])
        predicted = float(held.predict(*at))
        se = float(held.predict_stderr(*at))
        first = target[0]
        row = {"member": series_label(suite), "suite": suite, "size": first.size, "step": last,
               "tokens": first.tokens, "task": task}
        return [dict(row, metric="predicted_largest", value=predicted, stderr=se if np.isfinite(se) else None),
                dict(row, metric="measured_largest", value=float(measured.mean()),
                     stderr=float(measured.std(ddof=1) / np.sqrt(measured.size)) if measured.size > 1 else None),
                dict(row, metric="relative_error_largest", value=predicted / float(measured.mean()) - 1.0)]


# ---------------------------------------------------------------------------------------------
# rows


def _params(suite: str, task: str, fit) -> list[dict]:
    return [{"member": series_label(suite), "suite": suite, "task": task, "metric": k, "value": v,
             "stderr": fit.stderr.get(k) if np.isfinite(fit.stderr.get(k, np.nan)) else None}
            for k, v in fit.params.items()] + [
            {"member": series_label(suite), "suite": suite, "task": task, "metric": "n_bootstrap",
             "value": float(len(fit.samples))}]


def _counts(suite: str, task: str, use: list[Point]) -> list[dict]:
    row = {"member": series_label(suite), "suite": suite, "task": task}
    return [dict(row, metric="n_points", value=float(len(use))),
            dict(row, metric="n_sizes", value=float(len({p.shape for p in use}))),
            dict(row, metric="n_steps", value=float(len({p.step for p in use})))]


def _shape_row(p: Point, task: str, metric: str, value: float) -> dict:
    return {"member": shape_label(p.shape), "suite": p.suite, "size": p.size, "seed": None, "step": p.step,
            "tokens": p.tokens, "task": task, "metric": metric, "value": float(value)}


def _member_row(p: Point, task: str, metric: str, value: float) -> dict:
    return {"member": p.member, "suite": p.suite, "size": p.size, "seed": p.seed, "step": p.step,
            "tokens": p.tokens, "task": task, "metric": metric, "value": float(value)}


# ---------------------------------------------------------------------------------------------
# who is who


def _param_counts(run) -> dict[str, float]:
    """Non-embedding parameters of the run's members, from its spec's shapes (they do not depend
    on the vocabulary, so a custom shape without vocab_size gets the tokenizer's)."""
    if run.spec is None:
        return {m.name: float(m.config.num_params(non_embedding=True)) for m in run.members if m.config is not None}
    shapes = {}
    for ms in run.spec.members:
        config = model_config(ms.size) if ms.size else custom_config(
            name=ms.name, num_layers=ms.num_layers, hidden_size=ms.hidden_size, num_heads=ms.num_heads,
            vocab_size=ms.vocab_size or TOKENIZER_VOCAB)
        shapes[ms.name] = float(config.num_params(non_embedding=True))
    return {m.name: shapes[m.shape] for m in run.members if m.shape in shapes}


def _n_of(row: dict, counts: dict[str, float]) -> float | None:
    if row["member"] in counts:
        return counts[row["member"]]
    for name in (row.get("size"), row["member"]):
        if name:
            try:
                return float(model_config(name).num_params(non_embedding=True))
            except ValueError:
                continue
    return None


def _point(row: dict, n: float, value: float, run_name: str) -> Point:
    member = row["member"]
    return Point(suite=row.get("suite") or run_name, member=member, shape=re.sub(r"-seed\d+$", "", member),
                 size=row.get("size"), seed=row.get("seed"), step=int(row["step"]),
                 tokens=float(row["tokens"]) if row.get("tokens") else None, N=n, value=value)


def _few(items, n: int = 8) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f", ... ({len(items)} in all)" if len(items) > n else "") if items else "none"
