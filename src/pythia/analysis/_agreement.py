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
NO_COMMON = "no doc_id in common"
CONSTANT = "both checkpoints give one same label to every item; kappa undefined"


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
    label = pred if len(pred) and (pred >= 0).all() else correct.astype(np.int64)
    if doc.size < 2 or bool((doc[1:] > doc[:-1]).all()):  # the sweep writes them in order: nothing to sort
        return Items(doc_id=doc.astype(np.int64), label=label.astype(np.int64))
    order = np.argsort(doc, kind="stable")
    doc = doc[order]
    if bool((doc[1:] == doc[:-1]).any()):
        raise AnalysisError(f"{path}: doc_id has repeated values")
    return Items(doc_id=doc.astype(np.int64), label=label[order].astype(np.int64))


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
        skipped.setdefault(NO_COMMON, []).append(what)
        return None
    kappa = cohen_kappa(x.label[ix], y.label[iy])
    if kappa is None:
        skipped.setdefault(CONSTANT, []).append(what)
    return kappa


_WHY_NOT_WRONG = {  # what a reason means for the user
    CONSTANT:
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


@dataclass
class Stack:
    """One member's items files of one task, read once, in step order: a (steps, items) label
    matrix when every file lists the same doc_ids (the eval sweep's usual output), else the
    files' `Items` one by one."""
    steps: list[int]
    doc_id: np.ndarray | None
    labels: np.ndarray | None
    items: list[Items] | None

    @classmethod
    def read(cls, by_step: dict[int, Path]) -> "Stack":
        steps = sorted(by_step)
        items = [read_items(by_step[t]) for t in steps]
        doc = items[0].doc_id
        if doc.size and all(np.array_equal(x.doc_id, doc) for x in items[1:]):
            return cls(steps, doc, np.stack([x.label for x in items]), None)
        return cls(steps, None, None, items)

    def row(self, i: int) -> Items:
        return self.items[i] if self.labels is None else Items(self.doc_id, self.labels[i])


def kappas(a: np.ndarray, b: np.ndarray) -> list[float | None]:
    """`cohen_kappa` of each row of `a` with the same row of `b` (or with `b` when it is one
    vector): the same integer counts and the same float operations in the same order, so the
    same bits as pair by pair, for all checkpoints of a member in a few array operations."""
    a = np.asarray(a)
    b = np.broadcast_to(np.asarray(b), a.shape)
    rows, n = a.shape
    both = np.concatenate([a.reshape(-1), b.reshape(-1)])
    low, high = (int(both.min()), int(both.max())) if both.size else (0, 0)
    if 0 <= low and high < 1 << 16:  # choice indices, 0/1: the labels are their own codes
        k, codes = high + 1, both
    else:  # categories that are absent from both count 0 either way: the same counts' dot product
        cats, codes = np.unique(both, return_inverse=True)
        k = cats.size
    offset = (np.arange(rows, dtype=np.int64) * k)[:, None]
    count_a = np.bincount((codes[:a.size].reshape(rows, n) + offset).reshape(-1), minlength=rows * k)
    count_b = np.bincount((codes[a.size:].reshape(rows, n) + offset).reshape(-1), minlength=rows * k)
    p_o = (a == b).sum(axis=1) / n  # np.mean of the bools: their exact count over n
    p_e = (count_a.reshape(rows, k) * count_b.reshape(rows, k)).sum(axis=1).astype(np.float64) / n ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (p_o - p_e) / (1.0 - p_e)
    return [None if e >= 1.0 else float(x) for e, x in zip(p_e.tolist(), kappa.tolist())]


def _pairs(x: Stack, xi: list[int], y: Stack, yi: list[int]) -> list[float | str]:
    """Kappa of x's checkpoints xi with y's yi (pairwise), or the reason it is undefined."""
    if x.labels is not None and y.labels is not None:
        if np.array_equal(x.doc_id, y.doc_id):
            a, b = x.labels[xi], y.labels[yi]
        else:
            shared, ix, iy = np.intersect1d(x.doc_id, y.doc_id, assume_unique=True, return_indices=True)
            if shared.size == 0:
                return [NO_COMMON] * len(xi)
            a, b = x.labels[np.ix_(xi, ix)], y.labels[np.ix_(yi, iy)]
        if not len(xi):
            return []
        return [CONSTANT if k is None else k for k in kappas(a, b)]
    out: list[float | str] = []
    for i, j in zip(xi, yi):
        skipped: dict = {}
        k = items_kappa(x.row(i), y.row(j), "", skipped)
        out.append(next(iter(skipped)) if k is None else k)
    return out


def agreement_rows(results_dir: Path, shapes: dict[str, list], reference_seed: int | None
                   ) -> tuple[list[dict], dict[str, str]]:
    """(rows (member, step, task, metric in {self_consistency, inter_seed}, value), {shape: reference
    member}) for every shape's members (sorted by seed); the reference member is the one with
    `reference_seed`, else each shape's lowest seed (it has no inter_seed rows of its own).

    Each items file is read once, task by task (the reference member's files of a task and one
    member's at a time are in memory, not the run's), and each member's checkpoints are compared
    in one array operation; rows and warnings come out in the order of the pair-by-pair loops."""
    rows: list[dict] = []
    references: dict[str, str] = {}
    skipped: dict[str, list[str]] = {}
    for shape, members in shapes.items():
        files = {m.name: item_files(results_dir, m.name) for m in members}
        ref = _find_reference(members, reference_seed)
        own, inter = _kappas_of_shape(members, files, ref)
        for m in members:
            rows += _self_consistency(m, files[m.name], own, skipped)
        if ref is None:
            _warn_no_reference(shape, members, reference_seed)
            continue
        references[shape] = ref.name
        for m in members:
            if m is ref:
                continue
            for task, steps in files[m.name].items():
                for step, k in inter.get((m.name, task), []):
                    what = f"{m.name} vs {ref.name} {task} step{step}"
                    if isinstance(k, str):
                        skipped.setdefault(k, []).append(what)
                    else:
                        rows.append({"member": m.name, "step": step, "task": task, "metric": "inter_seed", "value": k})
    _warn_skipped(skipped)
    return rows, references


def _kappas_of_shape(members, files: dict, ref) -> tuple[dict, dict]:
    """{(member, task): [(step, kappa or reason)]} against the member's final checkpoint, and
    against the reference member at the steps both have."""
    own: dict[tuple[str, str], list] = {}
    inter: dict[tuple[str, str], list] = {}
    tasks = list(dict.fromkeys(t for m in members for t in files[m.name]))
    for task in tasks:
        theirs = Stack.read(files[ref.name][task]) if ref is not None and task in files[ref.name] else None
        for m in members:
            if task not in files[m.name]:
                continue
            mine = theirs if m is ref else Stack.read(files[m.name][task])
            last = len(mine.steps) - 1
            own[(m.name, task)] = list(zip(mine.steps, _pairs(mine, list(range(len(mine.steps))), mine,
                                                               [last] * len(mine.steps))))
            if theirs is not None and m is not ref:
                pos = {t: j for j, t in enumerate(theirs.steps)}
                common = [(i, pos[t]) for i, t in enumerate(mine.steps) if t in pos]
                ks = _pairs(mine, [i for i, _ in common], theirs, [j for _, j in common])
                inter[(m.name, task)] = [(mine.steps[i], k) for (i, _), k in zip(common, ks)]
    return own, inter


def _self_consistency(member, files: dict[str, dict[int, Path]], own: dict, skipped: dict) -> list[dict]:
    rows = []
    for task, steps in files.items():
        final = max(steps)
        if member.steps and final < member.steps[-1]:
            warnings.warn(f"agreement: {member.name} {task}: no items at the final checkpoint step{member.steps[-1]}; "
                          f"self-consistency is measured against step{final}", stacklevel=3)
        for step, k in own[(member.name, task)]:
            if isinstance(k, str):
                skipped.setdefault(k, []).append(f"{member.name} {task} step{step} vs step{final}")
            else:
                rows.append({"member": member.name, "step": step, "task": task, "metric": "self_consistency",
                             "value": k})
    return rows


def _find_reference(members: list, reference_seed: int | None):
    if len(members) < 2:
        return None
    if reference_seed is None:
        return members[0]
    return next((m for m in members if m.seed == reference_seed), None)


def _warn_no_reference(shape: str, members: list, reference_seed: int | None) -> None:
    """Why a shape of several seeds has no inter-seed agreement (one seed: nothing to compare)."""
    if len(members) >= 2:
        warnings.warn(f"agreement: shape {shape} has no member with seed {reference_seed}; no inter-seed agreement "
                      f"for it (seeds: {', '.join(str(m.seed) for m in members)})", stacklevel=3)
