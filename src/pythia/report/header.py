"""The report's header: what the run is (spec, members, tokens seen, data and order), whether
its checkpoints verify, what the table holds, and the versions that wrote the report."""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata

from .plot import natural
from .sections import Table
from .source import Source

KIND_WORDS = {"run": "run folder", "demo": "pythia demo output", "member": "member folder (its rows only)",
              "step": "step folder (its member's rows)", "hub": "Hugging Face cache", "store": "results store"}


@dataclass
class Header:
    title: str
    subtitle: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    members: Table | None = None
    verify_status: str = "not checked"
    """"ok", "problems", "not checked" (--no-verify) or "not applicable" (a store, a Hub cache)."""
    verify_lines: list[str] = field(default_factory=list)
    results: Table | None = None
    versions: list[tuple[str, str]] = field(default_factory=list)


def build_header(source: Source, verify: bool = True) -> Header:
    head = Header(title=source.name, subtitle=f"{KIND_WORDS.get(source.kind, source.kind)}: {source.path}")
    view = source.view
    status: dict[str, str] = {}
    if view is not None and view.spec is not None:
        head.facts = spec_facts(view.spec)
    elif view is not None:
        head.facts = [("checkpoints", "Hub revisions stepN in the local cache; Pythia's data: seq 2048, batch 1024"),
                      ("training data", view.data or "not given (open_run(..., data=PREFIX) names it)")]
    if view is None:
        head.verify_status = "not applicable"
        head.verify_lines = ["a results store holds results only, no checkpoints to verify"]
    elif view.kind == "hub":
        head.verify_status = "not applicable"
        head.verify_lines = ["Hub snapshots are content-addressed by their commit"]
    elif verify:
        status = _verify(view, head)
    else:
        head.verify_lines = ["skipped (--no-verify); `pythia verify RUN` re-hashes every checkpoint"]
    head.members = member_table(view, status) if view is not None else store_member_table(source.rows)
    head.results = results_table(source.rows, source.counts)
    head.versions = versions()
    return head


def spec_facts(spec) -> list[tuple[str, str]]:
    from pythia.data.order import num_samples_for

    d, t, c = spec.data, spec.train, spec.checkpoints
    steps = spec.checkpoint_steps()
    tokens_per_step = t.global_batch * d.seq_len
    shapes = ", ".join(m.name for m in spec.members)
    return [
        ("suite", f"{spec.name}: {len(spec.members)} shapes ({shapes}) x {len(spec.seeds)} seeds "
                  f"({', '.join(map(str, spec.seeds))})"),
        ("data", f"train {d.train}; validation {d.valid or 'none'}; sequence length {d.seq_len}"),
        ("order", f"GPT-NeoX v1.0 training order, data seed {d.seed}, {num_samples_for(t.iters, t.global_batch):,} "
                  f"samples (iters x batch x 1.005)"),
        ("training", f"{t.iters:,} steps x {t.global_batch} sequences = {tokens_per_step:,} tokens per step, "
                     f"{t.iters * tokens_per_step:,} in all; lr {t.lr if t.lr is not None else 'recipe'}"
                     f"{f' -> {t.min_lr}' if t.min_lr is not None else ''} ({t.lr_schedule}, warmup "
                     f"{t.warmup_fraction:g}), {t.precision}, {t.parallel}"),
        ("checkpoints", f"{len(steps)} per member: {_compact(steps)} (interval {c.interval}"
                        f"{', log-spaced below it' if c.log_spaced else ''})"),
    ]


def _compact(steps: list[int]) -> str:
    if len(steps) <= 14:
        return ", ".join(map(str, steps))
    return ", ".join(map(str, steps[:8])) + ", ..., " + ", ".join(map(str, steps[-3:]))


def _verify(view, head: Header) -> dict[str, str]:
    from pythia.verify import verify_run

    rep = verify_run(view.root)
    head.verify_status = "ok" if rep.ok else "problems"
    head.verify_lines = [f"problem: {p}" for p in rep.problems] + [f"note: {n}" for n in rep.notes]
    status = {}
    for m in rep.members:
        status[m.name] = "ok" if not m.problems else f"{len(m.problems)} problem(s)"
        head.verify_lines += [f"{m.name}: {p}" for p in m.problems] + [f"{m.name}: note: {n}" for n in m.notes]
    return status


def _params(member) -> str:
    config = member.config
    if config is None and member.steps:
        try:
            from pythia.hf import from_hf_config

            path = member.checkpoint(member.steps[-1]).path / "config.json"
            config = from_hf_config(json.loads(path.read_text(encoding="utf-8")), source=str(path))
        except (OSError, ValueError):
            return ""
    return f"{config.num_params():,}" if config is not None else ""


def member_table(view, status: dict[str, str]) -> Table:
    rows = []
    for m in view.select(None):
        steps = m.steps
        last = steps[-1] if steps else None
        tokens = last * m.global_batch * m.seq_len if last is not None and m.global_batch and m.seq_len else None
        rows.append([m.name, m.shape, m.seed if m.seed is not None else "", m.data_seed if m.data_seed is not None else "",
                     _params(m), f"{len(steps)} ({steps[0]}..{last})" if steps else "none",
                     f"{tokens:,}" if tokens is not None else "", status.get(m.name, "")])
    return Table(["member", "shape", "seed", "data seed", "parameters", "checkpoints", "tokens seen", "verify"], rows)


def store_member_table(rows: list[dict]) -> Table:
    members: dict[str, dict] = {}
    for r in rows:
        if r["member"].endswith("/*"):  # a size's summary over seeds (seeds analysis), not a member
            continue
        m = members.setdefault(r["member"], {"suite": r.get("suite"), "size": r.get("size"), "seed": r.get("seed"),
                                             "steps": set(), "tokens": None})
        if r.get("step") is not None:
            m["steps"].add(r["step"])
        if r.get("tokens") is not None:
            m["tokens"] = max(m["tokens"] or 0, r["tokens"])
    out = []
    for name in sorted(members, key=natural):
        m = members[name]
        steps = sorted(m["steps"])
        out.append([name, m["suite"] or "", m["size"] or "", m["seed"] if m["seed"] is not None else "",
                    f"{len(steps)} ({steps[0]}..{steps[-1]})" if steps else "none",
                    f"{m['tokens']:,}" if m["tokens"] is not None else ""])
    return Table(["member", "suite", "size", "seed", "steps with results", "tokens seen (max)"], out)


def results_table(rows: list[dict], counts: dict[str, int] | None = None) -> Table:
    """Per analysis: rows, members, steps, metrics; `counts` gives the row count of analyses
    whose rows were read at the drawn steps only (`Source.counts`)."""
    by: dict[str, dict] = {}
    for r in rows:
        a = by.setdefault(r.get("analysis") or "", {"rows": 0, "members": set(), "steps": set(), "metrics": set()})
        a["rows"] += 1
        a["members"].add(r.get("member"))
        a["metrics"].add(r.get("metric"))
        if r.get("step") is not None:
            a["steps"].add(r["step"])
    return Table(["analysis", "rows", "members", "steps", "metrics"],
                 [[name, (counts or {}).get(name, a["rows"]), len(a["members"]), f"{min(a['steps'])}..{max(a['steps'])}" if a["steps"] else "-",
                   len(a["metrics"])] for name, a in sorted(by.items())])


def versions() -> list[tuple[str, str]]:
    """Versions of what wrote the report, from the installed packages' metadata (torch's
    includes its build, e.g. 2.13.0+cpu; nothing is imported for it)."""
    import pythia

    out = [("pythia", pythia.__version__), ("python", platform.python_version())]
    for name, dist in (("torch", "torch"), ("plotly", "plotly"), ("lm-eval", "lm_eval")):
        try:
            out.append((name, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return out
