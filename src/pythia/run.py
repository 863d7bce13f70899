"""The run view: one read-only object that knows a run's layout, for everything that studies it.

`open_run(source)` accepts
- a run folder (`RUN/suite.yaml` + one folder per member),
- a `pythia demo` output root (its `demo.json`; the run is `ROOT/run`),
- a member folder (`RUN/{member}`) or a step folder (`RUN/{member}/step{N}`): the run above
  it, focused on that member (and step),
- a Hugging Face Hub repo id ("EleutherAI/pythia-70m", or several joined by commas) whose
  `stepN` revisions sit in the local HF cache: each repo is a member, its cached revisions its
  checkpoints, so every analysis works on the real Pythia checkpoints the same way,
- a standalone results store (a folder with `units/`, as `pythia results import --into DIR`
  writes): a run without members or checkpoints, whose whole-run analyses read its table.

It knows the spec, the members (name, shape, seed, data seed), each member's checkpoint steps in
numeric order, the dataset, tokenizer and order parameters each member trained with, and loads
`(member, step)`. Nothing here writes to the run; results go through `pythia.results`.

It is also the one resolver of "which folder is this checkpoint" (`resolve_checkpoint`) and the
home of the public `load_model` (pythia.load_model): resolve, then `pythia.hf.load_folder`.
The on-disk rules it reads by are pythia.layout's.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .layout import (check_manifest, quick_check_manifest, complete_checkpoints, digest_of_checkpoint, hub_cache_dir, hub_repo_dir,
                     hub_revisions, parse_step, recorded_digest, resolve_hub_cache, step_dir_name)

__all__ = ["Checkpoint", "MemberView", "RunView", "RunError", "load_model", "open_run", "parse_revision",
           "resolve_checkpoint"]


class RunError(ValueError):
    """A source is not a run, or a member/step asked for is not in it; the message says what is."""


def parse_revision(revision: Any) -> int | None:
    """`"step128"` or `128` -> 128; `"main"`/None -> None (the last step). Anything else (paths,
    other names) is refused, so a revision can never reach outside its member folder."""
    if revision is None or revision == "main":
        return None
    if isinstance(revision, bool):
        raise RunError(f"revision must be 'stepN', an integer step or 'main', got {revision!r}")
    if isinstance(revision, int):
        if revision < 0:
            raise RunError(f"revision must be a step >= 0, got {revision}")
        return revision
    if isinstance(revision, str):
        step = parse_step(revision) if revision.startswith("step") else None
        if step is None and revision.isdigit():
            step = int(revision)
        if step is not None:
            return step
    raise RunError(f"revision must be 'stepN' (e.g. 'step128'), an integer step or 'main', got {revision!r}")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint `(member, step)`: where its HF folder is and how to load it."""

    member: "MemberView"
    step: int
    path: Path
    """The Hugging Face model folder (config.json + safetensors)."""

    @property
    def revision(self) -> str:
        return step_dir_name(self.step)

    @cached_property
    def digest(self) -> str:
        """Identity of the weights, for caches: the manifest's weights digest (our runs) or the
        snapshot's commit sha (Hub cache, whose folders are named by it)."""
        try:
            recorded = recorded_digest(self.path)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        if recorded is not None:
            return "w:" + recorded
        if self.member.run.kind == "hub":
            return "hub:" + self.path.name
        return "w:" + digest_of_checkpoint(self.path)

    def problems(self) -> list[str]:
        """Manifest check (empty = intact). Hub snapshots are content-addressed: always []."""
        if self.member.run.kind == "hub":
            return []
        return check_manifest(self.path)

    def quick_problems(self) -> list[str]:
        """The cheap manifest check (sizes, files changed since: layout.quick_check_manifest),
        before cached results of this checkpoint are trusted. [] for a Hub snapshot and for a
        folder without a manifest (whose digest is computed from the weights themselves)."""
        if self.member.run.kind == "hub" or not (self.path / "manifest.json").is_file():
            return []
        return quick_check_manifest(self.path)

    @cached_property
    def hf_config(self) -> dict:
        """config.json as a dict, parsed once for everything that reads it (the load included)."""
        from .hf import read_config

        return read_config(self.path)

    def load(self, device: Any = None, dtype: Any = None):
        """Our GPTNeoX with this checkpoint's weights, in eval mode."""
        from .hf import load_folder

        return load_folder(self.path, device=device, dtype=dtype, hf_config=self.hf_config)

    def load_checked(self, device: Any = None, dtype: Any = None) -> tuple[Any, list[str]]:
        """(model, []) once the checkpoint passes its manifest check, else (None, problems), reading
        every weight file once: its bytes are hashed for the manifest as they are parsed. A
        checkpoint that fails to load yet passes its manifest re-raises the load's error."""
        if self.member.run.kind == "hub":
            return self.load(device=device, dtype=dtype), []
        from .hf import load_folder

        hashed: dict[str, str] = {}
        try:
            model = load_folder(self.path, device=device, dtype=dtype, hf_config=self.hf_config, hashed=hashed)
        except Exception:
            problems = check_manifest(self.path)
            if problems:
                return None, problems
            raise
        problems = check_manifest(self.path, hashed)
        return (None, problems) if problems else (model, [])

    @property
    def tokens(self) -> int | None:
        """Tokens trained on when this checkpoint was written (step x batch x seq_len)."""
        m = self.member
        if m.global_batch is None or m.seq_len is None:
            return None
        return self.step * m.global_batch * m.seq_len


@dataclass
class MemberView:
    """One member of a run: a shape x a seed, with its checkpoints and its training data."""

    run: "RunView"
    name: str
    path: Path
    shape: str
    """The shape's name (`pythia-70m`, `d64-l2`): members of one shape differ only by seed."""
    seed: int | None = None
    data_seed: int | None = None
    config: Any = None
    """ModelConfig, when the spec (or the Hub config) gives one."""
    base: str | None = None
    """A fork (suite spec `interventions:`): the member it was forked from; None otherwise."""
    intervention: Any = None
    """A fork's InterventionSpec (name, from_step, token_map or function); None otherwise."""
    _hub_revisions: dict[int, Path] = field(default_factory=dict, repr=False)

    @property
    def from_step(self) -> int | None:
        """A fork's first step (its base's checkpoint it starts from); None for other members."""
        return self.intervention.from_step if self.intervention is not None else None

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        """Checkpoint steps in numeric order."""
        if self.run.kind == "hub":
            return sorted(self._hub_revisions)
        return complete_checkpoints(self.path)

    def checkpoint(self, step: Any = None, *, available: list[int] | None = None) -> Checkpoint:
        """The checkpoint at `step` ("step128", 128, or None/"main" for the last one).
        `available`: the member's steps when the caller listed them already (listing stats every
        step folder: once per member, not once per checkpoint, at 154 checkpoints)."""
        n = parse_revision(step)
        steps = self.steps if available is None else available
        if not steps:
            raise RunError(f"member {self.name} ({self.path}) has no complete checkpoints yet")
        if n is None:
            n = steps[-1]
        if n not in steps:
            raise RunError(f"member {self.name} has no checkpoint at step {n}; available: "
                           f"{compact_steps(steps)}")
        path = self._hub_revisions[n] if self.run.kind == "hub" else self.path / step_dir_name(n)
        return Checkpoint(member=self, step=n, path=path)

    def checkpoints(self, steps: Any = "all") -> list[Checkpoint]:
        available = self.steps
        return [self.checkpoint(s, available=available) for s in select_steps(available, steps)]

    # -- what it trained on -----------------------------------------------------------------
    @property
    def spec(self):
        return self.run.spec

    @property
    def dataset(self) -> str | None:
        """Prefix of the training .bin/.idx (None when unknown, e.g. a Hub repo without --data)."""
        if self.run.spec is not None:
            return self.run.spec.data.train
        return self.run.data

    @property
    def seq_len(self) -> int | None:
        return self.run.spec.data.seq_len if self.run.spec is not None else self.run.hub_seq_len

    @property
    def global_batch(self) -> int | None:
        return self.run.spec.train.global_batch if self.run.spec is not None else self.run.hub_batch

    @property
    def train_iters(self) -> int | None:
        return self.run.spec.train.iters if self.run.spec is not None else self.run.hub_iters

    @property
    def tokenizer_path(self) -> Path | None:
        """tokenizer.json every step carries (else the dataset's)."""
        for step in reversed(self.steps):
            p = self.checkpoint(step).path / "tokenizer.json"
            if p.is_file():
                return p
        if self.dataset:
            from .data.tokenize import dataset_tokenizer

            return dataset_tokenizer(self.dataset)
        return None

    def order(self, progress: bool = False):
        """The training order this member read (a TrainingOrder; a PreshuffledOrder for Hub
        repos opened with a preshuffled dataset). Built from the cached index when present.
        A fork's is an InterventionOrder: its base's, transformed from its from_step on."""
        if self.intervention is not None:
            return self._fork_order()
        if self.run.spec is None:
            if self.run.data is None:
                raise RunError(f"{self.name}: no training data known; open the Hub repo with data=PREFIX "
                               "(the preshuffled Pile rows) to get its order")
            from .data.order import PreshuffledOrder

            return PreshuffledOrder(self.run.data)
        return self.run._order(self.data_seed, progress)

    def _fork_order(self):
        """The order a fork trained on: its base's, through the token ids its intervention.json
        recorded, or, before it trained, the spec's map resolved now. A function whose source
        changed since the fork trained is refused (it would show other batches)."""
        from .train.intervention import InterventionOrder, Transform, read_record, resolve, resolve_function

        iv = self.intervention
        base = self.run.member(self.base).order()
        record = read_record(self.path)
        if iv.function is not None:
            transform = resolve_function(iv.function, where=f"{self.name}: function")
            if record is not None and record["transform"].get("sha256") != transform.sha256:
                raise RunError(f"{self.name}: {iv.function} changed since the fork trained (its source sha256 was "
                               f"{record['transform'].get('sha256', '?')[:12]}, is {transform.sha256[:12]}): the "
                               "batches it would show are not the ones the fork trained on")
        elif record is not None:
            pairs = tuple(tuple(p) for p in record["transform"]["pairs"])
            spelled = tuple(tuple(p) for p in record.get("spelled") or ())
            transform = Transform(kind="token_map", pairs=pairs, spelled=spelled)
        else:
            transform = resolve(iv, self.tokenizer_path, None, f"{self.name}")
        return InterventionOrder(base, transform, iv.from_step)

    @property
    def token_curves_path(self) -> Path:
        return Path(self.run.results_dir or ".") / "artifacts" / "token_curves" / f"{self.name}.npz"

    def token_curves(self) -> dict:
        """The `token_curves` analysis' matrix of this member, as numpy arrays: tokens (windows x T),
        steps, surprisal (steps x windows x (T-1), float16; position k-1 holds token k's), and per
        token aoa, forgettability, variability, count (see docs/analyses.md)."""
        import numpy as np

        path = self.token_curves_path
        if not path.is_file():
            raise RunError(f"{path}: no token curves for {self.name}; run `pythia analyze {self.run.source} "
                           f"token_curves --members {self.name}`")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def metrics(self, after: int | None = None) -> list[dict]:
        """metrics.jsonl of the member (training telemetry), oldest first; with `after`, only the
        records after update `after`, read from the end of the file (the cost of those alone)."""
        from .train.metrics import read_jsonl, read_jsonl_after

        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return read_jsonl(path) if after is None else read_jsonl_after(path, after)


def compact_steps(steps: list[int]) -> str:
    if len(steps) <= 12:
        return ", ".join(map(str, steps))
    return ", ".join(map(str, steps[:6])) + ", ..., " + ", ".join(map(str, steps[-4:]))


def select_steps(available: list[int], steps: Any = "all", missing: list | None = None) -> list[int]:
    """`all`, `last`, `first`, a list/`0,1,2`, or `A:B` (B exclusive; either side may be empty).
    Listed steps that are not available raise RunError, or are appended to `missing` when given."""
    if steps is None or steps == "all":
        return list(available)
    if steps == "last":
        return available[-1:]
    if steps == "first":
        return available[:1]
    if isinstance(steps, str) and ":" in steps:
        a, _, b = steps.partition(":")
        try:
            lo = int(a) if a else 0
            hi = int(b) if b else None
        except ValueError:
            raise RunError(f"steps range must be A:B of integers, got {steps!r}") from None
        return [s for s in available if s >= lo and (hi is None or s < hi)]
    if isinstance(steps, str):
        steps = [p for p in steps.split(",") if p.strip()]
    wanted = [parse_revision(s.strip() if isinstance(s, str) else s) for s in steps]
    absent = [s for s in wanted if s not in available]
    if absent and missing is None:
        raise RunError(f"no checkpoint at step(s) {absent}; available: {compact_steps(available)}")
    if missing is not None:
        missing.extend(absent)
    return sorted(set(wanted) - set(absent))


class RunView:
    """A run opened read-only. Build it with `open_run`."""

    def __init__(self, *, kind: str, source: str, root: Path | None, spec=None, members=None,
                 focus_member: str | None = None, focus_step: int | None = None,
                 results_dir: Path | None = None, data: str | None = None, name: str | None = None):
        self.kind = kind
        """"run", "demo", "member", "step" (what the source was), "hub" or "store"."""
        self.source = source
        self.root = root
        self.spec = spec
        self.focus_member = focus_member
        self.focus_step = focus_step
        self.data = data
        self._name = name
        self._members: list[MemberView] = members or []
        self._orders: dict = {}
        self.results_dir = results_dir or (root / "results" if root is not None else None)
        self.hub_seq_len: int | None = 2048 if kind == "hub" else None
        self.hub_batch: int | None = 1024 if kind == "hub" else None
        self.hub_iters: int | None = 143000 if kind == "hub" else None

    @property
    def name(self) -> str:
        """The suite's name (spec `name`; a Hub run: the repo ids)."""
        if self.spec is not None:
            return self.spec.name
        return self._name or (self.root.name if self.root else self.source)

    @property
    def members(self) -> list[MemberView]:
        return list(self._members)

    def member(self, name: str | None = None) -> MemberView:
        """The member called `name`; None: the focused one, or the only one."""
        name = name or self.focus_member
        if name is None:
            if len(self._members) == 1:
                return self._members[0]
            raise RunError(f"{self.source} has {len(self._members)} members; pass a member: "
                           f"{', '.join(m.name for m in self._members)}")
        for m in self._members:
            if m.name == name:
                return m
        raise RunError(f"no member {name!r} in {self.source}; members: {', '.join(m.name for m in self._members)}")

    def select(self, members: Any = None) -> list[MemberView]:
        """Members by names (list or comma string); None: the focused member, else all."""
        if members is None:
            return [self.member()] if self.focus_member else self.members
        if isinstance(members, str):
            members = [m for m in members.split(",") if m.strip()]
        return [self.member(m.strip()) for m in members]

    def results(self):
        """The run's results table (`pythia.results.ResultsStore`); as a pandas frame in one call:
        `results_frame()`."""
        from .results import ResultsStore

        if self.results_dir is None:
            raise RunError(f"{self.source}: no folder for results; pass results_dir=")
        return ResultsStore(self.results_dir, run=self)

    def results_frame(self, analysis=None, metric=None, member=None, task=None, step=None):
        """The run's results as a pandas DataFrame (filters as `ResultsStore.rows`), in one call:
        `pythia.open_run("runs/suite").results_frame(analysis="eval", metric="acc")`."""
        return self.results().frame(analysis=analysis, metric=metric, member=member, task=task, step=step)

    def _order(self, data_seed: int, progress: bool):
        if data_seed not in self._orders:
            from .data.order import TrainingOrder, num_samples_for

            spec = self.spec
            out_dir = spec.data.order_dir or str(Path(spec.output) / "order")
            if not Path(out_dir).is_dir() and self.root is not None:
                out_dir = str(self.root / "order")  # a run folder that was moved
            self._orders[data_seed] = TrainingOrder.build(
                spec.data.train, spec.data.seq_len, data_seed,
                num_samples_for(spec.train.iters, spec.train.global_batch),
                name="train_0", out_dir=out_dir, progress=progress)
        return self._orders[data_seed]

    def describe(self) -> str:
        what = {"run": "run folder", "demo": "pythia demo output", "member": "member folder",
                "step": "step folder", "hub": "Hugging Face cache", "store": "results store"}[self.kind]
        lines = [f"{self.name}: {what} {self.source}" + (f" (run {self.root})" if self.root and
                                                          str(self.root) != self.source else "")]
        if self.spec is not None:
            s = self.spec
            lines.append(f"  data {s.data.train} seq_len {s.data.seq_len} data seed {s.data.seed}; "
                         f"{s.train.iters} iters x batch {s.train.global_batch}")
        for m in self.members:
            steps = m.steps
            lines.append(f"  {m.name:<24} shape {m.shape:<14} seed {m.seed} data seed {m.data_seed}  "
                         f"{len(steps)} checkpoints" + (f" ({steps[0]}..{steps[-1]})" if steps else "")
                         + (f"  fork of {m.base} from step {m.from_step}" if m.base else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"RunView({self.kind}, {self.source!r}, members={[m.name for m in self._members]})"


# ---------------------------------------------------------------------------------------------
# opening


def open_run(source: str | os.PathLike | list, *, results_dir: str | os.PathLike | None = None,
             data: str | None = None) -> RunView:
    """Open a run folder, demo root, member or step folder, or Hub repo id(s); see module doc.

    results_dir: where results go (default RUN/results; for Hub repos ./pythia-results/NAME).
    data: for Hub repos, the prefix of the preshuffled training data (the order is its file order).
    """
    if isinstance(source, (list, tuple)):
        return _open_hub([str(s) for s in source], results_dir, data)
    text = str(source)
    path = Path(text).expanduser()
    if not path.exists():
        repos = [s.strip() for s in text.split(",") if s.strip()]
        if repos and all(re.fullmatch(r"[\w.-]+/[\w.-]+", r) for r in repos) and not text.startswith((".", "/")):
            return _open_hub(repos, results_dir, data)
        raise RunError(f"{text}: no such folder (and not an ORG/NAME Hub repo id)")
    if not path.is_dir():
        raise RunError(f"{text}: not a folder; open a run folder, a demo output, a member or a step folder")
    path = path.resolve()
    results = Path(results_dir) if results_dir else None
    if (path / "demo.json").is_file():  # before suite.yaml: a demo root holds the spec it trained, too
        run = path / "run"
        if not (run / "suite.yaml").is_file():
            raise RunError(f"{text}: a pythia demo output whose run ({run}) has not been trained yet; run `pythia demo`")
        return _open_local(run, "demo", text, results)
    if (path / "suite.yaml").is_file():
        return _open_local(path, "run", text, results)
    if parse_step(path.name) is not None and (path.parent.parent / "suite.yaml").is_file():
        return _open_local(path.parent.parent, "step", text, results, member=path.parent.name,
                           step=parse_step(path.name))
    if (path.parent / "suite.yaml").is_file():
        return _open_local(path.parent, "member", text, results, member=path.name)
    if (path / "units").is_dir():
        return RunView(kind="store", source=text, root=path, results_dir=results or path, name=path.name)
    raise RunError(f"{text}: not a run (no suite.yaml here or above), not a demo output (no demo.json); "
                   "pass a run folder, e.g. demo-output/run or runs/NAME")


def _open_local(root: Path, kind: str, source: str, results_dir: Path | None,
                member: str | None = None, step: int | None = None) -> RunView:
    from .train.spec import SuiteSpec

    spec = SuiteSpec.from_yaml(root / "suite.yaml")
    view = RunView(kind=kind, source=source, root=root, spec=spec, focus_member=member, focus_step=step,
                   results_dir=results_dir)
    members = []
    for m in spec.member_keys():
        members.append(MemberView(run=view, name=m.name, path=root / m.name, shape=m.shape, seed=m.seed,
                                  data_seed=m.data_seed))
    for name, base, iv in spec.fork_keys():  # forks: the base's shape and seeds, plus base/intervention
        members.append(MemberView(run=view, name=name, path=root / name, shape=base.shape, seed=base.seed,
                                  data_seed=base.data_seed, base=base.name, intervention=iv))
    view._members = members
    if member is not None:
        view.member(member)  # raises with the list when the folder is not a member
    return view


def _open_hub(repos: list[str], results_dir, data) -> RunView:
    cache = hub_cache_dir()
    root_name = "+".join(r.replace("/", "--") for r in repos)
    view = RunView(kind="hub", source=",".join(repos), root=None,
                   results_dir=Path(results_dir) if results_dir else Path("pythia-results") / root_name,
                   data=str(Path(data).expanduser().absolute()) if data else None, name=",".join(repos))
    members = []
    for repo in repos:
        repo_dir = hub_repo_dir(repo, cache)
        if not (repo_dir / "refs").is_dir():
            raise RunError(f"{repo!r} is not in the local Hugging Face cache ({repo_dir} not found); download its "
                           f"revisions first with the Hugging Face CLI, e.g. `hf download {repo} --revision step1000`")
        revisions = hub_revisions(repo_dir)
        if not revisions:
            raise RunError(f"{repo}: no cached stepN revision with a config.json under {repo_dir}")
        short = repo.split("/")[-1]
        config = _hub_config(revisions[max(revisions)])
        m = re.search(r"-seed(\d+)$", short)
        members.append(MemberView(run=view, name=short, path=repo_dir, shape=re.sub(r"-seed\d+$", "", short),
                                  seed=int(m[1]) if m else None, config=config, _hub_revisions=revisions))
    view._members = members
    return view


def _hub_config(folder: Path):
    from .hf import from_hf_config

    try:
        return from_hf_config(json.loads((folder / "config.json").read_text(encoding="utf-8")),
                              source=str(folder / "config.json"))
    except Exception:  # noqa: BLE001 - an odd config still opens; loading will report it
        return None


# ---------------------------------------------------------------------------------------------
# resolving one checkpoint folder, and loading it


def resolve_checkpoint(path_or_repo_id: str | os.PathLike, revision: Any = None) -> Path:
    """The HF folder to load: a checkpoint folder; a run, demo output or member folder at
    `revision` ("stepN", N, or "main"/None = the last step); a models--ORG--NAME cache folder or
    an ORG/NAME Hub id from the local cache."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        if (path / "refs").is_dir() and (path / "snapshots").is_dir():  # a models--ORG--NAME folder
            return resolve_hub_cache(path.name.removeprefix("models--").replace("--", "/"), _hub_revision(revision),
                                     path.parent)
        if (path / "config.json").is_file():
            if revision is not None:
                raise ValueError(f"{path} is one checkpoint; pass revision= only with a member folder "
                                 f"(e.g. load_model({str(path.parent)!r}, revision={revision!r})) or drop it")
            return path
        try:
            view = open_run(path)
        except RunError:
            view = None
        if view is not None:
            if view.kind == "step":
                raise ValueError(f"{path} is a step folder without config.json (incomplete checkpoint?)")
            return view.member().checkpoint(revision).path
        step = parse_revision(revision)  # refuses paths and odd names before touching the disk
        have = sorted((p.name for p in path.iterdir() if (p / "config.json").is_file()),
                      key=lambda n: (parse_step(n) is None, parse_step(n) or 0, n))
        if step is None and have:
            step = parse_step(have[-1]) if parse_step(have[-1]) is not None else None
        if step is None:
            hint = f"; pass revision= one of {have}" if have else ""
            raise FileNotFoundError(f"{path}: no config.json, not a Hugging Face model directory{hint}")
        sub = path / step_dir_name(step)
        if not (sub / "config.json").is_file():
            raise FileNotFoundError(f"{sub}: no checkpoint for revision {revision!r} (available: {have})")
        return sub
    text = str(path_or_repo_id)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith((".", "/")) and not path.exists():
        return resolve_hub_cache(text, _hub_revision(revision))
    raise FileNotFoundError(f"{text}: no such directory (and not an ORG/NAME Hub repo id)")


def _hub_revision(revision: Any) -> str | None:
    """Hub revisions are branch names; an integer step means its `stepN` branch."""
    if isinstance(revision, int) and not isinstance(revision, bool):
        return step_dir_name(revision)
    if revision is not None and not isinstance(revision, str):
        raise ValueError(f"revision must be a string like 'step3000' or an integer step, got {revision!r}")
    return revision


def load_model(path_or_repo_id: str | os.PathLike, revision: Any = None, dtype: Any = None,
               device: Any = None):
    """Load a GPTNeoX checkpoint as our GPTNeoX (eval mode): `pythia.load_model`.

    path_or_repo_id: an HF directory; a directory whose `revision` subfolder is one (our runs:
    `RUN/{member}/step{N}`, or a run / demo output with one member); or a Hub id like
    "EleutherAI/pythia-70m" found in the local HF cache at `revision` ("step3000", "main", or a
    commit sha). dtype defaults to float32 (Hub weights are fp16; fp16 analysis of Pythia is
    known to overflow).
    """
    from .hf import load_folder

    return load_folder(resolve_checkpoint(path_or_repo_id, revision), dtype=dtype, device=device)
