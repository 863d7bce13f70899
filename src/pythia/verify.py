"""`pythia verify RUN`: trust nothing in a run folder until it has been re-hashed.

Checks, per member: every step{N}/manifest.json and the sha256 of every file it lists; the
checkpoints expected from RUN/suite.yaml's schedule that are missing; and checkpoints of
different steps whose model tensors are identical -- the bug class where dozens of Pythia's Hub
branches served the final weights (pythia#205, #206). Identical weights are EXPECTED when every
update between the two steps was a no-op: lr = 0 (gpt-neox v1.0's first update, so step0 ==
step1, pythia#83) or an fp16 overflow-skipped step; metrics.jsonl says which, so those pairs are
reported as notes, every other identical pair as a problem.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import layout
from .train.metrics import read_jsonl
from .train.spec import SuiteSpec


@dataclass
class MemberReport:
    name: str
    checkpoints: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    identical: list[dict] = field(default_factory=list)
    """[{"steps": [a, b], "expected": bool, "why": str}]"""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    run_dir: str
    members: list[MemberReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(not m.problems for m in self.members)

    def to_dict(self) -> dict:
        return {"run_dir": self.run_dir, "ok": self.ok, "problems": self.problems, "notes": self.notes,
                "members": [m.__dict__ for m in self.members]}

    def format(self) -> str:
        """Problems per member; a note that several members share (gpt-neox's step0 == step1 in
        every member of a suite) is said once, with the members it concerns."""
        lines = [f"verify {self.run_dir}: {'OK' if self.ok else 'PROBLEMS FOUND'}"]
        lines += [f"  problem: {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes]
        holders: dict[str, list[str]] = {}
        for m in self.members:
            for n in dict.fromkeys(m.notes):
                holders.setdefault(n, []).append(m.name)
        shared = {n: names for n, names in holders.items() if len(names) > 1}
        for n, names in shared.items():
            who = f"all {len(names)} members" if len(names) == len(self.members) else ", ".join(names)
            lines.append(f"  note ({who}): {n}")
        for m in self.members:
            status = "ok" if not m.problems else f"{len(m.problems)} problem(s)"
            lines.append(f"- {m.name}: {len(m.checkpoints)} checkpoints, {len(m.missing)} missing: {status}")
            lines += [f"    problem: {p}" for p in m.problems] + [f"    note: {n}" for n in m.notes if n not in shared]
        return "\n".join(lines)


def _noop_updates(metrics: list[dict], a: int, b: int) -> tuple[bool, str]:
    """Were updates a+1..b all no-ops (lr 0 or skipped) according to metrics.jsonl?"""
    by_step = {r["step"]: r for r in metrics if isinstance(r.get("step"), int)}
    reasons = []
    for s in range(a + 1, b + 1):
        r = by_step.get(s)
        if r is None:
            return False, f"no metrics line for update {s}"
        if r.get("skipped"):
            reasons.append(f"update {s} skipped (fp16 overflow)")
        elif r.get("lr") == 0:
            reasons.append(f"update {s} had lr = 0")
        else:
            return False, f"update {s} had lr {r.get('lr')}"
    return True, "; ".join(reasons)


def verify_member(member_dir: Path, expected_steps: list[int] | None, spec: SuiteSpec | None,
                  tick=None) -> MemberReport:
    """One member's checks; `tick()` is called after each checkpoint (a progress bar's update)."""
    rep = MemberReport(name=member_dir.name)
    if not member_dir.is_dir():
        rep.problems.append(f"member folder {member_dir} is missing")
        rep.missing = list(expected_steps or [])
        return rep
    digests: dict[int, str] = {}
    for p in sorted(member_dir.iterdir(), key=lambda q: (layout.parse_step(q.name) is None, layout.parse_step(q.name) or 0)):
        step = layout.parse_step(p.name)
        if p.name.startswith(".") and p.is_dir():
            rep.notes.append(f"{p.name}: leftover of an interrupted checkpoint write (removed on resume)")
            continue
        if step is None or not p.is_dir():
            continue
        rep.checkpoints.append(step)
        problems = layout.check_manifest(p)
        rep.problems += problems
        if not problems:
            try:
                digests[step] = layout.digest_of_checkpoint(p)
                try:
                    recorded = layout.recorded_digest(p)
                except ValueError:  # a manifest without a weights digest: nothing to compare
                    recorded = None
                if recorded and recorded != digests[step]:
                    rep.problems.append(f"{p.name}: weights digest differs from the manifest's")
            except Exception as exc:  # unreadable safetensors despite matching hashes
                rep.problems.append(f"{p.name}: cannot read model weights ({exc})")
        if tick is not None:
            tick()
    if expected_steps is not None:
        present = set(rep.checkpoints)
        rep.missing = [s for s in expected_steps if s not in present]
        if rep.missing:
            rep.problems.append(f"missing checkpoints (schedule in suite.yaml): {', '.join(f'step{s}' for s in rep.missing)}")
        extra = sorted(present - set(expected_steps))
        if extra:
            rep.notes.append(f"checkpoints outside the schedule: {', '.join(f'step{s}' for s in extra)}")
    _check_identical(rep, digests, member_dir / "metrics.jsonl")
    return rep


def _check_identical(rep: MemberReport, digests: dict[int, str], metrics_path: Path) -> None:
    """Steps holding identical weights, explained by the training log (read only when some are:
    143,000 lines per member at Pythia's length)."""
    groups: dict[str, list[int]] = {}
    for step, d in sorted(digests.items()):
        groups.setdefault(d, []).append(step)
    if all(len(steps) == 1 for steps in groups.values()):
        return
    metrics = read_jsonl(metrics_path)
    for steps in groups.values():
        for a, b in zip(steps, steps[1:]):
            noop, why = _noop_updates(metrics, a, b)
            if noop:
                explain = why
                if a == 0 and "lr = 0" in why:
                    explain += (" -- expected: gpt-neox v1.0's schedule starts at lr 0, so the first update "
                                "changes nothing (Pythia's step0 == step1 too, pythia#83)")
                rep.identical.append({"steps": [a, b], "expected": True, "why": explain})
                rep.notes.append(f"step{a} == step{b}: {explain}")
            else:
                rep.identical.append({"steps": [a, b], "expected": False, "why": why})
                rep.problems.append(f"step{a} and step{b} hold identical weights although training happened "
                                    f"in between ({why}): one of them is probably a copy of the other")


def verify_run(source: str | Path, progress: bool = False) -> VerifyReport:
    """Check every member of a run (a run folder, demo output, or one member folder through
    pythia.run.open_run); `report.ok` is False on any problem. A plain folder of member folders
    without suite.yaml is checked too, hashes only. Linear in checkpoints: one manifest and
    one weights hash each; `progress` shows a bar over them (stderr)."""
    from .run import RunError, open_run

    path = Path(source)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} does not exist")
    try:
        view = open_run(path)
    except RunError:
        view = None
    except ValueError as exc:  # suite.yaml present but invalid
        report = VerifyReport(run_dir=str(path))
        report.problems.append(f"suite.yaml unreadable ({exc}); checking folders without a schedule")
        return _verify_folders(path, report, progress)
    if view is None:
        report = VerifyReport(run_dir=str(path))
        report.notes.append("no suite.yaml: the expected checkpoint schedule is unknown, only hashes are checked")
        return _verify_folders(path, report, progress)
    report = VerifyReport(run_dir=str(view.root))
    expected = view.spec.checkpoint_steps()
    todo = []
    for m in view.select(None):  # a fork's schedule starts at its from_step (its base trained the steps before)
        todo.append((m.path, expected if m.base is None else [s for s in expected if s >= m.from_step]))
    if view.focus_member is None:
        known = {m.name for m in view.members}
        todo += [(extra, None) for extra in _step_folders(view.root) if extra.name not in known]
    with _bar(progress, [folder for folder, _ in todo]) as bar:
        for folder, steps in todo:
            report.members.append(verify_member(folder, steps, view.spec, tick=bar.update))
    return report


def _bar(enabled: bool, folders: list[Path]):
    """A progress bar over the checkpoints of `folders` (counted from their listings)."""
    from .train.progress import progress_bar

    total = 0
    if enabled:
        for folder in folders:
            with contextlib.suppress(OSError):
                total += sum(1 for e in os.scandir(folder) if e.is_dir() and layout.parse_step(e.name) is not None)
    return contextlib.closing(progress_bar(total, 0, enabled, desc="verify", unit="checkpoint"))


def logged_fingerprints(member) -> dict[int, str | None]:
    """{update: batch fingerprint} a member's metrics.jsonl recorded (update n read batch n-1);
    a fork's updates up to its from_step are its base's (the base trained them)."""
    logged = {r["step"]: r.get("batch_fp") for r in member.metrics() if isinstance(r.get("step"), int)}
    if member.base is not None:
        base = {r["step"]: r.get("batch_fp") for r in member.run.member(member.base).metrics()
                if isinstance(r.get("step"), int) and r["step"] <= member.from_step}
        logged = {**base, **logged}
    return logged


def check_batch_fingerprints(member, order, steps: range, batch_size: int) -> list[tuple[int, str, str | None]]:
    """(step, fingerprint of the batch rebuilt from `order`, the one the run logged or None) for
    each step: does the order give back the batches the member trained on?"""
    from .train.metrics import batch_fingerprint

    logged = logged_fingerprints(member)
    return [(n, batch_fingerprint(order.batch(n, batch_size)), logged.get(n + 1)) for n in steps]


def _step_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and any(layout.parse_step(q.name) is not None for q in p.iterdir()))


def _verify_folders(run_dir: Path, report: VerifyReport, progress: bool = False) -> VerifyReport:
    folders = _step_folders(run_dir)
    with _bar(progress, folders) as bar:
        for folder in folders:
            report.members.append(verify_member(folder, None, None, tick=bar.update))
    if not report.members:
        report.problems.append(f"{run_dir} holds no member folders with step* checkpoints")
    return report
