"""Statistics over seeds: the spread of one metric across a shape's seeds at each step, and a
robust per-step score of each seed against the others (used by the `seeds` analysis).

Outlier score, per seed i and step t: the leave-one-out deviation d_i(t) = x_i(t) - median of
the *other* seeds at t, over a robust scale: z = d_i(t) / (1.4826 x median |d_j(t')|), the
median taken over every seed j and the checkpoints t' within 2 positions of t. It is a
modified z-score in the sense of Iglewicz & Hoaglin ("How to Detect and Handle Outliers", ASQC
1993), whose cut-off |z| > 3.5 we keep. Why this form:
- leaving the seed out of the centre means a run cannot pull the reference towards itself;
- median and MAD have a 50% breakdown point (mean and standard deviation 0%), so a seed that
  goes astray does not hide by inflating the scale; 1.4826 makes a MAD estimate the standard
  deviation of normal data, so 3.5 is a ~3.5-sigma event;
- the scale is pooled over neighbouring checkpoints (the seeds' spread changes slowly along the
  log-spaced schedule) and built from the same leave-one-out deviations as the numerator: with
  the 4-10 seeds of a suite, a per-step MAD of the other seeds alone put |z| above 3.5 for 5-27%
  of well-behaved (normal) seeds in simulation; this form gives 0.3-0.9% per step, and with
  the 2-consecutive-checkpoints rule of `flagged` under 1% of runs per metric over 30 steps;
- the scale is never finer than the metric's resolution (its smallest gap between two values,
  `resolution`): discrete metrics on which most seeds agree exactly have a MAD of 0.
"""
from __future__ import annotations

import numpy as np

STATS = ("n", "median", "q25", "q75", "min", "max", "std")
MAD_SCALE = 1.4826
WINDOW = 2
"""Checkpoints on each side whose deviations enter a step's scale."""
Z_THRESHOLD = 3.5
MIN_OTHERS = 3
"""Fewest other seeds for a robust score (the MAD of two values is half their distance)."""
REL_FLOOR, ABS_FLOOR = 1e-6, 1e-12
"""Lower bound of the scale (relative to the step's median, plus an absolute one): when the
other seeds agree exactly (e.g. the same init at step 0) deviations below ~1e-6 of the value
are float noise, not outliers."""


def spread(values: np.ndarray) -> dict[str, float]:
    """Median, quartiles (linear interpolation, as numpy/pandas), min, max and sample standard
    deviation (ddof=1) of one step's values over n >= 2 seeds."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise ValueError("a spread over seeds needs at least two seeds")
    q25, med, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return {"n": float(values.size), "median": float(med), "q25": float(q25), "q75": float(q75),
            "min": float(values.min()), "max": float(values.max()), "std": float(values.std(ddof=1))}


def spreads(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """`spread` of every column of a (seeds, steps) matrix at once, bit for bit: each statistic
    reduces a contiguous row of the transposed matrix, as `spread` reduces one step's vector
    (numpy sums a contiguous row pairwise, a column in another order)."""
    values = np.ascontiguousarray(np.asarray(matrix, dtype=np.float64).T)
    if values.shape[1] < 2:
        raise ValueError("a spread over seeds needs at least two seeds")
    q25, med, q75 = np.quantile(values, [0.25, 0.5, 0.75], axis=1)
    return {"n": np.full(values.shape[0], float(values.shape[1])), "median": med, "q25": q25, "q75": q75,
            "min": values.min(axis=1), "max": values.max(axis=1), "std": values.std(axis=1, ddof=1)}


def align(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[list[int], np.ndarray, dict[str, list[int]]]:
    """Members' (steps, values) arrays (steps ascending, distinct) on the steps they all have:
    (steps, (members, steps) matrix in the dict's order, {member: steps others have but it lacks})."""
    if not series:
        return [], np.zeros((0, 0)), {}
    steps = [np.asarray(t, dtype=np.int64) for t, _ in series.values()]
    common = steps[0]
    every = steps[0]
    for t in steps[1:]:
        common = np.intersect1d(common, t, assume_unique=True)
        every = np.union1d(every, t)
    lacking = {m: np.setdiff1d(every, t, assume_unique=True).tolist() for m, t in zip(series, steps)
               if t.size < every.size}
    matrix = np.array([v[np.searchsorted(t, common)] for t, (_, v) in zip(steps, series.values())],
                      dtype=np.float64).reshape(len(series), -1)
    return common.tolist(), matrix, lacking


def robust_z(matrix: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """(seeds, steps) values -> robust z-scores, same shape (see module doc)."""
    n = matrix.shape[0]
    if n - 1 < MIN_OTHERS:
        raise ValueError(f"robust scores need at least {MIN_OTHERS + 1} seeds, got {n}")
    dev = np.stack([matrix[i] - np.median(np.delete(matrix, i, axis=0), axis=0) for i in range(n)])
    steps = matrix.shape[1]
    pooled = np.array([np.median(np.abs(dev[:, max(0, j - window):j + window + 1])) for j in range(steps)])
    scale = np.maximum(MAD_SCALE * pooled, REL_FLOOR * np.abs(np.median(matrix, axis=0)) + ABS_FLOOR)
    return dev / np.maximum(scale, resolution(matrix))


def resolution(matrix: np.ndarray) -> float:
    """The smallest non-zero gap between two values of the metric (0 when all are equal).

    A count-based metric (accuracy on 48 items, a memorized fraction of 1,024 sequences) moves
    in steps; when most seeds sit on the same value the MAD is 0, and one item's difference
    would otherwise score |z| ~ 1e5. No scale is finer than one step of the metric: a seed is
    flagged only when it is more than 3.5 such steps away from the others."""
    values = np.unique(matrix[np.isfinite(matrix)])
    return float(np.diff(values).min()) if values.size > 1 else 0.0


def flagged(z: np.ndarray, threshold: float = Z_THRESHOLD, min_run: int = 2) -> np.ndarray:
    """Indices where |z| > threshold inside a run of at least `min_run` consecutive such steps:
    a seed that goes astray stays astray, a single-checkpoint blip is not a flagged run."""
    hit = np.abs(z) > threshold
    out, start = [], None
    for i, h in enumerate(np.append(hit, False)):
        if h and start is None:
            start = i
        elif not h and start is not None:
            if i - start >= min_run:
                out.extend(range(start, i))
            start = None
    return np.array(out, dtype=np.int64)
