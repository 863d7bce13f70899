"""Benchmarks of one checkpoint for the `eval` analysis: lm-eval's own evaluator over our model,
stored per task so a changed task list recomputes only what is new.

Per checkpoint, under `ctx.artifact_dir("eval")` (RUN/results/artifacts/eval/{member}/stepN/):
- `{label}.json`   one requested task or group (label "task" or "task@5shot"): its slice of
  lm-eval's output (results, configs, versions, n-shot, ...) and the key it was computed with
  (weights digest, task fingerprint, shots, limit, bootstrap draws, versions). A file whose
  key matches is reused instead of recomputed.
- `{label}.items.npz`  per-item outcomes of each task with a 0/1 metric: `doc_id` (int64),
  `pred` (int64: the chosen choice of a multiple-choice task, else -1), `correct` (uint8: the
  task's `acc`, else its first 0/1 metric), `metric` (that metric's name, one element) and,
  for log-likelihood tasks, `loglik` (float64: the target's log-likelihood). Rolling-perplexity
  tasks have no 0/1 metric and no items file.
- `results.json`   everything of this checkpoint in lm-eval 0.4's results layout (what
  `lm_eval --output_path` writes, without its timestamps), readable by `pythia results import`.

The tasks are prepared the way lm-eval's `simple_evaluate` prepares them (the shots option
unless a task fixes 0, few-shot sampler seed 1234; Python/NumPy/torch seeds 0/1234/1234),
then `lm_eval.evaluator.evaluate` runs all stale tasks of the checkpoint in one pass, so the
model answers every request of every task in length-sorted batches. Loading tasks once per
sweep and skipping simple_evaluate's per-call environment report is most of the speed-up
over looping `lm_eval --model hf`.
"""
from __future__ import annotations

import functools
import io
import json
import logging
import os
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path, write_text_atomic
from ..results import Row
from .naming import result_rows, task_label
from .tasks import TaskSpec, quiet_lm_eval

__all__ = ["checkpoint_eval", "item_arrays", "prepare_tasks", "shots", "write_npz"]

log = logging.getLogger("pythia.evals")
FORMAT = "pythia-eval-task/1"
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed


def prepare_tasks(specs: list[TaskSpec], num_fewshot: int | None) -> None:
    """Shots as simple_evaluate sets them: the option, except for tasks whose YAML fixes 0."""
    for spec in specs:
        for task in spec.loaded["tasks"].values():
            configured = task.get_config("num_fewshot")
            if num_fewshot is not None and configured != 0:
                task.set_config(key="num_fewshot", value=num_fewshot)
            elif configured is None:
                task.set_config(key="num_fewshot", value=0)


def shots(spec: TaskSpec) -> int:
    return max((t.get_config("num_fewshot") or 0) for t in spec.loaded["tasks"].values())


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=1, default=_jsonable, ensure_ascii=False) + "\n"


def _merge(specs: list[TaskSpec]) -> dict:
    merged = {"tasks": {}, "groups": {}, "group_map": {}}
    for s in specs:
        for k in merged:
            merged[k].update(s.loaded.get(k) or {})
    return merged


def run_lm_eval(lm, specs: list[TaskSpec], limit: int | None, bootstrap_iters: int) -> dict:
    """lm-eval's evaluator on `specs`, seeded as simple_evaluate seeds it."""
    import torch
    from lm_eval.evaluator import evaluate

    # bootstrap stderrs in-process: same draws (seeded per chunk), no process pool forked per
    # metric and checkpoint from a process that holds a model
    os.environ.setdefault("DISABLE_MULTIPROC", "1")
    random.seed(0)
    np.random.seed(1234)
    torch.manual_seed(1234)
    for s in specs:
        for task in s.loaded["tasks"].values():
            task.set_fewshot_seed(seed=FEWSHOT_SEED)
    with quiet_lm_eval():
        return evaluate(lm=lm, task_dict=_merge(specs), limit=limit, bootstrap_iters=bootstrap_iters,
                        log_samples=True)


def _slice(out: dict, spec: TaskSpec) -> dict:
    """The part of lm-eval's output that belongs to one requested task or group."""
    names = set(spec.loaded["tasks"]) | set(spec.loaded.get("groups") or {})
    part = {}
    for key in ("results", "groups", "configs", "versions", "n-shot", "higher_is_better", "n-samples",
                "group_subtasks"):
        sub = {k: v for k, v in (out.get(key) or {}).items() if k in names}
        if sub:
            part[key] = sub
    return part


def item_arrays(samples: list[dict], output_type: str) -> dict | None:
    """Per-item outcomes from lm-eval's logged samples (first filter only), or None when the
    task has no 0/1 metric (e.g. rolling perplexity)."""
    if not samples:
        return None
    first = samples[0]["filter"]
    rows = sorted((s for s in samples if s["filter"] == first), key=lambda s: s["doc_id"])
    names = [k for k in rows[0].get("metrics", []) if k in rows[0]]
    binary = [k for k in names if all(isinstance(r[k], (bool, int, float, np.number)) and float(r[k]) in (0.0, 1.0)
                                      for r in rows)]
    metric = "acc" if "acc" in binary else (binary[0] if binary else None)
    if metric is None:
        return None
    arrays = {"doc_id": np.array([r["doc_id"] for r in rows], dtype=np.int64),
              "pred": np.full(len(rows), -1, dtype=np.int64),
              "correct": np.array([float(r[metric]) for r in rows], dtype=np.uint8),
              "metric": np.array([metric])}
    if output_type == "multiple_choice":
        lls = [[resp[0] for resp in r["filtered_resps"]] for r in rows]
        arrays["pred"] = np.array([int(np.argmax(x)) for x in lls], dtype=np.int64)
        arrays["loglik"] = np.array([x[int(r["target"])] for x, r in zip(lls, rows)], dtype=np.float64)
    elif output_type == "loglikelihood":
        arrays["loglik"] = np.array([r["filtered_resps"][0][0] for r in rows], dtype=np.float64)
    return arrays


def write_npz(path: Path, arrays: dict) -> None:
    """np.savez layout (one .npy per array in a zip), with fixed zip timestamps so the same
    arrays give the same bytes; renamed into place (artifacts are not fsynced: the runner's
    unit, written after them, is; a damaged task file is recomputed by the next sweep that
    needs it, e.g. with --force)."""
    with atomic_path(path, durable=False) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


@functools.lru_cache(maxsize=1)
def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def _task_key(spec: TaskSpec, digest: str, opts: dict, version: int) -> dict:
    return {"format": FORMAT, "analysis_version": version, "digest": digest, "task": spec.name,
            "shots": shots(spec), "limit": opts.get("limit"), "bootstrap_iters": opts["bootstrap_iters"],
            "fingerprint": spec.fingerprint, "lm_eval": lm_eval_version()}


def _read_cached(path: Path, key: dict) -> dict | None:
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None  # a damaged file is recomputed
    return stored.get("output") if stored.get("key") == key else None


def _tokenizer(ctx):
    """(the checkpoint's tokenizer, its encode cache), loaded once per distinct tokenizer.json
    in a sweep."""
    from ..io import sha256_file
    from .lm import load_hf_tokenizer

    path = ctx.checkpoint.path
    tj = path / "tokenizer.json"
    key = ("eval.tokenizer", sha256_file(tj) if tj.is_file() else str(path))
    if key not in ctx.shared:
        ctx.shared[key] = (load_hf_tokenizer(path), {})
    return ctx.shared[key]


def _compute(ctx, specs: list[TaskSpec], opts: dict) -> tuple[dict, float, float]:
    """Run the stale tasks: (lm-eval output, seconds loading the model, seconds scoring)."""
    from .lm import PythiaLM

    t0 = time.perf_counter()
    model = ctx.model
    t1 = time.perf_counter()
    tokenizer, encoded = _tokenizer(ctx)
    was_training = model.training  # a trainer's in-memory model goes back to training mode
    try:
        lm = PythiaLM(model=model, tokenizer=tokenizer, batch_size=opts["batch_size"], progress=False,
                      encode_cache=encoded)
        out = run_lm_eval(lm, specs, opts.get("limit"), opts["bootstrap_iters"])
    finally:
        model.train(was_training)
    return out, t1 - t0, time.perf_counter() - t1


def checkpoint_eval(ctx, specs: list[TaskSpec], opts: dict, version: int) -> list[Row]:
    """Rows of every task in `specs` at ctx's checkpoint, reusing per-task files whose key
    matches and computing the rest in one lm-eval pass; writes the files described above."""
    art = ctx.artifact_dir("eval")
    keys = {s.name: _task_key(s, ctx.checkpoint.digest, opts, version) for s in specs}
    outputs = {s.name: _read_cached(art / f"{task_label(s.name, shots(s))}.json", keys[s.name]) for s in specs}
    stale = [s for s in specs if outputs[s.name] is None]
    if stale:
        out, load_s, score_s = _compute(ctx, stale, opts)
        for s in stale:
            outputs[s.name] = _slice(out, s)
            _write_task(art, s, outputs[s.name], keys[s.name], out.get("samples") or {})
        log.info("%s %s: load %.3fs score %.3fs (%d task(s) computed, %d reused)", ctx.member.name,
                 ctx.checkpoint.revision, load_s, score_s, len(stale), len(specs) - len(stale))
    write_text_atomic(art / "results.json", _dumps(_results_json(ctx, specs, outputs)), durable=False)
    rows = []
    for s in specs:
        rows += _output_rows(outputs[s.name], shots(s))
    asked = {f"{task_label(s.name, shots(s))}.json" for s in specs}
    return rows + _earlier_task_rows(art, asked, ctx.checkpoint.digest, version)


def _output_rows(output: dict, default_shots: int) -> list[Row]:
    n_shot = output.get("n-shot", {})
    rows = []
    for name, metrics in {**output.get("results", {}), **output.get("groups", {})}.items():
        rows += [Row(r["metric"], r["value"], task=r["task"], stderr=r["stderr"])
                 for r in result_rows(name, n_shot.get(name, default_shots), metrics)]
    return rows


def _earlier_task_rows(art: Path, asked: set[str], digest: str, version: int) -> list[Row]:
    """Rows of the tasks an earlier sweep scored on these same weights (per-task files whose key
    has this checkpoint's digest): the table keeps one unit per (analysis, member, step), so a
    sweep of other tasks must carry them or `eval --tasks A` then `eval --tasks B` would leave B
    alone in the table."""
    rows = []
    for path in sorted(art.glob("*.json")):
        if path.name in asked or path.name == "results.json":
            continue
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        key = stored.get("key") if isinstance(stored, dict) else None
        if not isinstance(key, dict) or key.get("format") != FORMAT or key.get("digest") != digest \
                or key.get("analysis_version") != version:
            continue
        rows += _output_rows(stored.get("output") or {}, key.get("shots") or 0)
    return rows


def _write_task(art: Path, spec: TaskSpec, output: dict, key: dict, samples: dict) -> None:
    for name, task in spec.loaded["tasks"].items():
        arrays = item_arrays(samples.get(name) or [], task.OUTPUT_TYPE)
        if arrays is not None:
            write_npz(art / f"{task_label(name, task.get_config('num_fewshot') or 0)}.items.npz", arrays)
    write_text_atomic(art / f"{task_label(spec.name, shots(spec))}.json", _dumps({"key": key, "output": output}),
                      durable=False)


def _results_json(ctx, specs: list[TaskSpec], outputs: dict) -> dict:
    """lm-eval 0.4's results file layout for this checkpoint (no dates, so re-runs are equal)."""
    merged: dict = {}
    for s in specs:
        for key, sub in outputs[s.name].items():
            merged.setdefault(key, {}).update(sub)
    ck = ctx.checkpoint
    merged["config"] = {"model": "pythia", "model_args": {"pretrained": str(ctx.run.source), "member": ctx.member.name,
                                                         "revision": ck.revision},
                        "model_revision": ck.revision, "model_sha": ck.digest, "member": ctx.member.name,
                        "suite": ctx.run.name, "size": ctx.member.shape, "seed": ctx.member.seed, "step": ck.step}
    merged["lm_eval_version"] = lm_eval_version()
    merged["model_name"] = f"{ctx.run.name}/{ctx.member.name}"
    return merged
