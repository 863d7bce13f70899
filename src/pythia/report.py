"""Turn a trained run folder into one tidy results table, a learning-curve plot and a summary.

A run folder (see `pythia.train`) holds one folder per member (`{size}-seed{seed}`), each with
`metrics.jsonl` (training telemetry, one JSON object a line) and, when the trainer keeps them
apart, a per-checkpoint file with the validation loss. This module reads them all into rows
of the project's results table (DESIGN.md, "Formats"):

    suite, member, size, seed, step, tokens, metric, value

and draws Pythia-style curves: loss against step on a log axis (step 0 kept on it through a
symlog scale), one colour per size, the seeds as a min-max band around their mean.
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from pythia.io import atomic_path, write_text_atomic

COLUMNS = ("suite", "member", "size", "seed", "step", "tokens", "metric", "value")
# Names the trainer may use for the two losses we plot; the first present wins.
VAL_LOSS_KEYS = ("val_loss", "valid_loss", "validation_loss", "eval_loss", "val/loss",
                 "valid/loss", "eval/loss")
TRAIN_LOSS_KEYS = ("train_loss", "loss", "train/loss")
# Per-line bookkeeping fields that are not metrics.
_NOT_METRICS = frozenset({"step", "tokens", "member", "size", "seed", "suite", "time",
                          "timestamp", "wall_time", "elapsed", "event", "kind", "split",
                          "iteration", "samples", "consumed_samples", "path", "name",
                          "val_samples", "val_tokens", "note", "skipped"})
_METRIC_FILES = ("metrics.jsonl", "checkpoints.jsonl", "evals.jsonl", "eval.jsonl")
_MEMBER_RE = re.compile(r"^(?P<size>.+)-seed(?P<seed>\d+)$")


@dataclass
class Report:
    """What `build_report` wrote and found."""

    run_dir: Path
    out_dir: Path
    table: Path
    plot: Path | None
    summary_text: Path
    rows: list[dict] = field(repr=False, default_factory=list)
    summary: list[dict] = field(default_factory=list)
    val_metric: str | None = None
    train_metric: str | None = None


# ---------------------------------------------------------------------------------- reading
def _read_jsonl(path: Path) -> Iterable[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):  # a crash can leave a torn last line; skip it
                return
            raise ValueError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
        if isinstance(obj, dict):
            yield obj


def _suite_info(run_dir: Path) -> dict:
    """The resolved suite spec the trainer copied into the run (empty when absent)."""
    path = run_dir / "suite.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _tokens_per_step(info: dict) -> int | None:
    """global batch x sequence length from the suite spec, wherever the spec keeps them."""
    def find(d, names):
        if isinstance(d, dict):
            for k, v in d.items():
                if k in names and isinstance(v, int):
                    return v
            for v in d.values():
                hit = find(v, names)
                if hit is not None:
                    return hit
        return None

    batch = find(info, {"global_batch", "batch_size", "global_batch_size"})
    seq = find(info, {"seq_len", "seq_length", "sequence_length"})
    return batch * seq if batch and seq else None


def member_dirs(run_dir: Path) -> list[Path]:
    """Member folders of a run: those holding metrics or step checkpoints, in natural order."""
    found = []
    dirs = (p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for d in sorted(dirs, key=lambda p: _natural_key(p.name)):
        if any((d / f).is_file() for f in _METRIC_FILES) or any(d.glob("step*/config.json")):
            found.append(d)
    return found


def read_run(run_dir: str | Path) -> list[dict]:
    """All numeric metrics of every member of `run_dir` as tidy rows (last value wins)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    info = _suite_info(run_dir)
    suite = str(info.get("name") or run_dir.name)
    per_step = _tokens_per_step(info)
    members = member_dirs(run_dir)
    if not members:
        raise FileNotFoundError(f"{run_dir} has no member folders with metrics.jsonl")

    table: dict[tuple, dict] = {}
    for mdir in members:
        m = _MEMBER_RE.match(mdir.name)
        size, seed = (m["size"], int(m["seed"])) if m else (mdir.name, None)
        for fname in _METRIC_FILES:
            path = mdir / fname
            if not path.is_file():
                continue
            for rec in _read_jsonl(path):
                step = rec.get("step", rec.get("iteration"))
                if not isinstance(step, int):
                    continue
                tokens = rec.get("tokens")
                if not isinstance(tokens, int):
                    tokens = step * per_step if per_step else None
                for key, value in rec.items():
                    if key in _NOT_METRICS or isinstance(value, bool):
                        continue
                    if not isinstance(value, (int, float)) or not math.isfinite(value):
                        continue
                    row = {"suite": suite, "member": mdir.name, "size": rec.get("size", size),
                           "seed": rec.get("seed", seed), "step": step, "tokens": tokens,
                           "metric": key, "value": float(value)}
                    table[(mdir.name, step, key)] = row
    return sorted(table.values(), key=lambda r: (r["member"], r["metric"], r["step"]))


def pick_metric(rows: list[dict], candidates: tuple[str, ...]) -> str | None:
    present = {r["metric"] for r in rows}
    return next((k for k in candidates if k in present), None)


def write_table(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS})
    return path


# ---------------------------------------------------------------------------------- summary
def _size_order(rows: list[dict]) -> list[str]:
    """Sizes in the order their members appear (members sort by name, so by suite order)."""
    seen: dict[str, None] = {}
    for r in sorted(rows, key=lambda r: _natural_key(r["member"])):
        seen.setdefault(r["size"], None)
    return list(seen)


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def curves(rows: list[dict], metric: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """size -> member -> [(step, value)] sorted by step."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["metric"] == metric:
            out[r["size"]][r["member"]].append((r["step"], r["value"]))
    for members in out.values():
        for points in members.values():
            points.sort()
    return out


def summarize(rows: list[dict], metric: str) -> list[dict]:
    """Per size: the last step every seed reached, and the metric's mean/min/max over seeds."""
    by_size = curves(rows, metric)
    summary = []
    for size in _size_order(rows):
        members = by_size.get(size)
        if not members:
            continue
        last = min(points[-1][0] for points in members.values())
        values = [dict(points)[last] for points in members.values() if last in dict(points)]
        summary.append({"size": size, "seeds": len(values), "step": last, "metric": metric,
                        "mean": sum(values) / len(values), "min": min(values),
                        "max": max(values)})
    return summary


def format_summary(summary: list[dict]) -> str:
    if not summary:
        return "(no validation loss recorded yet)"
    lines = [f"{'size':<16} {'seeds':>5} {'step':>7} {summary[0]['metric'] + ' mean':>15} "
             f"{'± half-range':>12}"]
    for s in summary:
        lines.append(f"{s['size']:<16} {s['seeds']:>5} {s['step']:>7} {s['mean']:>15.4f} "
                     f"{(s['max'] - s['min']) / 2:>12.4f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- plotting
def plot_learning_curves(rows: list[dict], path: str | Path, val_metric: str | None,
                         train_metric: str | None = None, title: str = "") -> Path | None:
    """Loss vs step (symlog x so step 0 shows), one colour per size, seed min-max band."""
    panels = [(m, label) for m, label in ((val_metric, "validation loss"),
                                          (train_metric, "training loss")) if m]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    sizes = _size_order(rows)
    colours = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.6), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels, strict=True):
        by_size = curves(rows, metric)
        for i, size in enumerate(sizes):
            members = by_size.get(size)
            if not members:
                continue
            colour = colours(i / max(1, len(sizes) - 1) * 0.85)
            steps = sorted(set.intersection(*(set(dict(p)) for p in members.values())))
            if not steps:
                continue
            values = [[dict(p)[s] for p in members.values()] for s in steps]
            mean = [sum(v) / len(v) for v in values]
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values],
                            color=colour, alpha=0.25, linewidth=0)
            ax.plot(steps, mean, color=colour, marker="o" if len(steps) <= 40 else None,
                    markersize=2.5,
                    label=f"{size} ({len(members)} seed{'s' if len(members) > 1 else ''})")
        # Pythia's checkpoints are log-spaced from step 0: symlog is linear below 1, log above.
        ax.set_xscale("symlog", linthresh=1, linscale=0.4)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
        ax.set_xlabel("step (log scale, 0 at left)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{title}: {label}" if title else label)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- entry
def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Report:
    """Write results.csv, learning_curves.png and summary.txt for `run_dir` into `out_dir`.

    `out_dir` defaults to `RUN/report`. Cheap, so it is simply rebuilt every time.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    rows = read_run(run_dir)
    val_metric = pick_metric(rows, VAL_LOSS_KEYS)
    train_metric = pick_metric(rows, TRAIN_LOSS_KEYS)
    table = write_table(rows, out_dir / "results.csv")
    suite = rows[0]["suite"] if rows else run_dir.name
    plot = plot_learning_curves(rows, out_dir / "learning_curves.png", val_metric,
                                train_metric, title=suite)
    summary = summarize(rows, val_metric) if val_metric else []
    text = format_summary(summary)
    summary_path = out_dir / "summary.txt"
    write_text_atomic(summary_path, f"suite {suite} ({run_dir})\n{text}\n")
    return Report(run_dir=run_dir, out_dir=out_dir, table=table, plot=plot,
                  summary_text=summary_path, rows=rows, summary=summary,
                  val_metric=val_metric, train_metric=train_metric)
