"""A training map as data: the latent state of every (seed, step), read from and written to the
TSV layout PolyPythias published (EleutherAI/pythia `polypythias/data/training_maps.tsv`: an
unnamed index column, then `score, state, step, seed, group`), the detour rule, and the plot.

Detours: a seed whose *set of visited states* differs from the set most seeds share (a strict
majority) took a detour -- Hu et al.'s "detour states" (states not every run visits) seen from
the runs' side. `group` is the list of seeds that visit the same set as the row's seed, which
is what the published file holds ("[0, 1, 2, 5, 6, 7, 8, 9]" and "[3, 4]").
"""
from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

COLUMNS = ("score", "state", "step", "seed", "group")
STATE_COLORS = ("#377eb8", "#ff7f00", "#4daf4a", "#f781bf", "#a65628", "#984ea3", "#999999", "#e41a1c", "#dede00")
"""The colour-blind-safe palette PolyPythias' training_map.py uses (state i gets colour i)."""


class MapFormatError(ValueError):
    """A training-map TSV that does not have the published layout; names file, line and field."""


@dataclass
class Sequence:
    steps: np.ndarray
    states: np.ndarray
    scores: np.ndarray
    """NaN where no score is known."""


@dataclass
class TrainingMap:
    """{seed: Sequence} in seed order, plus the HMM's transition matrix when known."""

    seqs: dict[int, Sequence]
    transmat: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_states(self) -> int:
        top = max(int(s.states.max()) for s in self.seqs.values() if s.states.size) + 1
        return max(top, 0 if self.transmat is None else len(self.transmat))

    def visited(self) -> dict[int, frozenset]:
        return {seed: frozenset(int(x) for x in s.states) for seed, s in self.seqs.items()}

    def majority(self) -> frozenset | None:
        """The visited-state set shared by more than half of the seeds (None: no such set)."""
        counts = Counter(self.visited().values())
        if not counts:
            return None
        top, k = counts.most_common(1)[0]
        return top if 2 * k > len(self.seqs) else None

    def detours(self) -> list[int]:
        """Seeds whose visited states differ from the majority's (none without a majority)."""
        top = self.majority()
        return [] if top is None else [seed for seed, v in self.visited().items() if v != top]

    def groups(self) -> dict[int, list[int]]:
        visited = self.visited()
        return {seed: [s for s, w in visited.items() if w == v] for seed, v in visited.items()}

    def transitions(self) -> np.ndarray:
        """The transition matrix: the HMM's when known, else the empirical one of the sequences."""
        if self.transmat is not None:
            return np.asarray(self.transmat, dtype=np.float64)
        n = self.n_states
        counts = np.zeros((n, n))
        for s in self.seqs.values():
            np.add.at(counts, (s.states[:-1], s.states[1:]), 1)
        rows = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)

    # -- TSV ------------------------------------------------------------------------------------
    def to_tsv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t", lineterminator="\n")
        w.writerow(("",) + COLUMNS)
        groups, i = self.groups(), 0
        for seed, s in self.seqs.items():
            for step, state, score in zip(s.steps, s.states, s.scores):
                w.writerow((i, "" if math.isnan(score) else repr(float(score)), int(state), int(step), seed,
                            str(groups[seed])))
                i += 1
        return buf.getvalue()

    @classmethod
    def from_tsv(cls, path: str | Path) -> "TrainingMap":
        """Read a map in the published layout (ours or PolyPythias' file); rows in any order."""
        path = Path(path)
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows:
            raise MapFormatError(f"{path}: empty file")
        header = rows[0]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise MapFormatError(f"{path}:1: header lacks column(s) {missing} (has {header})")
        col = {c: header.index(c) for c in COLUMNS}
        data: dict[int, list[tuple[int, int, float]]] = {}
        for line, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            seed, step, state, score = (_field(path, line, row, col, name, parse) for name, parse in
                                        (("seed", int), ("step", int), ("state", int), ("score", _score)))
            if state < 0 or step < 0:
                raise MapFormatError(f"{path}:{line}: field {'state' if state < 0 else 'step'} must be >= 0")
            data.setdefault(seed, []).append((step, state, score))
        seqs = {}
        for seed in sorted(data):
            items = sorted(data[seed])
            steps = [t for t, _, _ in items]
            if len(set(steps)) != len(steps):
                raise MapFormatError(f"{path}: seed {seed} has a step listed twice")
            seqs[seed] = Sequence(np.array(steps, dtype=np.int64), np.array([s for _, s, _ in items], dtype=np.int64),
                                  np.array([x for _, _, x in items], dtype=np.float64))
        if not seqs:
            raise MapFormatError(f"{path}: no rows")
        return cls(seqs)


def _score(text: str) -> float:
    return float("nan") if text.strip() == "" else float(text)


def _field(path, line, row, col, name, parse):
    try:
        return parse(row[col[name]])
    except (IndexError, ValueError):
        value = row[col[name]] if col[name] < len(row) else "<missing>"
        raise MapFormatError(f"{path}:{line}: field {name}: cannot read {value!r}") from None


# -- plot ---------------------------------------------------------------------------------------
def plot_training_map(tm: TrainingMap, path: str | Path, title: str = "") -> Path:
    """PNG: the state of every checkpoint, one row per seed (detours marked), and the state
    transition graph (edges with probability > 0.01, self-loops written in the nodes)."""
    from matplotlib.figure import Figure

    from ..io import save_png

    fig = Figure(figsize=(12, max(4.5, 1.2 + 0.38 * len(tm.seqs))), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(2.2, 1))
    _draw_states(left, tm)
    _draw_graph(right, tm.transitions())
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


def _colors(n: int) -> list[str]:
    return [STATE_COLORS[i % len(STATE_COLORS)] for i in range(n)]


def _draw_states(ax, tm: TrainingMap) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    steps = sorted({int(t) for s in tm.seqs.values() for t in s.steps})
    pos = {t: j for j, t in enumerate(steps)}
    grid = np.full((len(tm.seqs), len(steps)), np.nan)
    for i, s in enumerate(tm.seqs.values()):
        grid[i, [pos[int(t)] for t in s.steps]] = s.states
    n = tm.n_states
    ax.imshow(np.ma.masked_invalid(grid), aspect="auto", interpolation="nearest", cmap=ListedColormap(_colors(n)),
              vmin=-0.5, vmax=n - 0.5)
    detours = set(tm.detours())
    ax.set_yticks(range(len(tm.seqs)), [f"seed {seed}" + (" (detour)" if seed in detours else "")
                                        for seed in tm.seqs])
    for label, seed in zip(ax.get_yticklabels(), tm.seqs):
        label.set_color("#e41a1c" if seed in detours else "black")
    every = max(1, len(steps) // 12)
    ax.set_xticks(range(0, len(steps), every), [str(steps[j]) for j in range(0, len(steps), every)], rotation=45)
    ax.set_xlabel("step (checkpoints in order)")
    ax.legend(handles=[Patch(color=c, label=f"state {k}") for k, c in enumerate(_colors(n))],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title("latent state per checkpoint")


def _draw_graph(ax, trans: np.ndarray, min_p: float = 0.01) -> None:
    from matplotlib.patches import Circle, FancyArrowPatch

    n = len(trans)
    angle = np.pi - 2 * np.pi * np.arange(n) / max(n, 1)  # state 0 on the left, then clockwise
    xy = np.stack([np.cos(angle), np.sin(angle)], axis=1) if n > 1 else np.zeros((1, 2))
    radius = 0.22
    for i, c in enumerate(_colors(n)):
        ax.add_patch(Circle(xy[i], radius, facecolor=c, edgecolor="black", zorder=3))
        ax.text(*xy[i], f"{i}\n{trans[i, i]:.2f}", ha="center", va="center", fontsize=8, zorder=4)
    for i in range(n):
        for j in range(n):
            if i != j and trans[i, j] > min_p:
                arrow = FancyArrowPatch(xy[i], xy[j], connectionstyle="arc3,rad=0.18", arrowstyle="-|>",
                                        mutation_scale=12, shrinkA=22, shrinkB=22,
                                        linewidth=0.5 + 2.5 * trans[i, j], color="black", zorder=2)
                ax.add_patch(arrow)
                # label a third of the way along, on the arc's side: crossing edges keep apart
                at = xy[i] + 0.36 * (xy[j] - xy[i]) + 0.14 * np.array([xy[j][1] - xy[i][1], xy[i][0] - xy[j][0]])
                ax.text(*at, f"{trans[i, j]:.2f}", fontsize=7, ha="center", va="center")
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("state transitions (self-loop in node)")
