"""The report's files for papers: the results table as CSV, learning curves as a PNG, a summary.

They read only the results table (`pythia.results`; columns suite, member, size,
seed, step, tokens, analysis, task, metric, value, stderr), which the trainer and `pythia
analyze` fill: `val_loss` at every checkpoint, `train_loss` at every update. It draws
Pythia-style curves: loss against step on a log axis (step 0 kept on it through a symlog
scale), one colour per size, the seeds as a min-max band around their mean. Forks (data
interventions, pythia.train.intervention) are drawn apart, dashed in their base's colour, and
each is compared with its base (pythia.compare: rows in the table, compare_{fork}.png).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pythia.io import save_png
from pythia.results import ResultsStore, natural_key

VAL_METRIC = "val_loss"
TRAIN_METRIC = "train_loss"


# ---------------------------------------------------------------------------------- reading
def read_run(source: str | Path) -> list[dict]:
    """The results table of a run (any source `pythia.run.open_run` accepts, or a standalone
    results store); a member folder gives that member's rows."""
    from .source import open_source

    return open_source(source).rows


def pick_metric(rows: list[dict], metric: str) -> str | None:
    return metric if any(r["metric"] == metric for r in rows) else None


def write_table(rows: list[dict], path: str | Path) -> Path:
    return ResultsStore(Path(path).parent).write_csv(path, rows)


# ---------------------------------------------------------------------------------- summary
def _size_order(rows: list[dict]) -> list[str]:
    """Sizes in the order their members appear (members sort by name, so by suite order)."""
    sizes_of: dict[str, dict[str, None]] = {}
    for r in rows:  # the members sort, not the rows (millions at Pythia's scale)
        sizes_of.setdefault(r["member"], {}).setdefault(r["size"], None)
    return list(dict.fromkeys(z for m in sorted(sizes_of, key=natural_key) for z in sizes_of[m]))


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
                         train_metric: str | None = None, title: str = "",
                         forks: dict[str, str] | None = None) -> Path | None:
    """Loss vs step (symlog x so step 0 shows), one colour per size, seed min-max band; the
    members named in `forks` ({fork: base}) are left out of the bands and drawn dashed."""
    forks = forks or {}
    fork_rows = [r for r in rows if r["member"] in forks]
    rows = [r for r in rows if r["member"] not in forks]
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
        for fork_size, members in curves(fork_rows, metric).items():
            colour = colours(sizes.index(fork_size) / max(1, len(sizes) - 1) * 0.85) if fork_size in sizes else "k"
            for fork, points in members.items():
                ax.plot(*zip(*points), color=colour, linestyle="--", linewidth=1.2, label=f"{fork} (fork)")
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
    path = save_png(fig, path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- forks
def compare_fork(view, fork, out_dir: Path):
    """pythia.compare of a fork with its base (rows for the report's table, compare_{fork}.png;
    the run's results are only read); None while the fork has no results yet."""
    from pythia.compare import CompareError, compare

    try:
        result = compare(view.results(), fork.base, fork.name, plot=out_dir / f"compare_{fork.name}.png",
                         from_step=fork.from_step, write=False)
    except CompareError:
        return None
    return result


def fork_record(c, metric: str | None) -> dict:
    series = next((s for s in c.series if s.metric == metric and not s.task), None)
    last = {} if series is None else {"step": series.steps[-1], "base_value": series.base[-1],
                                      "fork_value": series.fork[-1]}
    return {"fork": c.fork, "base": c.base, "from_step": c.from_step, "plot": c.plot, **last}


def format_forks(records: list[dict], metric: str | None) -> list[str]:
    """One line per fork: its val_metric against its base's at their last common step."""
    lines = []
    for rec in records:
        head = f"fork {rec['fork']} (of {rec['base']} from step {rec['from_step']})"
        if "step" not in rec:
            lines.append(f"{head}: no {metric or 'validation loss'} in common yet")
            continue
        lines.append(f"{head}: {metric} at step {rec['step']}: base {rec['base_value']:.4f}, fork "
                     f"{rec['fork_value']:.4f}, fork - base {rec['fork_value'] - rec['base_value']:+.4f}  "
                     f"(every metric: {Path(rec['plot']).name})")
    return lines
