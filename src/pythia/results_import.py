"""Published benchmark results as rows of the results table: `pythia results import PATH`.

Reads lm-evaluation-harness result JSON in both layouts:
- the old harness (0.3) of Pythia's `evals/pythia-v1/` tree (github.com/EleutherAI/pythia):
  `{model}/{zero-shot|five-shot|baseline|intervention}/{size}_step{N}.json` holding
  `{"results": {task: {"acc": v, "acc_stderr": se, "ppl": ...}}, "config": {"model_args":
  "pretrained=EleutherAI/pythia-v1.1-70m-deduped,revision=step143000", "num_fewshot": 0}}`;
- lm-eval 0.4 (`results_{timestamp}.json`, keys "acc,none", `n-shot`, e.g. the PolyPythias
  evals `pythia-70m-seed3/step1000/EleutherAI__pythia-70m-seed3/results_*.json`), including
  the `results.json` the `eval` analysis writes per checkpoint.

Who and when come from the file's config, then its path: the member is the model's repo name
(`pythia-v1.1-70m-deduped` -> `pythia-70m-deduped`; files under a `baseline/` folder get
`-baseline`), the size its `pythia-{N}{m|b}` part, the seed a `-seed{k}` suffix, the step the
`revision=stepN` or a `step{N}` in the path, the shots the config's `num_fewshot` / `n-shot`
(a file name saying "5shot" is not trusted: some say so with num_fewshot 0), else the folder
name. Tokens = step x batch tokens (Pythia: 1024 x 2048, or the `{x}MtokBS` of the name).
Metric and task names follow pythia.evals.naming (`ppl` -> `perplexity`, `task@5shot`).
When several files give the same (member, step, task, metric), the later timestamp wins.

Rows go, under analysis `eval_import`, into a run's results table or a standalone
`ResultsStore` folder, one unit per (member, step): importing again replaces, importing other
files for the same checkpoint adds.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .evals.naming import result_rows
from .io import sha256_file
from .results import KEY, ResultsStore

__all__ = ["ANALYSIS", "ImportSummary", "import_results", "read_result_file"]

ANALYSIS = "eval_import"
PYTHIA_BATCH_TOKENS = 1024 * 2048  # Pythia's 2M-token batches (2,097,152 tokens per step)
SHOT_FOLDERS = {"zero-shot": 0, "one-shot": 1, "five-shot": 5}
VARIANT_FOLDERS = ("baseline", "intervention")


@dataclass
class ImportSummary:
    files: int = 0
    rows: int = 0
    units: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Files that were not read, with why (not JSON, not results, no step)."""

    def format(self) -> str:
        lines = [f"imported {self.rows} rows from {self.files} files into {len(self.units)} (member, step) units"]
        lines += [f"  skipped {s}" for s in self.skipped]
        return "\n".join(lines)


def _model_args(config: dict) -> dict:
    args = config.get("model_args") or {}
    if isinstance(args, str):
        args = dict(p.split("=", 1) for p in args.split(",") if "=" in p)
    return {str(k): str(v) for k, v in args.items()}


def _member_name(pretrained: str, path: Path) -> str:
    name = pretrained.rstrip("/").split("/")[-1]
    if re.fullmatch(r"step\d+", name) and "/" in pretrained:  # a local step folder: its member folder
        name = pretrained.rstrip("/").split("/")[-2]
    name = name.replace("-v1.1-", "-").replace("-v1.1", "")
    for variant in VARIANT_FOLDERS:
        if variant in path.parent.name and variant not in name:
            name = f"{name}-{variant}"
    return name


def _step(args: dict, path: Path) -> int | None:
    m = re.fullmatch(r"step(\d+)", args.get("revision", ""))
    if m:
        return int(m[1])
    for part in reversed(path.parts):
        m = re.search(r"(?:^|_)step(\d+)(?:\.json)?$", part)
        if m:
            return int(m[1])
    return None


def _shots(data: dict, path: Path) -> dict | int:
    """{task: shots} (0.4 n-shot) or one number for the file."""
    if isinstance(data.get("n-shot"), dict):
        return {k: int(v) for k, v in data["n-shot"].items() if str(v).isdigit()}
    n = (data.get("config") or {}).get("num_fewshot")
    if isinstance(n, int):
        return n
    for part in reversed(path.parts[:-1]):
        if part in SHOT_FOLDERS:
            return SHOT_FOLDERS[part]
    m = re.search(r"(\d+)shot", path.name)
    return int(m[1]) if m else 0


def _who(member: str) -> tuple[str | None, int | None, int | None, str]:
    """(size, seed, tokens per step, default suite) from a member name like pythia-70m-deduped."""
    size = re.search(r"pythia-(\d+(?:\.\d+)?[mb])", member)
    seed = re.search(r"-seed(\d+)", member)
    batch = re.search(r"(\d+(?:\.\d+)?)MtokBS", member)
    tokens = round(float(batch[1]) * 2 ** 20) if batch else (PYTHIA_BATCH_TOKENS if size else None)
    suite = member
    if size:
        suite = suite.replace(f"-{size[1]}", "", 1)
    if seed:
        suite = suite.replace(seed[0], "", 1)
    return (f"pythia-{size[1]}" if size else None), (int(seed[1]) if seed else None), tokens, suite


def read_result_file(path: str | os.PathLike) -> list[dict]:
    """Rows (all table columns but analysis) of one lm-eval result file; ValueError names
    what is missing."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ValueError(f"{path}: not an lm-eval results file (no \"results\" object)")
    config = data.get("config") or {}
    args = _model_args(config)
    member = config.get("member") or _member_name(args.get("pretrained") or path.parent.name, path)
    step = config.get("step") if isinstance(config.get("step"), int) else _step(args, path)
    if step is None:
        raise ValueError(f"{path}: no step (no revision=stepN in config.model_args, no stepN in the path)")
    size, seed, batch_tokens, suite = _who(member)
    size, seed, suite = config.get("size") or size, config.get("seed", seed), config.get("suite") or suite
    shots = _shots(data, path)
    rows = []
    for section in ("results", "groups"):
        for task, metrics in (data.get(section) or {}).items():
            n = shots.get(task, 0) if isinstance(shots, dict) else shots
            for r in result_rows(task, n, metrics if isinstance(metrics, dict) else {}):
                rows.append({**r, "suite": suite, "member": member, "size": size, "seed": seed, "step": step,
                             "tokens": step * batch_tokens if batch_tokens else None})
    return rows


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return sorted(path.rglob("*.json"), key=lambda p: (p.parent.as_posix(), p.name))  # timestamps sort by name


def _store(into: Any) -> ResultsStore:
    """A run's results table when `into` opens as a run, else a standalone store folder."""
    if into is None:
        raise ValueError("say where the rows go: --into RUN (a run folder or demo output) or --into DIR (a store)")
    from .run import RunError, open_run

    p = Path(into)
    if p.exists() and not (p / "units").is_dir():
        try:
            return open_run(p).results()
        except RunError:
            pass
    return ResultsStore(p)


def import_results(path: str | os.PathLike, *, suite: str | None = None, into: Any = None) -> ImportSummary:
    """Import every lm-eval result file under `path` into `into` (run or store folder)."""
    store = into if isinstance(into, ResultsStore) else _store(into)
    root = Path(path)
    summary = ImportSummary()
    units: dict[tuple, dict] = {}
    sources: dict[tuple, dict] = {}
    for f in _files(root):
        try:
            rows = read_result_file(f)
        except ValueError as exc:
            summary.skipped.append(str(exc))
            continue
        summary.files += 1
        for r in rows:
            r["analysis"] = ANALYSIS
            if suite:
                r["suite"] = suite
            unit = (r["member"], r["step"])
            units.setdefault(unit, {})[tuple(r[k] for k in KEY)] = r  # later files win
            sources.setdefault(unit, {})[f.relative_to(root).as_posix() if f != root else f.name] = sha256_file(f)
    for (member, step), rows in sorted(units.items()):
        old = {tuple(r[k] for k in KEY): r for r in store.rows(analysis=ANALYSIS, member=member) if r["step"] == step}
        key = dict((store.unit_key(ANALYSIS, member, step) or {}).get("sources", {}))
        key.update(sources[(member, step)])
        store.put(ANALYSIS, list({**old, **rows}.values()), key={"sources": key}, member=member, step=step)
        summary.rows += len(rows)
        summary.units.append(f"{member}/step{step}")
    store.write_csv()
    return summary
