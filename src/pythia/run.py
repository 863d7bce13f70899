"""The run view: one read-only object that knows a run's layout, for everything that studies it.

`open_run(source)` accepts
- a run folder (`RUN/suite.yaml` + one folder per member),
- a `pythia demo` output root (its `demo.json`; the run is `ROOT/run`),
- a member folder (`RUN/{member}`) or a step folder (`RUN/{member}/step{N}`): the run above
  it, focused on that member (and step),
- a Hugging Face Hub repo id ("EleutherAI/pythia-70m", or several joined by commas) whose
  `stepN` revisions sit in the local HF cache: each repo is a member, its cached revisions its
  checkpoints, so every analysis works on the real Pythia checkpoints the same way.

It knows the spec, the members (name, shape, seed, data seed), each member's checkpoint steps in
numeric order, the dataset, tokenizer and order parameters each member trained with, and loads
`(member, step)`. Nothing here writes to the run; results go through `pythia.results`.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .train.checkpoint import check_manifest, complete_checkpoints, parse_step, step_dir_name

__all__ = ["Checkpoint", "MemberView", "RunView", "RunError", "open_run", "parse_revision"]


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
        manifest = self.path / "manifest.json"
        if manifest.is_file():
            try:
                return "w:" + json.loads(manifest.read_text(encoding="utf-8"))["weights_digest"]
            except (ValueError, KeyError) as exc:
                raise RunError(f"{manifest}: unreadable manifest ({exc})") from None
        if self.member.run.kind == "hub":
            return "hub:" + self.path.name
        from .train.checkpoint import digest_of_checkpoint

        return "w:" + digest_of_checkpoint(self.path)

    def problems(self) -> list[str]:
        """Manifest check (empty = intact). Hub snapshots are content-addressed: always []."""
        if self.member.run.kind == "hub":
            return []
        return check_manifest(self.path)

    def load(self, device: Any = None, dtype: Any = None):
        """Our GPTNeoX with this checkpoint's weights, in eval mode."""
        from .hf import load_model

        return load_model(self.path, device=device, dtype=dtype)

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

    def checkpoint(self, step: Any = None) -> Checkpoint:
        """The checkpoint at `step` ("step128", 128, or None/"main" for the last one)."""
        n = parse_revision(step)
        steps = self.steps
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
        return [self.checkpoint(s) for s in select_steps(self.steps, steps)]

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
            from .train.intervention import fork_order

            return fork_order(self)
        if self.run.spec is None:
            if self.run.data is None:
                raise RunError(f"{self.name}: no training data known; open the Hub repo with data=PREFIX "
                               "(the preshuffled Pile rows) to get its order")
            from .data.order import PreshuffledOrder

            return PreshuffledOrder(self.run.data)
        return self.run._order(self.data_seed, progress)

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

    def metrics(self) -> list[dict]:
        """metrics.jsonl of the member (training telemetry), oldest first."""
        from .train.metrics import read_jsonl

        path = self.path / "metrics.jsonl"
        return read_jsonl(path) if path.is_file() else []


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
        """"run", "demo", "member", "step" (what the source was) or "hub"."""
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
        """The run's results table (`pythia.results.ResultsStore`)."""
        from .results import ResultsStore

        if self.results_dir is None:
            raise RunError(f"{self.source}: no folder for results; pass results_dir=")
        return ResultsStore(self.results_dir, run=self)

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
                "step": "step folder", "hub": "Hugging Face cache"}[self.kind]
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
    from .hf import hub_cache_dir

    cache = hub_cache_dir()
    root_name = "+".join(r.replace("/", "--") for r in repos)
    view = RunView(kind="hub", source=",".join(repos), root=None,
                   results_dir=Path(results_dir) if results_dir else Path("pythia-results") / root_name,
                   data=str(Path(data).expanduser().absolute()) if data else None, name=",".join(repos))
    members = []
    for repo in repos:
        repo_dir = cache / ("models--" + repo.replace("/", "--"))
        if not (repo_dir / "refs").is_dir():
            raise RunError(f"{repo!r} is not in the local Hugging Face cache ({repo_dir} not found); download its "
                           f"revisions first, e.g. huggingface-cli download {repo} --revision step1000")
        revisions = {}
        for ref in (repo_dir / "refs").iterdir():
            n = parse_step(ref.name)
            snap = repo_dir / "snapshots" / ref.read_text(encoding="utf-8").strip()
            if n is not None and (snap / "config.json").is_file():
                revisions[n] = snap
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
