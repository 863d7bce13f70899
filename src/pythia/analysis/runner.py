"""One runner for every analysis: `pythia analyze RUN NAME[,NAME] [--members] [--steps]`.

For each selected checkpoint `(member, step)` it asks every per-checkpoint analysis whether its
stored unit has the same cache key (analysis version, options, the checkpoint's weights
digest); if all have, the checkpoint is skipped without loading anything. Otherwise the
checkpoint is loaded once, its weights hashed for the manifest check as they are read (the
other files hashed from disk), and each stale analysis computes and writes its unit
atomically -- a `kill -9` loses at most the checkpoint in progress. Under
`torchrun` the checkpoints are dealt round-robin to the ranks, which write disjoint units; whole-
run analyses then run on rank 0 after a barrier. Checkpoints that fail (bad manifest, an error in
an analysis) are named, skipped, and make the run end non-zero.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..results import ResultsStore, Row
from ..run import RunError, compact_steps, select_steps
from .base import Analysis, AnalysisError, CheckpointContext, SkipCheckpoint, get

CRASH_ENV = "PYTHIA_ANALYZE_CRASH_AFTER"
"""Test hook: "N" kills the process (os._exit(137)) right after the N-th unit it computed."""

__all__ = ["AnalyzeSummary", "CheckpointAnalyses", "build_analyses", "full_rows", "resolve_device", "run_analyses",
           "run_checkpoint_hooks"]


@dataclass
class AnalyzeSummary:
    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    """{(analysis, reason): [member/stepN, ...]}: checkpoints an analysis does not apply to."""

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [f"analyze: {len(self.computed)} computed, {len(self.cached)} already up to date, "
                 f"{len(self.failed)} failed"]
        lines += [f"  failed: {f}" for f in self.failed]
        return "\n".join(lines)


def resolve_device(device: Any = "auto"):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AnalysisError("--device cuda asked for, but torch sees no CUDA device (use --device cpu)")
    return device


def build_analyses(names: Any, options: dict | None = None) -> list[Analysis]:
    """Instantiate analyses by name, each with the options it declares (others are ignored,
    so one option dict serves several analyses); an option no analysis knows is an error."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise AnalysisError("name at least one analysis (pythia analyze --list shows them)")
    options = {k: v for k, v in (options or {}).items() if v is not None}
    classes = [get(n) for n in dict.fromkeys(names)]
    known = {o.name for c in classes for o in c.options}
    unknown = sorted(set(options) - known)
    if unknown:
        raise AnalysisError(f"option(s) {unknown} belong to none of {', '.join(c.name for c in classes)}")
    return [c(**{o.name: options[o.name] for o in c.options if o.name in options}) for c in classes]


def full_rows(run, member, step: int | None, analysis: str, rows: list) -> list[dict]:
    """Analysis rows (`Row` or partial dicts) completed with the run's who-and-when columns."""
    out = []
    for r in rows:
        d = dict(r.__dict__) if isinstance(r, Row) else dict(r)
        m = member
        if m is None and d.get("member"):
            try:
                m = run.member(d["member"])
            except ValueError:
                m = None
        s = d.get("step", step)
        d.setdefault("suite", run.name)
        d["analysis"] = d.get("analysis") or analysis
        if m is not None:
            d.update(member=m.name, size=d.get("size") or m.shape, seed=d.get("seed", m.seed), step=s)
            if d.get("tokens") is None and s is not None and m.global_batch and m.seq_len:
                d["tokens"] = s * m.global_batch * m.seq_len
        out.append(d)
    return out


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _barrier(world: int) -> None:
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def _bar(total: int, progress: bool, rank: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not progress or rank != 0 or None, unit="ckpt", desc="analyze", dynamic_ncols=True)


def run_analyses(run, names: Any, *, members: Any = None, steps: Any = "all", device: Any = "auto",
                 dtype: Any = None, options: dict | None = None, progress: bool = True,
                 force: bool = False) -> AnalyzeSummary:
    """Run analyses `names` over the selected checkpoints of `run` (a RunView); see module doc."""
    analyses = build_analyses(names, options)
    per_ckpt = [a.name for a in analyses if a.scope == "checkpoint"]
    if run.kind == "store" and per_ckpt:
        raise AnalysisError(f"{run.source} is a results store, without checkpoints: {', '.join(per_ckpt)} "
                            "read(s) models; only whole-run analyses (e.g. scaling, seeds) run on a store")
    chosen = run.select(members)
    for a in analyses:
        a.check(run, chosen)
    store = run.results()
    rank, world = _rank_world()
    lock = None
    if rank == 0:  # one writer of a results table at a time (torchrun's other ranks follow rank 0)
        from ..lock import RunLock

        store.root.mkdir(parents=True, exist_ok=True)
        lock = RunLock(store.root, "pythia analyze", name=".analyze.lock").acquire()
    try:
        return _sweep(run, analyses, chosen, store, rank, world, steps, device, dtype, progress, force)
    finally:
        if lock is not None:
            lock.release()


def _sweep(run, analyses, chosen, store, rank, world, steps, device, dtype, progress, force) -> AnalyzeSummary:
    summary = AnalyzeSummary()
    try:
        return _sweep_into(summary, run, analyses, chosen, store, rank, world, steps, device, dtype, progress, force)
    except KeyboardInterrupt as exc:  # Ctrl-C: the caller says what was kept (exc.summary)
        exc.summary = summary
        raise


def _sweep_into(summary, run, analyses, chosen, store, rank, world, steps, device, dtype, progress,
                force) -> AnalyzeSummary:
    per_ckpt = [a for a in analyses if a.scope == "checkpoint"]
    dev = resolve_device(device)
    for a in analyses:
        a.device, a.dtype, a.forced = dev, dtype, force
    if per_ckpt:
        step_sel = steps if steps is not None else (run.focus_step if run.focus_step is not None else "all")
        units = _units(chosen, step_sel)
        mine = units[rank::world]
        shared: dict = {}
        with _bar(len(mine), progress, rank) as bar:
            for member, ck in mine:
                bar.set_postfix_str(f"{member.name} {ck.revision}", refresh=False)
                _one_checkpoint(run, member, ck, per_ckpt, store, dev, dtype, shared, summary, force,
                                progress and rank == 0)
                bar.update(1)
        _warn_skipped(summary)
    _barrier(world)
    if rank == 0:  # member stages, then whole-run analyses (which see every member)
        for a in per_ckpt:
            for member in chosen:
                _one_member_stage(run, a, member, store, summary, force)
        for a in (a for a in per_ckpt if a.run_part):
            _one_run_part(run, a, store, summary, force)
        for a in (a for a in analyses if a.scope == "run"):
            _one_run_analysis(run, a, store, chosen if a.selects_members else run.members, summary, force)
        if summary.computed or store.csv_stale():  # a sweep with nothing new leaves the export as it is
            store.write_csv()
    return summary


def _units(chosen, step_sel) -> list:
    """(member, checkpoint) pairs of the selection. Listed steps that some members lack (a fork
    starts half-way; sizes saved on other schedules) are skipped for those members with one
    warning; a step no chosen member has is an error naming the members' steps."""
    units, lacking = [], {}
    for m in chosen:
        missing: list = []
        available = m.steps
        units += [(m, m.checkpoint(s, available=available)) for s in select_steps(available, step_sel, missing)]
        if missing:
            lacking[m.name] = missing
    if lacking and (len(chosen) == 1 or not units):
        groups: dict[tuple, list[str]] = {}  # members that lack the same steps and have the same ones: said once
        for m in chosen:
            if m.name in lacking:
                groups.setdefault((tuple(lacking[m.name]), compact_steps(m.steps)), []).append(m.name)
        raise RunError("no checkpoint at the selected step(s) for " + "; ".join(
            f"{_members(names)} (lack{'s' if len(names) == 1 else ''} {list(miss)}; "
            f"ha{'s' if len(names) == 1 else 've'} {has})" for (miss, has), names in groups.items()))
    if lacking:
        warnings.warn("steps skipped for members without those checkpoints: "
                      + "; ".join(f"{name}: {steps}" for name, steps in lacking.items()), stacklevel=3)
    return units


def _members(names: list[str]) -> str:
    if len(names) <= 3:
        return ", ".join(names)
    return f"{len(names)} members ({', '.join(names[:2])}, ..., {names[-1]})"


def _one_checkpoint(run, member, ck, analyses, store, device, dtype, shared, summary, force,
                    progress: bool = False) -> None:
    label = f"{member.name}/{ck.revision}"
    try:
        digest = ck.digest
    except (OSError, ValueError) as exc:
        summary.failed.append(f"{label}: {exc}")
        return
    todo = [a for a in analyses if force or store.unit_key(a.name, member.name, ck.step) != a.cache_key(digest)]
    if len(todo) < len(analyses):  # cached units are trusted only if the files still match the manifest
        changed = ck.quick_problems()
        if changed:
            summary.failed.append(
                f"{label}: the checkpoint changed after it was written, so its cached results are not used: "
                f"{'; '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}. `pythia verify {run.source}` checks "
                f"every file; restore the file or retrain the step; `--force` recomputes with a full hash check")
            return
    summary.cached += [f"{a.name} {label}" for a in analyses if a not in todo]
    if not todo:
        return
    try:  # the weights are read once: hashed for the manifest check as they load
        model, problems = ck.load_checked(device=device, dtype=dtype)
    except Exception:  # noqa: BLE001 - intact but unloadable: each analysis that needs it reports why
        model, problems = None, []
    if problems:
        summary.failed.append(f"{label}: checkpoint fails its manifest ({'; '.join(problems[:3])})")
        return
    ctx = CheckpointContext(run=run, member=member, checkpoint=ck, device=device, dtype=dtype, shared=shared,
                            progress=progress, force=force, model_override=model,
                            analyses=tuple(a.name for a in todo))
    for a in todo:
        try:
            rows = a.compute(ctx)
        except AnalysisError:
            raise
        except SkipCheckpoint as why:
            summary.skipped.setdefault((a.name, str(why)), []).append(label)
            rows = []
        except Exception as exc:  # noqa: BLE001 - one bad checkpoint must not stop the sweep
            traceback.print_exc(file=sys.stderr)
            summary.failed.append(f"{a.name} {label}: {type(exc).__name__}: {exc}")
            continue
        store.put(a.name, full_rows(run, member, ck.step, a.name, rows), key=a.cache_key(digest),
                  member=member.name, step=ck.step)
        summary.computed.append(f"{a.name} {label}")
        if os.environ.get(CRASH_ENV) == str(len(summary.computed)):
            os._exit(137)  # test hook: what SIGKILL looks like, right after a unit was written
    ctx.__dict__.pop("model", None)  # free the weights before the next checkpoint


def _one_member_stage(run, a: Analysis, member, store: ResultsStore, summary: AnalyzeSummary, force: bool) -> None:
    """A per-checkpoint analysis' stage over all of a member's checkpoints (Analysis.member_inputs)."""
    digest = a.member_inputs(run, member, store)
    if digest is None:
        return
    key = a.cache_key(digest)
    label = f"{a.name} {member.name} (member)"
    if not force and store.unit_key(a.name, member.name, None) == key and a.member_outputs_exist(run, member):
        summary.cached.append(label)
        return
    try:
        rows = a.compute_member(run, member, store)
    except AnalysisError:
        raise
    except Exception as exc:  # noqa: BLE001 - as for a checkpoint: named, the others go on
        traceback.print_exc(file=sys.stderr)
        summary.failed.append(f"{label}: {type(exc).__name__}: {exc}")
        return
    store.put(a.name, full_rows(run, member, None, a.name, rows), key=key, member=member.name)
    summary.computed.append(label)


def _inputs_digest(store: ResultsStore, a: Analysis) -> str:
    """Hash of the cache keys of the units `a` reads: a whole-run analysis is stale when any input changed."""
    h = hashlib.sha256()
    names = [n for n in store.analyses() if a.reads(n)]
    for rel, key in (store.unit_keys(names) if names else {}).items():  # folded units: from the tables' index
        h.update(rel.encode())
        h.update(json.dumps(key, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _one_run_analysis(run, a: Analysis, store: ResultsStore, members, summary: AnalyzeSummary, force: bool) -> None:
    key = a.cache_key(_inputs_digest(store, a) if a.cacheable else None)  # never compared when not cacheable
    key["members"] = [m.name for m in members]
    outside = a.run_inputs(run, members) if a.cacheable else None
    if outside is not None:
        key["inputs"] = outside
    if not force and a.cacheable and store.unit_key(a.name, None, None) == key:
        summary.cached.append(a.name)
        return
    rows = a.compute_run(run, store, members)
    store.put(a.name, full_rows(run, None, None, a.name, rows), key=key)
    summary.computed.append(a.name)


def _warn_skipped(summary: AnalyzeSummary) -> None:
    for (name, why), labels in sorted(summary.skipped.items()):
        shown = ", ".join(labels[:12]) + (f", ... ({len(labels)} in all)" if len(labels) > 12 else "")
        warnings.warn(f"{name}: {len(labels)} checkpoint(s) skipped, {why}: {shown}", stacklevel=3)


def _one_run_part(run, a: Analysis, store: ResultsStore, summary: AnalyzeSummary, force: bool) -> None:
    """The whole-run part of a per-checkpoint analysis (`Analysis.run_part`), cached by the keys
    of that analysis' per-checkpoint units over every member and the weights their checkpoints
    hold now (a checkpoint rewritten since its unit reruns it too)."""
    h = hashlib.sha256()
    for m in run.members:
        available = m.steps
        for step in available:
            key = store.unit_key(a.name, m.name, step)
            if key is not None:
                h.update(json.dumps([m.name, step, key, m.checkpoint(step, available=available).digest],
                                    sort_keys=True).encode())
    key = a.cache_key(h.hexdigest()[:16])
    key["members"] = [m.name for m in run.members]
    if not force and store.unit_key(a.name, None, None) == key:
        summary.cached.append(f"{a.name} (run)")
        return
    a.force = force
    rows = a.compute_run(run, store, run.members)
    store.put(a.name, full_rows(run, None, None, a.name, rows), key=key)
    summary.computed.append(f"{a.name} (run)")


def run_checkpoint_hooks(run, member, checkpoint, names: list[str], *, model, device, write: bool,
                         autocast=None, options: dict | None = None, shared: dict | None = None) -> dict:
    """The trainer's checkpoint-time hook: run per-checkpoint analyses `names` on the model in
    memory (every rank calls it, so sharded models work); rank 0 (`write`) stores the rows.
    Returns {metric: value} of the rows with an empty task, for the trainer's own log."""
    out: dict = {}
    if not names:
        return out
    store = run.results() if write else None
    ctx = CheckpointContext(run=run, member=member, checkpoint=checkpoint, device=device, model_override=model,
                            autocast=autocast, shared=shared if shared is not None else {},
                            analyses=tuple(names))
    analyses = build_analyses(names)
    if options:  # trainer-supplied defaults (e.g. its micro batch) for the options an analysis has
        analyses = [type(a)(**{**a.opts, **{k: v for k, v in options.items() if k in a.opts}}) for a in analyses]
    for a in analyses:
        if a.scope != "checkpoint":
            continue
        try:
            rows = a.compute(ctx)
        except SkipCheckpoint:
            rows = []
        if store is not None:
            store.put(a.name, full_rows(run, member, checkpoint.step, a.name, rows),
                      key=a.cache_key(checkpoint.digest), member=member.name, step=checkpoint.step)
        out.update({r.metric: r.value for r in rows if isinstance(r, Row) and not r.task})
    return out


class CheckpointAnalyses:
    """The trainer's checkpoint callback (pythia.train.callbacks) that runs analyses.

    At every checkpoint it stores the member's training losses since the previous scheduled
    checkpoint (analysis `train_loss`, one unit per member and checkpoint interval, so the report
    reads one table and a checkpoint's cost does not grow with the updates done), then runs the
    spec's per-checkpoint analyses `names` on the model in memory (every rank, so sharded models
    work; rank 0 stores the rows). Its scratch space (`shared`, e.g. val_loss's validation
    windows) lives as long as the callback: read once per training run, not at every checkpoint.
    Built and wired in by the suite driver (pythia.suite).
    """

    def __init__(self, run, names: Any):
        self.run = run
        self.names = tuple(names or ())
        self.shared: dict = {}
        self._schedule = run.spec.checkpoint_steps() if run.spec is not None else []

    def post_checkpoint_saved(self, saved) -> dict | None:
        member = self.run.member(saved.member)
        if saved.is_main:
            self.store_train_loss(member, saved.step)
        if not self.names:
            return None
        return run_checkpoint_hooks(self.run, member, member.checkpoint(saved.step), list(self.names),
                                    model=saved.model, device=saved.device, write=saved.is_main,
                                    autocast=saved.autocast, options={"val_batch": saved.micro_batch},
                                    shared=self.shared)

    def store_train_loss(self, member, step: int) -> None:
        """The unit (train_loss, member, step): the updates after the previous scheduled checkpoint."""
        from .train_loss import TrainLoss, interval_rows

        after = max((s for s in self._schedule if s < step), default=-1)
        rows = interval_rows(member, after, step)
        key = {**TrainLoss().cache_key(None), "updates": [after + 1, step]}
        self.run.results().put("train_loss", full_rows(self.run, member, None, "train_loss", rows), key=key,
                               member=member.name, step=step)

    def pending(self, member: str, step: int) -> bool:
        store = self.run.results()
        return any(store.unit_key(n, member, step) is None for n in ("train_loss", *self.names))
