"""`training_map`: PolyPythias' training maps -- every checkpoint of every seed placed in one of a
few latent phases of training by a Gaussian HMM over the `weights` statistics (van der Wal et
al., ICLR 2025, Fig. 4; Hu et al., TMLR 2023). The fit is in `_hmm`, the map as data, the
detour rule and the plot in `_mapdata`.

One map per shape (its seeds are the sequences). Results rows, per member: `state` and `score` at
each step, and `detour` (1: its set of visited states differs from the majority's) and
`n_states` (the chosen number of states) without a step. Artifacts in
`RESULTS/artifacts/training_map/`: `{shape}.tsv` in the published layout (score, state, step,
seed, group), `{shape}.png` (states per seed, one row each, and the transition graph) and
`{shape}.json` (chosen n, transition matrix, the held-out model-selection table, detours).

`score` is what the published map plots beside the states: the average standardised (z-scored
over all seeds and steps of the shape) accuracy over the evaluated tasks (`--map-score eval:acc`,
the default when the table has it), else the standardised validation loss with its sign flipped
so that higher is better, as for accuracy (`val_loss:val_loss`). The published maps are read
with `TrainingMap.from_tsv` and drawn with `plot_training_map`.
"""
from __future__ import annotations

import json
import warnings

import numpy as np

from ..io import write_text_atomic
from ._mapdata import Sequence, TrainingMap, plot_training_map
from .base import Analysis, AnalysisError, Option, register
from .seeds import shapes_of
from .weights import FEATURES

__all__ = ["TrainingMap", "TrainingMapAnalysis", "plot_training_map"]


@register
class TrainingMapAnalysis(Analysis):
    name = "training_map"
    summary = "Gaussian-HMM training map over the weights statistics: latent state per (seed, step), detour seeds"
    scope = "run"
    version = 1
    options = (
        Option("hmm_states", int, None, "number of HMM states (default: chosen on held-out checkpoints)"),
        Option("hmm_max_states", int, 8, "largest number of states tried when choosing"),
        Option("map_score", str, "auto", "ANALYSIS:METRIC averaged (z-scored) into the map's score column; "
               "auto: eval:acc if present, else val_loss:val_loss"),
    )

    def reads(self, analysis: str) -> bool:
        """The weights rows, and whatever the score may come from."""
        spec = self.opts["map_score"]
        sources = ("eval", "val_loss") if spec == "auto" else (spec.partition(":")[0],)
        return analysis == "weights" or analysis in sources

    def compute_run(self, run, store, members) -> list[dict]:
        members = [m for m in members if getattr(m, "base", None) is None]  # forks are not seeds
        features = _feature_table(store, members)
        if not features:
            raise AnalysisError(f"training_map: no `weights` rows for {', '.join(m.name for m in members)} in "
                                f"{store.root}; run the weights analysis first "
                                "(pythia analyze RUN weights,training_map)")
        scores = _scores(store, members, self.opts["map_score"])
        out_dir = run.results_dir / "artifacts" / "training_map"
        rows = []
        for shape, ms in shapes_of(members).items():
            ms = [m for m in ms if features.get(m.name)]
            if sum(len(features[m.name]) for m in ms) < 5:
                warnings.warn(f"training_map: shape {shape} has fewer than 5 checkpoints with weights rows; "
                              "no map", stacklevel=2)
                continue
            tm, info = self._one_shape(ms, features, scores.get(shape, {}))
            rows += _rows(ms, tm, info["n_states"])
            _write(out_dir, shape, tm, info)
        return rows

    def _one_shape(self, members, features, scores) -> tuple[TrainingMap, dict]:
        from ._hmm import fit_map

        steps = {m.name: sorted(features[m.name]) for m in members}
        arrays = [np.array([[features[m.name][t][f] for f in FEATURES] for t in steps[m.name]]) for m in members]
        fit = fit_map(arrays, max_states=self.opts["hmm_max_states"], n_states=self.opts["hmm_states"])
        seqs = {}
        for m, states in zip(members, fit.states):
            s = steps[m.name]
            seqs[_seed_label(m, seqs)] = Sequence(np.array(s), states,
                                                  np.array([scores.get((m.name, t), np.nan) for t in s]))
        tm = TrainingMap(seqs, transmat=fit.transmat)
        info = {"n_states": fit.n_states, "members": {str(k): m.name for k, m in zip(seqs, members)},
                "detours": tm.detours(), "majority_states": sorted(tm.majority() or []),
                "transmat": np.round(fit.transmat, 12).tolist(), "features": list(FEATURES),
                "selection": fit.selection}
        return tm, info


def _seed_label(member, taken: dict) -> int:
    """The member's seed (a Hub repo without -seedN is PolyPythias' seed 0); unique per map."""
    seed = member.seed if member.seed is not None else 0
    while seed in taken:
        seed += 1000
    return seed


def _feature_table(store, members) -> dict[str, dict[int, dict[str, float]]]:
    """{member: {step: {feature: value}}} for checkpoints with all 14 features; others dropped
    with a warning."""
    wanted = {m.name for m in members}
    table: dict[str, dict[int, dict[str, float]]] = {}
    for r in store.rows(analysis="weights", metric=list(FEATURES)):
        if r["member"] in wanted and r["step"] is not None and r["value"] is not None:
            table.setdefault(r["member"], {}).setdefault(r["step"], {})[r["metric"]] = r["value"]
    for name, by_step in table.items():
        partial = sorted(t for t, f in by_step.items() if len(f) < len(FEATURES))
        if partial:
            warnings.warn(f"training_map: {name}: {len(partial)} step(s) lack some weights features, left out: "
                          f"{', '.join(map(str, partial[:8]))}{', ...' if len(partial) > 8 else ''}", stacklevel=3)
            for t in partial:
                del by_step[t]
    return table


def _scores(store, members, spec: str) -> dict[str, dict[tuple[str, int], float]]:
    """{shape: {(member, step): score}}: the mean over tasks of the metric z-scored over the shape."""
    names = {m.name: m.shape for m in members}
    if spec == "auto":
        spec = "eval:acc" if any(r["member"] in names for r in store.rows(analysis="eval", metric="acc")) \
            else "val_loss:val_loss"
    analysis, _, metric = spec.partition(":")
    if not metric:
        raise AnalysisError(f"training_map: --map-score must be ANALYSIS:METRIC (e.g. eval:acc), got {spec!r}")
    sign = -1.0 if metric.endswith(("loss", "perplexity")) else 1.0
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in store.rows(analysis=analysis, metric=metric):
        if r["member"] in names and r["step"] is not None and r["value"] is not None:
            groups.setdefault((names[r["member"]], r["task"]), []).append(r)
    sums: dict[str, dict[tuple[str, int], list[float]]] = {}
    for (shape, _), rows in groups.items():
        v = np.array([r["value"] for r in rows])
        z = (v - v.mean()) / v.std() if v.std() > 0 else np.zeros_like(v)
        for r, x in zip(rows, z):
            sums.setdefault(shape, {}).setdefault((r["member"], r["step"]), []).append(sign * float(x))
    return {shape: {k: float(np.mean(v)) for k, v in d.items()} for shape, d in sums.items()}


def _rows(members, tm: TrainingMap, n_states: int) -> list[dict]:
    detours = set(tm.detours())
    rows = []
    for m, (seed, seq) in zip(members, tm.seqs.items()):
        for t, state, score in zip(seq.steps, seq.states, seq.scores):
            rows.append({"member": m.name, "step": int(t), "metric": "state", "value": float(state)})
            if not np.isnan(score):
                rows.append({"member": m.name, "step": int(t), "metric": "score", "value": float(score)})
        rows.append({"member": m.name, "step": None, "metric": "detour", "value": float(seed in detours)})
        rows.append({"member": m.name, "step": None, "metric": "n_states", "value": float(n_states)})
    return rows


def _write(out_dir, shape: str, tm: TrainingMap, info: dict) -> None:
    base = shape.replace("/", "_")
    write_text_atomic(out_dir / f"{base}.tsv", tm.to_tsv())
    write_text_atomic(out_dir / f"{base}.json", json.dumps(info, indent=1, sort_keys=True) + "\n")
    plot_training_map(tm, out_dir / f"{base}.png",
                      title=f"training map of {shape}: {info['n_states']} states, "
                            + (f"detours: {', '.join(map(str, info['detours'])) or 'none'}" if tm.majority() is not None
                               else "no majority path (the seeds split)"))
