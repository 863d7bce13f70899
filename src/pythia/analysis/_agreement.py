"""Per-item agreement between checkpoints, PolyPythias' "self-consistency" and "inter-seed
agreement" (van der Wal et al., ICLR 2025; EleutherAI/pythia `polypythias/plots.ipynb`, columns
`kappa_w_last_step` and `kappa_w_0`): Cohen's kappa between two checkpoints' per-item outcomes.

Items come from the evaluation sweep: `RESULTS/artifacts/eval/{member}/step{N}/{task}.items.npz`
with `doc_id` (int64), `pred` (int64 chosen choice, -1 when the task is not multiple choice),
`correct` (uint8 0/1) and `metric`. The label compared is `pred` when every item has one (so
two checkpoints that pick the same wrong answer agree), else `correct`. Two files are aligned on
the doc_ids they share.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import AnalysisError

SUFFIX = ".items.npz"


@dataclass(frozen=True)
class Items:
    doc_id: np.ndarray
    label: np.ndarray


def read_items(path: Path) -> Items:
    """One items file, checked: the arrays named in the contract, equal lengths, unique doc_ids."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            arrays = {k: np.asarray(z[k]).reshape(-1) for k in ("doc_id", "pred", "correct") if k in names}
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"{path}: unreadable items file ({exc})") from None
    missing = [k for k in ("doc_id", "pred", "correct") if k not in arrays]
    if missing:
        raise AnalysisError(f"{path}: items file lacks array(s) {missing} (has {names})")
    doc, pred, correct = arrays["doc_id"], arrays["pred"], arrays["correct"]
    if not (len(doc) == len(pred) == len(correct)):
        raise AnalysisError(f"{path}: doc_id, pred and correct differ in length "
                            f"({len(doc)}, {len(pred)}, {len(correct)})")
    if len(np.unique(doc)) != len(doc):
        raise AnalysisError(f"{path}: doc_id has repeated values")
    label = pred if len(pred) and (pred >= 0).all() else correct.astype(np.int64)
    order = np.argsort(doc, kind="stable")
    return Items(doc_id=doc[order].astype(np.int64), label=label[order].astype(np.int64))


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two label vectors: (p_o - p_e) / (1 - p_e), p_e from the two marginals.
    None when p_e = 1 (both constant on the same label: agreement is not measurable)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"kappa needs two label vectors of one non-zero length, got {a.shape} and {b.shape}")
    cats, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = inv[:a.size], inv[a.size:]
    p_o = float(np.mean(ia == ib))
    p_e = float(np.dot(np.bincount(ia, minlength=cats.size), np.bincount(ib, minlength=cats.size))) / a.size ** 2
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def items_kappa(x: Items, y: Items, what: str, skipped: dict) -> float | None:
    """Cohen's kappa on the items both have; None, with `what` noted in `skipped` under the
    reason, when they share no item or give one same label to every item (kappa undefined)."""
    shared, ix, iy = np.intersect1d(x.doc_id, y.doc_id, assume_unique=True, return_indices=True)
    if shared.size == 0:
        skipped.setdefault("no doc_id in common", []).append(what)
        return None
    kappa = cohen_kappa(x.label[ix], y.label[iy])
    if kappa is None:
        skipped.setdefault("both checkpoints give one same label to every item; kappa undefined", []).append(what)
    return kappa


_WHY_NOT_WRONG = {  # what a reason means for the user
    "both checkpoints give one same label to every item; kappa undefined":
        "usual for models that answer every item alike (untrained or tiny ones, a task none solves); nothing wrong",
}


def _warn_skipped(skipped: dict) -> None:
    """One warning per reason (an untrained suite has thousands of constant-label pairs), saying
    whether it means something is wrong."""
    for reason, whats in skipped.items():
        more = f" and {len(whats) - 3} more" if len(whats) > 3 else ""
        meaning = f" ({_WHY_NOT_WRONG[reason]})" if reason in _WHY_NOT_WRONG else ""
        warnings.warn(f"agreement: {reason} for {len(whats)} pair(s) of checkpoints{meaning}, skipped: "
                      f"{'; '.join(whats[:3])}{more}", stacklevel=3)


def item_files(results_dir: Path, member: str) -> dict[str, dict[int, Path]]:
    """{task: {step: path}} of a member's items files."""
    found: dict[str, dict[int, Path]] = {}
    base = Path(results_dir) / "artifacts" / "eval" / member
    for path in sorted(base.glob(f"step*/*{SUFFIX}")):
        step = path.parent.name[4:]
        if step.isdigit():
            found.setdefault(path.name[:-len(SUFFIX)], {})[int(step)] = path
    return found


def agreement_rows(results_dir: Path, shapes: dict[str, list], reference_seed: int | None
                   ) -> tuple[list[dict], dict[str, str]]:
    """(rows (member, step, task, metric in {self_consistency, inter_seed}, value), {shape: reference
    member}) for every shape's members (sorted by seed); the reference member is the one with
    `reference_seed`, else each shape's lowest seed (it has no inter_seed rows of its own)."""
    rows: list[dict] = []
    references: dict[str, str] = {}
    cache: dict[Path, Items] = {}
    skipped: dict[str, list[str]] = {}

    def load(p: Path) -> Items:
        if p not in cache:
            cache[p] = read_items(p)
        return cache[p]

    for shape, members in shapes.items():
        files = {m.name: item_files(results_dir, m.name) for m in members}
        for m in members:
            rows += _self_consistency(m, files[m.name], load, skipped)
        ref = _reference(shape, members, reference_seed)
        if ref is None:
            continue
        references[shape] = ref.name
        for m in members:
            if m is ref:
                continue
            for task, steps in files[m.name].items():
                theirs = files[ref.name].get(task, {})
                for step in sorted(set(steps) & set(theirs)):
                    k = items_kappa(load(steps[step]), load(theirs[step]), f"{m.name} vs {ref.name} {task} step{step}",
                                    skipped)
                    if k is not None:
                        rows.append({"member": m.name, "step": step, "task": task, "metric": "inter_seed", "value": k})
    _warn_skipped(skipped)
    return rows, references


def _self_consistency(member, files: dict[str, dict[int, Path]], load, skipped: dict) -> list[dict]:
    rows = []
    for task, steps in files.items():
        final = max(steps)
        if member.steps and final < member.steps[-1]:
            warnings.warn(f"agreement: {member.name} {task}: no items at the final checkpoint step{member.steps[-1]}; "
                          f"self-consistency is measured against step{final}", stacklevel=3)
        for step in sorted(steps):
            k = items_kappa(load(steps[step]), load(steps[final]), f"{member.name} {task} step{step} vs step{final}",
                            skipped)
            if k is not None:
                rows.append({"member": member.name, "step": step, "task": task, "metric": "self_consistency",
                             "value": k})
    return rows


def _reference(shape: str, members: list, reference_seed: int | None):
    if len(members) < 2:
        return None
    if reference_seed is None:
        return members[0]
    for m in members:
        if m.seed == reference_seed:
            return m
    warnings.warn(f"agreement: shape {shape} has no member with seed {reference_seed}; no inter-seed agreement "
                  f"for it (seeds: {', '.join(str(m.seed) for m in members)})", stacklevel=3)
    return None
