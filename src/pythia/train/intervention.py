"""Data interventions: fork a member at checkpoint S and train the fork on transformed batches.

Every member of a suite reads the same batches in the same order, so a causal question about the
data becomes an experiment: take a member's checkpoint at step S, change something in every
batch from then on, train to the end and compare with the original. The Pythia paper did this
for gendered pronouns (masculine -> feminine for the last 7% of training, restarting from step
133,000). Its code was never released in runnable form: the `intervention` branch of GPT-NeoX
(df1bdca0) swaps token ids in every batch; the later `new-intervention` branch re-tokenizes
detokenized text and, as pushed (42acebf3), re-tokenizes the original string, so the swap is
never applied. Here a transform works on the token batch itself: the batch keeps its shape, so
the order, the checkpoint schedule and the loss stay those of the base member.

A fork `{member}+{name}` (suite spec `interventions:`, validated in spec.py):
- starts from its base's `step{S}` folder, hard-linked (copied across file systems) into the
  fork's folder: the same weights digest, optimizer moments, RNG and scheduler state; it then
  resumes through the trainer's normal path, so steps before S are never retrained;
- reads the base's order through `InterventionOrder`, which passes every batch of a step >= S
  through the transform; `metrics.jsonl` fingerprints the transformed batch and records how many
  tokens the step changed (`changed_tokens`);
- records what it was trained with in `{fork}/intervention.json` (token ids, or the function's
  source sha256): re-running with another map or a changed function is refused, not mixed in.

Transforms: `token_map` (pairs of single tokens or ids, applied simultaneously, so a swap
a <-> b works; `pythia_pronouns` is the branch's map for the GPT-NeoX-20B tokenizer) or a user
function `module:function` (or `file.py:function`) taking a (B, S+1) int64 batch and returning
one of the same shape and dtype. A function must be deterministic: resume re-applies it.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import layout
from ..io import atomic_dir, write_json_atomic
from . import checkpoint as ckpt
from .spec import PRESETS, InterventionSpec, SpecError

RECORD = "intervention.json"
RECORD_FORMAT = "pythia-intervention/1"
RESUMABLE = ("full", "sharded", "empty")

class InterventionError(ValueError):
    """A transform misbehaved during training (shape, dtype, ids): names the fork and step."""


# ---------------------------------------------------------------------------------- transforms


@dataclass(frozen=True)
class Transform:
    """A resolved transform: token-id pairs, or a loaded function with its source hash."""

    kind: str
    """"token_map" or "function"."""
    pairs: tuple[tuple[int, int], ...] = ()
    spelled: tuple[tuple[str, str], ...] = ()
    """The pairs as text (decoded ids), for people."""
    function: str | None = None
    sha256: str | None = None
    """sha256 of the source file defining the function (+ its name): a changed file is a changed fork."""
    fn: Callable | None = field(default=None, compare=False, repr=False)
    vocab: int | None = None
    """Ids must stay below this (the tokenizer's or the model's vocabulary); None: unchecked."""
    _lut: list = field(default_factory=list, compare=False, repr=False)

    def identity(self) -> dict:
        """What makes two forks the same: stored in intervention.json, compared on re-runs."""
        if self.kind == "token_map":
            return {"kind": "token_map", "pairs": [list(p) for p in self.pairs]}
        return {"kind": "function", "function": self.function.rpartition(":")[2], "sha256": self.sha256}

    def describe(self) -> str:
        if self.kind == "function":
            return f"function {self.function} (source sha256 {self.sha256[:12]})"
        shown = ", ".join(f"{a!r}->{b!r}" for a, b in self.spelled[:6]) if self.spelled else \
            ", ".join(f"{a}->{b}" for a, b in self.pairs[:6])
        more = f", ... ({len(self.pairs)} pairs)" if len(self.pairs) > 6 else ""
        return f"token_map {shown}{more}"

    def apply(self, tokens: np.ndarray) -> np.ndarray:
        """The transformed copy of a (B, S+1) int64 batch (the input is left as it is)."""
        if self.kind == "token_map":
            return np.take(self._table(int(tokens.max()) if tokens.size else 0), tokens)  # all pairs at once
        out = self.fn(tokens.copy())
        self._check_output(tokens, out)
        return out

    def _table(self, top: int) -> np.ndarray:
        """id -> id lookup covering ids 0..top (built once, grown when a larger id shows up):
        one gather per batch, a swap a <-> b does not chain."""
        if not self._lut or self._lut[0].size <= top:
            size = max(top + 1, max(a for a, _ in self.pairs) + 1, self.vocab or 0)
            lut = np.arange(size, dtype=np.int64)
            lut[[a for a, _ in self.pairs]] = [b for _, b in self.pairs]
            self._lut[:] = [lut]
        return self._lut[0]

    def _check_output(self, tokens: np.ndarray, out: Any) -> None:
        if not isinstance(out, np.ndarray) or out.shape != tokens.shape or out.dtype != np.int64:
            got = (f"an array of shape {out.shape} {out.dtype}" if isinstance(out, np.ndarray)
                   else f"a {type(out).__name__}")
            raise InterventionError(f"function {self.function} returned {got} for a batch of shape {tokens.shape} "
                                    "int64; it must return an int64 numpy array of the same shape")
        if out.size and (int(out.min()) < 0 or (self.vocab is not None and int(out.max()) >= self.vocab)):
            raise InterventionError(f"function {self.function} returned token ids in [{int(out.min())}, "
                                    f"{int(out.max())}], outside the vocabulary 0..{(self.vocab or 1) - 1}")


def _tokenizer_id(value: str | int, tok, tok_name: str, vocab: int | None, where: str) -> int:
    if isinstance(value, int):
        if vocab is not None and value >= vocab:
            raise SpecError(f"{where}: token id {value} is outside the vocabulary (0..{vocab - 1})")
        return value
    if tok is None:
        raise SpecError(f"{where}: {value!r} is a string, but the dataset names no tokenizer to read it with "
                        "(its manifest); give token ids instead")
    ids = tok.encode(value, add_special_tokens=False).ids
    if len(ids) != 1:
        pieces = " + ".join(repr(tok.decode([i])) for i in ids) or "nothing"
        raise SpecError(f"{where}: {value!r} is not one token of {tok_name}: it is {len(ids)} tokens ({pieces}); "
                        "each side of a pair must be exactly one token (or a token id)")
    return ids[0]


def resolve_token_map(token_map, tok=None, tok_name: str = "the tokenizer", vocab: int | None = None,
                      where: str = "token_map") -> Transform:
    """Pairs (strings or ids) or a preset name -> a token_map Transform with checked ids."""
    preset = isinstance(token_map, str)
    pairs_in = PRESETS[token_map] if preset else token_map
    pairs, seen = [], {}
    for i, (a, b) in enumerate(pairs_in):
        spot = f"{where} ({token_map} pair {a!r} -> {b!r})" if preset else f"{where}[{i}]"
        src = _tokenizer_id(a, tok, tok_name, vocab, f"{spot} source")
        dst = _tokenizer_id(b, tok, tok_name, vocab, f"{spot} target")
        if src == dst:
            raise SpecError(f"{spot}: maps token {src} to itself")
        if src in seen and seen[src] != dst:
            raise SpecError(f"{spot}: token {src} is already mapped to {seen[src]}")
        seen[src] = dst
        pairs.append((src, dst))
    pairs = sorted(set(pairs))
    spelled = tuple((tok.decode([a]), tok.decode([b])) for a, b in pairs) if tok is not None else ()
    return Transform(kind="token_map", pairs=tuple(pairs), spelled=spelled, vocab=vocab)


def load_function(ref: str, where: str = "function") -> tuple[Callable, str]:
    """Import `module:function` or `path/file.py:function`; returns (callable, source sha256)."""
    module_name, _, name = ref.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise SpecError(f"{where}: {path} does not exist")
            key = "pythia_intervention_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(key, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module  # dataclasses and pickling look modules up by name
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        fn = module
        for part in name.split("."):
            fn = getattr(fn, part)
    except SpecError:
        raise
    except AttributeError:
        raise SpecError(f"{where}: {module_name} has no {name!r}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises on import
        raise SpecError(f"{where}: cannot import {module_name!r} ({type(exc).__name__}: {exc}); it must be an "
                        "importable module (on PYTHONPATH) or a path to a .py file") from None
    if not callable(fn):
        raise SpecError(f"{where}: {ref} is a {type(fn).__name__}, not a function")
    try:
        source = Path(inspect.getsourcefile(fn)).read_bytes()
    except (TypeError, OSError) as exc:
        raise SpecError(f"{where}: cannot read the source of {ref} ({exc}); the fork records its hash, so a "
                        "changed function is a changed fork") from None
    return fn, hashlib.sha256(source + b"\0" + name.encode()).hexdigest()


def resolve_function(ref: str, vocab: int | None = None, where: str = "function") -> Transform:
    fn, sha = load_function(ref, where)
    return Transform(kind="function", function=ref, sha256=sha, fn=fn, vocab=vocab)


def resolve(iv: InterventionSpec, tokenizer_path: str | os.PathLike | None, vocab: int | None,
            where: str = "intervention") -> Transform:
    """The intervention's transform, checked against the dataset's tokenizer and vocabulary."""
    if iv.function is not None:
        return resolve_function(iv.function, vocab, f"{where}.function")
    tok = None
    if tokenizer_path is not None:
        from ..data.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer_path)
        vocab = tok.get_vocab_size(with_added_tokens=True) if vocab is None else min(vocab, tok.get_vocab_size())
    return resolve_token_map(iv.token_map, tok, str(tokenizer_path), vocab, f"{where}.token_map")


def check_transform(transform: Transform, sample: np.ndarray, where: str) -> None:
    """Run the transform once on a real (b, S+1) batch before any training: a function that
    changes the shape or dtype, or returns ids outside the vocabulary, is a named error now."""
    try:
        transform.apply(np.ascontiguousarray(sample, dtype=np.int64))
    except InterventionError as exc:
        raise SpecError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's function failed on a real batch
        raise SpecError(f"{where}: {transform.function} failed on a batch of shape {sample.shape} int64 "
                        f"({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------------- the order


class InterventionOrder:
    """A fork's training order: its base's order, whose batches at steps >= from_step go through
    the transform. Everything else (samples, segments, ...: provenance too) is the base order's: a
    position's source documents do not change, only what the fork was fed."""

    def __init__(self, base, transform: Transform, from_step: int):
        self.base, self.transform, self.from_step = base, transform, from_step

    def batch_and_changes(self, step: int, batch_size: int) -> tuple[np.ndarray, int | None]:
        """(the batch the fork trains on at `step`, tokens changed; None before from_step)."""
        tokens = self.base.batch(step, batch_size)
        if step < self.from_step:
            return tokens, None
        out = self.transform.apply(tokens)
        return out, int(np.count_nonzero(out != tokens))

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        return self.batch_and_changes(step, batch_size)[0]

    def __getattr__(self, name: str):
        return getattr(self.base, name)


def batch_diff(order: InterventionOrder, step: int, batch_size: int) -> list[tuple[int, int, int, int]]:
    """(row, column, base token, fork token) of every token the intervention changed at `step`."""
    before = order.base.batch(step, batch_size)
    after = order.batch(step, batch_size)
    rows, cols = np.nonzero(before != after)
    return [(int(r), int(c), int(before[r, c]), int(after[r, c])) for r, c in zip(rows, cols)]


# ---------------------------------------------------------------------------------- the fork


@dataclass
class ForkPlan:
    """One fork to train: its Member (the base's with the fork's name), base, intervention and transform."""

    member: Any
    base: str
    intervention: InterventionSpec
    transform: Transform

    @property
    def from_step(self) -> int:
        return self.intervention.from_step

    def record(self) -> dict:
        return {"format": RECORD_FORMAT, "fork": self.member.name, "base": self.base, "from_step": self.from_step,
                "transform": self.transform.identity(),
                "described": self.transform.describe(), "spelled": [list(p) for p in self.transform.spelled]}


_IDENTITY = ("format", "fork", "base", "from_step", "transform")


def read_record(fork_dir: Path) -> dict | None:
    path = Path(fork_dir) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SpecError(f"{path}: unreadable ({exc})") from None


def check_record(fork_dir: Path, plan: ForkPlan) -> None:
    """A fork folder trained with another intervention (other ids, a changed function, another
    base or step) is refused: resuming it would mix two experiments."""
    found = read_record(fork_dir)
    if found is None:
        if Path(fork_dir).is_dir() and layout.complete_checkpoints(fork_dir):
            raise SpecError(f"{fork_dir} holds checkpoints but no {RECORD}: not a fork this spec made; "
                            "move it away or rename the intervention")
        return
    want = plan.record()
    changed = [k for k in _IDENTITY if found.get(k) != want[k]]
    if changed:
        what = "; ".join(f"{k}: was {found.get(k)!r}, now {want[k]!r}" for k in changed)
        raise SpecError(f"fork {plan.member.name} was trained with another intervention ({what}); a changed "
                        f"intervention is a new fork: give it another name, or delete {fork_dir}")


def usable_steps(base_dir: Path, iters: int) -> list[int]:
    """The base's checkpoints a fork can start from: complete, holding optimizer state, before the end."""
    return [s for s in layout.complete_checkpoints(base_dir)
            if s < iters and ckpt.optimizer_format(Path(base_dir) / layout.step_dir_name(s)) in RESUMABLE]


def check_base_step(base_dir: Path, plan: ForkPlan, iters: int, base_finished: bool) -> None:
    """Refuse a from_step the base does not (or, once finished, will never) have with optimizer state."""
    step_dir = Path(base_dir) / layout.step_dir_name(plan.from_step)
    if not step_dir.is_dir() and not base_finished:
        return  # the base trains first; the spec already checked the step is scheduled with state
    usable = usable_steps(base_dir, iters)
    if plan.from_step in usable:
        return
    fmt = ckpt.optimizer_format(step_dir) if step_dir.is_dir() else None
    why = ("it has no such checkpoint" if not step_dir.is_dir() else
           "its checkpoint keeps no optimizer state (train.optimizer_state_every)" if fmt == "omitted" else
           "its checkpoint is incomplete or unreadable")
    raise SpecError(f"fork {plan.member.name}: cannot start from step {plan.from_step} of {plan.base}: {why}; "
                    f"steps of {plan.base} a fork can start from: {', '.join(map(str, usable)) or 'none'}")


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of `src` into `dst` (a copy where links are refused)."""
    for p in sorted(src.rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)


def prepare_fork(run_dir: Path, plan: ForkPlan) -> Path:
    """Write {fork}/intervention.json and give the fork its base's step{S} (rank 0 only)."""
    run_dir = Path(run_dir)
    fork_dir, base_dir = run_dir / plan.member.name, run_dir / plan.base
    check_record(fork_dir, plan)
    if read_record(fork_dir) is None:
        write_json_atomic(fork_dir / RECORD, plan.record())
    step_dir = fork_dir / layout.step_dir_name(plan.from_step)
    if plan.from_step in layout.complete_checkpoints(fork_dir):
        return step_dir
    source = base_dir / layout.step_dir_name(plan.from_step)
    check_base_step(base_dir, plan, iters=sys.maxsize, base_finished=True)
    problems = layout.check_manifest(source)
    if problems:
        raise SpecError(f"fork {plan.member.name}: {plan.base}'s step{plan.from_step} fails its manifest "
                        f"({'; '.join(problems[:3])})")
    with atomic_dir(step_dir) as tmp:
        _link_tree(source, tmp)
    return step_dir

