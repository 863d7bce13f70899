"""The analysis contract: a small registered unit the runner applies to checkpoints or runs.

An analysis subclasses `Analysis`, sets `name`, `summary` and `scope`, declares its `options`,
and implements `compute(ctx)` (scope "checkpoint": one `(member, step)`, returning `Row`s) or
`compute_run(run, store)` (scope "run": reads the results table or the whole run, returning
full table rows). A per-checkpoint analysis may add a member stage (`member_inputs` +
`compute_member`), run once per member after its checkpoints, for what needs them all.
`@register` makes it known to `pythia analyze`; the built-in analyses are the modules of this
package, and other packages add theirs through the `pythia.analyses` entry-point group. The
runner (`runner.py`) does everything else: choosing checkpoints, loading each once,
caching by (analysis version, options, checkpoint digest), progress, ranks, writing rows.

The pattern follows lm-evaluation-harness's `LM` base class and registry (lm_eval/api/model.py,
lm_eval/api/registry.py), with a single registration point.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..results import Row

__all__ = ["Analysis", "AnalysisError", "CheckpointContext", "Option", "Row", "SkipCheckpoint", "available", "get",
           "register"]

SCOPES = ("checkpoint", "run")


class AnalysisError(ValueError):
    """Bad input for an analysis (options, data, checkpoint): named before any work is done."""


class SkipCheckpoint(Exception):
    """Raised by `compute` for a checkpoint the analysis does not apply to (e.g. one without
    optimizer state): the runner stores an empty unit for it, so a re-run does not ask again,
    and names every such checkpoint in one warning after the sweep. str() says why."""


@dataclass(frozen=True)
class Option:
    """One option of an analysis; the CLI turns it into `--name-with-dashes`."""

    name: str
    type: Callable = str
    default: Any = None
    help: str = ""
    choices: tuple | None = None
    affects_result: bool = True
    """False for options that change only how the work is done (batch sizes): not in cache keys."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class Analysis:
    """Base class of every analysis. Subclasses are small: options + compute."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    """One line for `pythia analyze --list`."""
    scope: ClassVar[str] = "checkpoint"
    version: ClassVar[int] = 1
    """Bump when the computation changes: cached results of older versions are recomputed."""
    options: ClassVar[tuple[Option, ...]] = ()
    selects_members: ClassVar[bool] = False
    """Whole-run analyses see every member (their one unit holds the whole run's rows) unless
    this is True (e.g. an export of the members asked for)."""
    run_part: ClassVar[bool] = False
    """A per-checkpoint analysis whose rows also need other checkpoints' outputs (CKA against the
    final checkpoint or another seed): after the sweep the runner calls its `compute_run` once
    and stores the rows as the analysis' whole-run unit, cached by the keys of its per-checkpoint
    units (a re-run with nothing new computes nothing; a recomputed checkpoint reruns it)."""
    force: bool = False
    """Set by the runner for a forced run: the run part must not reuse its own stored work."""
    cacheable: ClassVar[bool] = True
    """False for cheap whole-run analyses whose inputs are files outside the results table
    (they are simply recomputed every time)."""

    def __init__(self, **opts: Any):
        known = {o.name: o for o in self.options}
        unknown = sorted(set(opts) - set(known))
        if unknown:
            raise AnalysisError(f"analysis {self.name!r} has no option(s) {unknown}; options: "
                                f"{', '.join(known) or 'none'}")
        self.opts = {}
        for name, o in known.items():
            value = opts.get(name, o.default)
            if value is not None and o.choices and value not in o.choices:
                raise AnalysisError(f"{self.name}: {o.flag} must be one of {', '.join(map(str, o.choices))}, got {value!r}")
            self.opts[name] = value

    def cache_key(self, digest: str | None) -> dict:
        """What the unit's result depends on; a stored unit with an equal key is not recomputed."""
        opts = {o.name: self.opts[o.name] for o in self.options if o.affects_result}
        return {"analysis": self.name, "version": self.version, "options": _jsonable(opts), "digest": digest}

    def check(self, run: Any, members: list) -> None:
        """Refuse bad input up front (raise AnalysisError naming it). Default: nothing to check."""

    def reads(self, analysis: str) -> bool:
        """Whether this (whole-run) analysis reads `analysis`'s rows: only those units enter its
        cache key, so two whole-run analyses that ignore each other do not invalidate each other
        forever. Default: every other analysis."""
        return analysis != self.name

    def compute(self, ctx: "CheckpointContext") -> list[Row]:
        raise NotImplementedError(f"{type(self).__name__} (scope {self.scope}) has no compute()")

    def compute_run(self, run: Any, store: Any, members: list) -> list[dict]:
        raise NotImplementedError(f"{type(self).__name__} (scope {self.scope}) has no compute_run()")

    # -- optional stages ------------------------------------------------------------------------
    device: Any = None
    """The runner's torch device and load dtype, set before `compute_run` and `compute_member`
    (whole-run analyses that load checkpoints themselves)."""
    dtype: Any = None
    forced: bool = False
    """The run was forced: whole-run analyses must not reuse their own stored work either."""

    def member_inputs(self, run: Any, member: Any, store: Any) -> str | None:
        """Member stage of a per-checkpoint analysis: a digest of everything `compute_member` reads
        for `member` (its unit is recomputed when the digest changes); None: no member stage."""
        return None

    def member_outputs_exist(self, run: Any, member: Any) -> bool:
        """Whether the member stage's files are still there (a deleted one is rebuilt)."""
        return True

    def compute_member(self, run: Any, member: Any, store: Any) -> list:
        """Rows of the member stage (Row or dicts; rows may carry their own step), stored as the
        member's unit (`{analysis}/{member}/_member.json`)."""
        raise NotImplementedError(f"{type(self).__name__} has no compute_member()")

    def run_inputs(self, run: Any, members: list) -> str | None:
        """A whole-run analysis' inputs outside the results table (e.g. checkpoint digests), as a
        digest added to its cache key; None: none."""
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass
class CheckpointContext:
    """What `Analysis.compute` gets: the checkpoint, its member and run, and the model, loaded
    at most once for all analyses of this checkpoint."""

    run: Any
    member: Any
    checkpoint: Any
    device: Any
    dtype: Any = None
    """dtype the weights are loaded in (None: float32)."""
    autocast: Any = None
    """torch.autocast dtype for forward passes (the trainer's bf16/fp16), None = none."""
    progress: bool = False
    force: bool = False
    """The run was forced (`force=True`): analyses must not reuse their own stored work either."""
    model_override: Any = field(default=None, repr=False)
    """A model already in memory: the trainer's (checkpoint-time hooks), or the one the runner
    loaded while checking the manifest; None = load from disk on first use."""
    shared: dict = field(default_factory=dict, repr=False)
    """Per-run scratch space shared across checkpoints (e.g. validation windows read once)."""
    analyses: tuple = ()
    """Names of the analyses computing on this checkpoint in this sweep: one forward pass can
    serve several (the mechanism analyses share theirs)."""

    @property
    def step(self) -> int:
        return self.checkpoint.step

    @cached_property
    def model(self):
        if self.model_override is not None:
            return self.model_override
        return self.checkpoint.load(device=self.device, dtype=self.dtype)

    def artifact_dir(self, analysis: str) -> Path:
        """Folder for an analysis' per-item outputs of this checkpoint (created on demand)."""
        path = Path(self.run.results_dir) / "artifacts" / analysis / self.member.name / self.checkpoint.revision
        path.mkdir(parents=True, exist_ok=True)
        return path


# ---------------------------------------------------------------------------------------------
# registry

_REGISTRY: dict[str, type[Analysis]] = {}
_LOADED = False


def register(cls: type[Analysis]) -> type[Analysis]:
    """Class decorator: make an analysis known by its `name`."""
    if not cls.name or cls.scope not in SCOPES:
        raise TypeError(f"{cls.__name__}: an analysis needs a name and a scope in {SCOPES}")
    other = _REGISTRY.get(cls.name)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"analysis name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    """Import this package's modules (each registers its analyses) and entry-point plugins."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from importlib.metadata import entry_points

    from .. import analysis as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base", "runner") and not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    for ep in entry_points(group="pythia.analyses"):
        ep.load()


def available() -> dict[str, type[Analysis]]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> type[Analysis]:
    found = available()
    if name not in found:
        raise AnalysisError(f"unknown analysis {name!r}; available: {', '.join(found)}")
    return found[name]
