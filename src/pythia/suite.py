"""A suite = shapes x seeds trained one after another on the same GPT-NeoX data order.

`train_suite(spec)` is resumable: re-running it skips finished members and continues the
interrupted one from its last intact checkpoint. Members share one TrainingOrder per data seed
(one for the whole suite by default; one per member seed with data.seed: per_member).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import yaml

from . import layout
from .config import padded_vocab_size
from .analysis.runner import CheckpointAnalyses
from .data.tokenize import dataset_tokenizer, dataset_vocab
from .data.tokenizer import load_tokenizer
from .io import write_text_atomic
from .lock import LockedError, RunLock
from .run import open_run
from .train.disk import run_disk_lines, tokenizer_text
from .train.distributed import DistContext, init_distributed
from .train.preempt import StopSignal, TrainingInterrupted
from .train.progress import progress_bar
from .train.spec import Member, SpecError, SuiteSpec, dataset_vocab_size
from .train.trainer import MemberRun, Trainer

# Fields that may change between a run and its resumption without changing the math.
# `interventions` too: adding a fork to a trained run leaves its members alone; each fork's own
# intervention.json refuses a changed intervention (intervention.check_record).
_RESUME_FREE = {("output",), ("tensorboard",), ("data", "order_dir"), ("analyses",), ("checkpoints", "max_shard_size"),
                ("checkpoints", "gradients"), ("train", "optimizer_state_every"), ("train", "compile"),
                ("interventions",)}


def resolve(spec: SuiteSpec, vocab: int | None = None) -> list[Member]:
    """The suite's members with their ModelConfigs (custom shapes sized from the dataset's
    vocabulary: `vocab` token ids when the caller has read it, else read here)."""
    needs_vocab = any(m.size is None and m.vocab_size is None for m in spec.members)
    if not needs_vocab:
        return spec.resolve_members(None)
    return spec.resolve_members(padded_vocab_size(vocab) if vocab is not None else dataset_vocab_size(spec.data.train))


def check_inputs(spec: SuiteSpec) -> list[Member]:
    """Resolve the members and check the data they will read: the training and validation
    datasets open, and every member's vocabulary holds the dataset's largest token id.
    Raises a named error; writes nothing."""
    from .data.indexed import IndexedDataset

    check_analyses(spec)
    for field_name, prefix in (("data.train", spec.data.train), ("data.valid", spec.data.valid)):
        if prefix is None:
            continue
        try:
            IndexedDataset(prefix)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{field_name}: {exc}") from None
    vocab = dataset_vocab(spec.data.train)  # the .bin read at most once, for both uses
    members = resolve(spec, vocab)
    top = vocab - 1  # the dataset's largest token id
    for m in members:
        if top >= m.config.vocab_size:
            raise SpecError(f"member {m.name}: vocab_size {m.config.vocab_size} is too small for the dataset "
                            f"{spec.data.train}, whose largest token id is {top} (needs vocab_size > {top})")
    return members


def check_forks(spec: SuiteSpec, members: list[Member]) -> list:
    """The forks of `interventions:` as ForkPlans, every transform resolved and tried on a real
    batch, every fork folder and base checkpoint already on disk checked. Raises a named error
    (naming the spec file) before anything is trained; writes nothing."""
    if not spec.interventions:
        return []
    try:
        return _check_forks(spec, members)
    except SpecError as exc:
        raise SpecError(f"{spec.source}: {exc}" if spec.source else str(exc)) from None


def _check_forks(spec: SuiteSpec, members: list[Member]) -> list:
    import dataclasses

    from .data.indexed import IndexedDataset
    from .train import intervention

    by_name = {m.name: m for m in members}
    tokenizer = dataset_tokenizer(spec.data.train)
    tokens = IndexedDataset(spec.data.train).tokens
    width = spec.data.seq_len + 1
    sample = np.resize(np.asarray(tokens[: 2 * width], dtype=np.int64), (2, width))  # real tokens, (2, S+1)
    run_dir, iters, plans = Path(spec.output), spec.train.iters, []
    for i, iv in enumerate(spec.interventions):
        where = f"interventions[{i}] ({iv.name})"
        vocab = min(by_name[m].config.vocab_size for m in iv.members)
        transform = intervention.resolve(iv, tokenizer, vocab, where)
        intervention.check_transform(transform, sample, where)
        for base in iv.members:
            fork = dataclasses.replace(by_name[base], name=iv.fork_name(base))
            plan = intervention.ForkPlan(member=fork, base=base, intervention=iv, transform=transform)
            intervention.check_record(run_dir / fork.name, plan)
            intervention.check_base_step(run_dir / base, plan, iters, _last_step(run_dir / base) >= iters)
            plans.append(plan)
    return plans


def check_analyses(spec: SuiteSpec) -> None:
    """The spec's `analyses:` are registered per-checkpoint analyses (pythia analyze --list).
    The schema checks only that they are names; the plug-ins are loaded here, by the suite."""
    if not spec.analyses:
        return
    from .analysis.base import AnalysisError, get

    for i, name in enumerate(spec.analyses):
        try:
            cls = get(name)
        except AnalysisError as exc:
            raise _named(spec, f"analyses[{i}]: {exc}") from None
        if cls.scope != "checkpoint":
            raise _named(spec, f"analyses[{i}]: {name!r} is a whole-run analysis; only per-checkpoint analyses "
                               "run at checkpoint time (run it afterwards with pythia analyze)")


def _named(spec: SuiteSpec, message: str) -> SpecError:
    return SpecError(f"{spec.source}: {message}" if spec.source else message)


def describe(spec: SuiteSpec) -> str:
    """The --dry-run text: resolved spec, member list, checkpoint steps (see `dry_run`)."""
    return dry_run(spec)[0]


def dry_run(spec: SuiteSpec) -> tuple[str, str | None]:
    """The --dry-run text (resolved spec, member list, checkpoint steps, disk) and, when the run
    could not start (its data is missing), why not; None when it could. The disk estimate is
    still given without the data when every member's vocabulary is known from the spec."""
    lines = ["# resolved suite spec", spec.to_yaml().rstrip(), "", "# members"]
    problem = None
    ready = True
    try:
        members = check_inputs(spec)
    except FileNotFoundError as exc:  # dry run before the data exists
        problem, ready = str(exc), False
        if not any(m.size is None and m.vocab_size is None for m in spec.members):
            members = spec.resolve_members(None)  # every vocabulary spelled out in the spec
        else:
            members = []
            lines.append(f"# (custom shapes without vocab_size need the dataset's vocabulary: {exc})")
            lines += [k.name for k in spec.member_keys()]
    for m in members:
        lines.append(f"{m.name:<28} params {m.config.num_params():>14,}  L{m.config.num_layers} d{m.config.hidden_size} "
                     f"H{m.config.num_heads} V{m.config.vocab_size}  lr {m.lr:g} -> {m.min_lr:g}  "
                     f"init seed {m.seed}  data seed {m.data_seed}")
    forks = check_forks(spec, members) if members and ready else []
    if spec.interventions:
        lines += ["", "# forks (interventions; trained after the members, from their base's checkpoint)"]
        lines += [f"{p.member.name:<28} fork of {p.base} from step{p.from_step}: {p.transform.describe()}"
                  for p in forks] or [name for name, _, _ in spec.fork_keys()]
    t = spec.train
    lines += ["", f"# lr schedule {t.lr_schedule}: warmup_iter = {t.warmup_fraction!r} x {t.iters} = "
                  f"{float(spec.warmup_iters())!r} (a float, unrounded, as GPT-NeoX v1.0 passes it)"]
    steps = spec.checkpoint_steps()
    lines += ["", f"# checkpoint steps ({len(steps)} per member)", " ".join(map(str, steps)),
              f"# output: {spec.output}/{{member}}/step{{N}}"]
    if members:
        tokenizer = dataset_tokenizer(spec.data.train) if ready else None
        text = tokenizer_text(load_tokenizer(tokenizer)) if tokenizer is not None else None
        with_state = [s for s in spec.optimizer_state_steps() if s > 0]  # step0: no update yet, no state
        written = [(p.member, sum(s > p.from_step for s in steps), sum(s > p.from_step for s in with_state))
                   for p in forks]  # a fork's first checkpoint is a hard link of its base's
        lines += ["", *run_disk_lines(members, len(steps), text, spec.output, len(with_state), written)]
        if not ready:
            lines.append("# (without the dataset: the tokenizer files each checkpoint carries and the forks are not counted)")
    return "\n".join(lines), problem


def _flatten(d: dict, prefix: tuple = ()) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _check_same_suite(run_dir: Path, spec: SuiteSpec) -> None:
    path = run_dir / "suite.yaml"
    if not path.is_file():
        return
    old = _flatten(yaml.safe_load(path.read_text()) or {})
    new = _flatten(spec.to_dict())
    changed = sorted(".".join(k) for k in set(old) | set(new)
                     if k not in _RESUME_FREE and old.get(k) != new.get(k) and not _moved_along(k, old, new))
    if changed:
        raise SpecError(f"{path} was written by a different suite spec (changed: {', '.join(changed)}); "
                        "resuming would mix two recipes. Use a new output folder (--out) or restore the spec.")


def _moved_along(key: tuple, old: dict, new: dict) -> bool:
    """A data path that differs only because the run and its data were moved or copied together
    (a demo folder: run/ and data/ side by side) is the same data: it sits where it sat
    relative to the run folder."""
    if key not in (("data", "train"), ("data", "valid"), ("data", "order_dir")):
        return False
    paths = old.get(key), new.get(key), old.get(("output",)), new.get(("output",))
    if not all(isinstance(p, str) for p in paths):
        return False
    return os.path.relpath(paths[0], paths[2]) == os.path.relpath(paths[1], paths[3])


def _build_orders(spec: SuiteSpec, members: list[Member], ctx: DistContext, progress: bool) -> dict:
    from .data.order import TrainingOrder, num_samples_for

    out_dir = spec.data.order_dir or str(Path(spec.output) / "order")
    num = num_samples_for(spec.train.iters, spec.train.global_batch)
    orders = {}
    for seed in sorted({m.data_seed for m in members}):
        # rank 0 writes the cached index files first; the others then only read them
        build = lambda: TrainingOrder.build(spec.data.train, spec.data.seq_len, seed, num, name="train_0",  # noqa: E731
                                            out_dir=out_dir, progress=progress and ctx.is_main)
        if ctx.is_main:
            orders[seed] = build()
        ctx.barrier()
        if not ctx.is_main:
            orders[seed] = build()
    return orders


def _bar(total: int, initial: int, progress: bool, ctx: DistContext):
    return progress_bar(total, initial, progress and ctx.is_main, desc="suite")


def train_suite(spec: SuiteSpec, progress: bool = True) -> Path:
    """Train (or resume) every member of the suite; returns the run folder.

    Rank 0 alone writes RUN/suite.yaml, checkpoints and logs; every rank computes.
    """
    ctx = init_distributed(spec.train.device)
    lock = None
    try:
        run_dir = Path(spec.output)
        members = check_inputs(spec)  # before anything is written: a typo must not pin a spec
        forks = check_forks(spec, members)
        lock = _lock_run(run_dir, ctx)  # before anything in run_dir is written or cleaned up
        if ctx.is_main:
            _check_same_suite(run_dir, spec)
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(run_dir / "suite.yaml", spec.to_yaml())
        ctx.barrier()
        orders = _build_orders(spec, members, ctx, progress)
        callbacks = (CheckpointAnalyses(open_run(run_dir), spec.checkpoint_analyses()),)
        tokenizer_path = dataset_tokenizer(spec.data.train)  # parsed once, copied into every checkpoint
        tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path is not None else None
        iters = spec.train.iters
        jobs = [(m, None) for m in members] + [(p.member, p) for p in forks]  # forks after their bases
        first = {m.name: (p.from_step if p else 0) for m, p in jobs}
        done = {m.name: max(_last_step(run_dir / m.name), first[m.name]) for m, _ in jobs}
        bar = _bar(sum(iters - first[m.name] for m, _ in jobs), sum(done[k] - first[k] for k in done), progress, ctx)
        try:
            with StopSignal() as stop:  # SIGTERM/SIGINT: finish the step, checkpoint, stop (preempt.py)
                previous = None
                for m, plan in jobs:
                    if done[m.name] >= iters:
                        continue
                    if previous is not None and ctx.any(stop.signum is not None):  # arrived as a member ended
                        raise TrainingInterrupted(stop.signum or signal.SIGTERM, previous, iters)
                    order = orders[m.data_seed]
                    if plan is not None:
                        order = _fork_order(run_dir, plan, order, ctx)
                    run = MemberRun(member=m, spec=spec, member_dir=run_dir / m.name, order=order,
                                    callbacks=callbacks, ctx=ctx, tokenizer=tokenizer,
                                    fork_from=plan.from_step if plan is not None else None)
                    Trainer(run).run_loop(bar, stop)
                    previous = m.name
        finally:
            bar.close()
        return run_dir
    finally:
        if lock is not None:
            lock.release()
        ctx.close()


def _fork_order(run_dir: Path, plan, order, ctx: DistContext):
    """Rank 0 gives the fork its base's step{S} (the base has just trained) and tells the other
    ranks how it went, so a refusal stops every rank; each then reads the base's order through
    the fork's transform."""
    from .train.intervention import InterventionOrder, prepare_fork

    refusal = None
    if ctx.is_main:
        try:
            prepare_fork(run_dir, plan)
        except SpecError as exc:
            refusal = str(exc)
    refusal = ctx.broadcast_object(refusal)
    if refusal is not None:
        raise SpecError(refusal)
    return InterventionOrder(order, plan.transform, plan.from_step)


def _lock_run(run_dir: Path, ctx: DistContext) -> RunLock | None:
    """Rank 0 alone holds the run's writer lock, since it alone writes; the other ranks learn its
    outcome, so a refused torchrun job stops on every rank instead of hanging at a barrier.
    (Each rank locking would refuse its own job's ranks, flock being per open file, and the
    ranks of other nodes may not even see the run folder.)"""
    lock, refusal = None, None
    if ctx.is_main:
        try:
            lock = RunLock(run_dir, "pythia train").acquire()
        except LockedError as exc:
            refusal = exc
    if ctx.distributed:
        import torch.distributed as dist

        box = [None if refusal is None else str(refusal)]
        dist.broadcast_object_list(box, src=0)
        refusal = refusal or (LockedError(box[0]) if box[0] is not None else None)
    if refusal is not None:
        raise refusal
    return lock


def _last_step(member_dir: Path) -> int:
    steps = layout.complete_checkpoints(member_dir)
    return steps[-1] if steps else 0
