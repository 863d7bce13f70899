"""`seeds`: how much of a run survives another seed (PolyPythias, van der Wal et al., ICLR 2025).

From the results table, for every shape (members that differ only by seed) and every (analysis,
task, metric, step): n, median, q25, q75, min, max and std over the seeds -- PolyPythias plots
the median and the 25/75% quantiles (EleutherAI/pythia `polypythias/plots.ipynb`). Rows:
member `{shape}/*`, metric `{analysis}:{metric}:{stat}`, the source's task, the step.

Outlier runs: each seed's trajectory is scored against the other seeds of its shape, step by
step: its distance from the other seeds' median over a robust scale (MAD of the seeds'
leave-one-out deviations pooled over neighbouring checkpoints; why, in `_seedstats`); a (member,
metric) is flagged at the steps where |z| > 3.5 (Iglewicz & Hoaglin's cut-off) for at least 2
consecutive checkpoints (`--outlier-z`, `--outlier-steps`). Needs >= 4 seeds (3 others). Flags
are rows `{analysis}:{metric}:outlier_z` of the member at each flagged step (value = z) and the
table `artifacts/seeds/outliers.tsv` (member, size, analysis, task, metric, steps, max_abs_z).

Agreement (when the `eval` sweep stored per-item outcomes): `self_consistency` (Cohen's kappa
with the same member's final checkpoint) and `inter_seed` (kappa with the reference seed's
member at the same step), per task and step, as rows of the member; their spread over seeds
follows like any metric (`seeds:self_consistency:median`, ...). See `_agreement`.

A shape with one seed gets a row `n_seeds` = 1 and a warning instead of statistics; steps that
some members lack are dropped from that metric's statistics with a warning naming them.
"""
from __future__ import annotations

import warnings
from collections import defaultdict

import numpy as np

from ..io import write_text_atomic
from ._agreement import agreement_rows
from ._seedstats import MIN_OTHERS, Z_THRESHOLD, align, flagged, robust_z, spreads
from .base import Analysis, Option, register

SKIP_BY_DEFAULT = ("seeds", "training_map", "train_loss", "memorization_predictability", "term_counts",
                   "term_frequency", "trace", "trace_contamination", "representations", "optimizer_state", "heads",
                   "phase_change", "seed_convergence", "scaling")
"""Not summarised unless named: this analysis, the categorical map states, the per-update
training log (one row per update; summarise it with --seed-analyses train_loss), the pairwise
predictability of memorized sets (one task per predictor checkpoint, not a measure of one
model), term counts and a benchmark's contamination (properties of the training order, not of
the model), the term-frequency join (its accuracies are the eval rows, summarised there), traced
texts (each member's own), the per-matrix statistics of representations and optimizer_state and
the per-head scores (dozens of matrices or heads per checkpoint, and head h of one seed is not
head h of another), and the whole-run analyses that already compare seeds or sizes
(representations' CKA across seeds, phase_change's spread, seed_convergence, scaling)."""


def shapes_of(members) -> dict[str, list]:
    """{shape: members sorted by seed} in first-seen shape order."""
    shapes: dict[str, list] = {}
    for m in members:
        shapes.setdefault(m.shape, []).append(m)
    return {s: sorted(ms, key=lambda m: (m.seed is not None, m.seed or 0, m.name)) for s, ms in shapes.items()}


def summary_label(shape: str) -> str:
    """The member column of shape-level rows."""
    return f"{shape}/*"


@register
class Seeds(Analysis):
    name = "seeds"
    summary = "spread over seeds (median, quartiles, min, max, std), outlier runs, per-item agreement (kappa)"
    scope = "run"
    version = 1
    options = (
        Option("seed_analyses", str, None, "comma list of analyses to summarise over seeds (default: every one in "
               "the table except seeds, training_map, train_loss, memorization_predictability, "
               "term_counts and term_frequency)"),
        Option("outlier_z", float, Z_THRESHOLD, "flag a seed where its robust z against the other seeds exceeds this"),
        Option("outlier_steps", int, 2, "... for at least this many consecutive checkpoints"),
        Option("reference_seed", int, None, "seed that inter-seed agreement compares with (default: each shape's "
               "lowest seed)"),
    )

    def reads(self, analysis: str) -> bool:
        chosen = self._chosen()
        return analysis in chosen if chosen else analysis not in SKIP_BY_DEFAULT

    def _chosen(self) -> list[str]:
        return [n.strip() for n in (self.opts["seed_analyses"] or "").split(",") if n.strip()]

    def compute_run(self, run, store, members) -> list[dict]:
        members = [m for m in members if getattr(m, "base", None) is None]  # forks are not seeds
        shapes = shapes_of(members)
        agreement, references = agreement_rows(run.results_dir, shapes, self.opts["reference_seed"])
        series = self._inputs(store, members, agreement)
        out, flags, dropped = list(agreement), [], defaultdict(list)
        for shape, ms in shapes.items():
            out.append({"member": summary_label(shape), "size": shape, "step": None, "metric": "n_seeds",
                        "value": float(len(ms))})
            if len(ms) < 2:
                warnings.warn(f"seeds: shape {shape} has a single seed ({ms[0].name}): no spread over seeds",
                              stacklevel=2)
                continue
            for key in sorted(series):
                is_inter = (key[0], key[2]) == (self.name, "inter_seed")  # the reference seed has none
                seeds = [m for m in ms if not (is_inter and m.name == references.get(shape))]
                rows, shape_flags = self._one_metric(shape, seeds, key, series[key], dropped)
                out += rows
                flags += shape_flags
            if len(ms) - 1 < MIN_OTHERS:
                warnings.warn(f"seeds: shape {shape} has {len(ms)} seeds; outlier scores need at least "
                              f"{MIN_OTHERS + 1}", stacklevel=2)
        _warn_dropped(dropped)
        self._write_outliers(run, flags)
        return out + [row for f in flags for row in f["rows"]]

    def _inputs(self, store, members, agreement: list[dict]) -> dict[tuple, dict[str, tuple]]:
        """{(analysis, task, metric): {member: (steps, values)}} of the summarised analyses' rows
        and the agreement rows, steps ascending: read as one frame (only the members' rows of
        the analyses summarised), grouped with arrays rather than a dict per row."""
        import pandas as pd

        names = [n for n in store.analyses() if self.reads(n)]
        wanted = [m.name for m in members]
        parts = []
        if names and wanted:
            parts.append(_plain(store.frame(analysis=names, member=wanted)))
        if agreement:
            parts.append(pd.DataFrame({"analysis": self.name, "task": [r["task"] for r in agreement],
                                       "metric": [r["metric"] for r in agreement],
                                       "member": [r["member"] for r in agreement],
                                       "step": [r["step"] for r in agreement],
                                       "value": [r["value"] for r in agreement]}))
        if not parts:
            return {}
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        frame = frame[frame["step"].notna() & frame["value"].notna() & frame["member"].isin(wanted)]
        series: dict[tuple, dict[str, tuple]] = defaultdict(dict)
        steps_all = frame["step"].to_numpy().astype(np.int64)
        values_all = frame["value"].to_numpy(dtype=np.float64)
        for (analysis, task, metric, member), idx in frame.groupby(["analysis", "task", "metric", "member"],
                                                                   sort=False).indices.items():
            steps, values = steps_all[idx], values_all[idx]
            order = np.argsort(steps, kind="stable")
            series[(analysis, task, metric)][member] = (steps[order], values[order])
        return series

    def _one_metric(self, shape, members, key, by_member, dropped) -> tuple[list[dict], list[dict]]:
        analysis, task, metric = key
        present = {m.name: by_member[m.name] for m in members if m.name in by_member}
        absent = [m.name for m in members if m.name not in present]
        if not present:
            return [], []
        if absent:
            dropped[(shape, "all steps", tuple(absent))].append(f"{analysis}:{metric}" + (f"@{task}" if task else ""))
        steps, matrix, lacking = align(present)
        for name, missing in lacking.items():
            dropped[(shape, _compact(missing), (name,))].append(f"{analysis}:{metric}" + (f"@{task}" if task else ""))
        if len(present) < 2 or not steps:
            return [], []
        tokens = _tokens(members[0])
        label, stats = summary_label(shape), spreads(matrix)
        columns = [(stat, values.tolist()) for stat, values in stats.items()]
        rows = []
        for j, step in enumerate(steps):
            for stat, values in columns:
                rows.append({"member": label, "size": shape, "step": step, "tokens": tokens(step),
                             "task": task, "metric": f"{analysis}:{metric}:{stat}", "value": values[j]})
        return rows, self._flags(shape, list(present), key, steps, matrix)

    def _flags(self, shape, names, key, steps, matrix) -> list[dict]:
        if len(names) - 1 < MIN_OTHERS:
            return []
        analysis, task, metric = key
        z = robust_z(matrix)
        out = []
        for name, zi in zip(names, z):
            idx = flagged(zi, self.opts["outlier_z"], self.opts["outlier_steps"])
            if idx.size:
                rows = [{"member": name, "step": steps[j], "task": task, "metric": f"{analysis}:{metric}:outlier_z",
                         "value": float(zi[j])} for j in idx]
                out.append({"member": name, "size": shape, "analysis": analysis, "task": task, "metric": metric,
                            "steps": [steps[j] for j in idx], "max_abs_z": float(abs(zi[idx]).max()), "rows": rows})
        return out

    def _write_outliers(self, run, flags: list[dict]) -> None:
        lines = ["member\tsize\tanalysis\ttask\tmetric\tsteps\tmax_abs_z"]
        for f in sorted(flags, key=lambda f: (f["member"], f["analysis"], f["task"], f["metric"])):
            lines.append("\t".join([f["member"], f["size"], f["analysis"], f["task"], f["metric"],
                                    ",".join(map(str, f["steps"])), f"{f['max_abs_z']:.6g}"]))
        write_text_atomic(run.results_dir / "artifacts" / "seeds" / "outliers.tsv", "\n".join(lines) + "\n")


def _plain(frame):
    """The frame's key columns as plain strings (the table may hand them over as categoricals)
    and its task as "" where empty."""
    frame = frame[["analysis", "task", "metric", "member", "step", "value"]].copy()
    for c in ("analysis", "metric", "member"):
        frame[c] = frame[c].astype(object)
    frame["task"] = frame["task"].astype(object).where(frame["task"].notna(), "")
    return frame


def _tokens(member):
    per_step = (member.global_batch or 0) * (member.seq_len or 0)
    return lambda step: step * per_step if per_step else None


def _compact(steps: list[int]) -> str:
    text = ", ".join(map(str, steps[:8]))
    return f"steps {text}" + (f", ... ({len(steps)} steps)" if len(steps) > 8 else "")


def _warn_dropped(dropped: dict) -> None:
    """At most two warnings, each saying whether something is wrong: metrics that some seeds of
    a size have no rows for at all (an analysis run on some members only, as the demo does:
    expected), and steps some seeds lack (a member still training, or analyses asked at
    different steps: worth a look)."""
    whole: dict[str, tuple[set, set]] = {}  # analysis -> (its metrics, the members lacking them)
    partial = []
    for (shape, what, names), metrics in sorted(dropped.items()):
        if what == "all steps":
            for metric in metrics:
                entry = whole.setdefault(metric.split(":")[0], (set(), set()))
                entry[0].add(metric)
                entry[1].update(names)
        else:
            shown = ", ".join(metrics[:3]) + (f", ... ({len(metrics)} metrics)" if len(metrics) > 3 else "")
            partial.append(f"shape {shape}: {what} ({', '.join(names)} lack{'s' if len(names) == 1 else ''} them) "
                           f"for {shown}")
    if whole:
        parts = [f"{a} ({len(ms)} metric{'s' if len(ms) > 1 else ''}; no rows for {_names(lacking)})"
                 for a, (ms, lacking) in sorted(whole.items())]
        warnings.warn("seeds: some seeds have no rows for these metrics, so their spread covers the seeds that "
                      "have (nothing wrong when an analysis was run on some members only, as the demo does): "
                      + "; ".join(parts), stacklevel=3)
    if partial:
        warnings.warn("seeds: steps left out of the spread over seeds because a seed lacks them (a member "
                      "still training, or analyses asked at different steps): " + "; ".join(partial), stacklevel=3)


def _names(names: set) -> str:
    shown = sorted(names)
    return ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
