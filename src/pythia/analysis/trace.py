"""`trace`: a model's text traced back to what its member trained on, with when each span was seen.

The library is `pythia.data.trace` (OLMoTrace's maximal spans, Liu et al. 2025, arXiv
2504.07096, plus counts by step); here are the run-aware calls, which read the member's data,
order, batch size, steps and tokenizer from the run view:

    trace_member(member, "text", step=S)        spans of a text; count_until_step = what step S had seen
    generate(member, S, "prompt", 32)            greedy continuation by checkpoint S (to trace)
    open_tracer(member, log=print)               the member's Tracer, its index built first if absent

and the analysis (per checkpoint): the memorized sequences of the memorization study at that
checkpoint (RESULTS/artifacts/memorization/{member}/stepN, at most `max_memorized`) and greedy
generations from `prompts` are traced; every trace goes to
RESULTS/artifacts/trace/{member}/stepN/traces.json (what the report's Tracing section draws) and
a few rows per trace to the table: spans, covered (share of tokens inside a span), seen (share
of spans the checkpoint had seen), longest, and for a memorized sequence `trained_step` (when
its own position was trained) against `first_seen` (the earliest first step of its spans).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import write_text_atomic
from .base import Analysis, AnalysisError, Option, Row, register
from .term_counts import INDEX_OPTION, order_key

TRACES = "traces.json"


def open_tracer(member, *, index_dir=None, progress: bool = False, log=None, step_index_max=None):
    """The member's Tracer (pythia.data.trace): its dataset's suffix-array index and its order's
    step sidecar are built on first use, each announced through `log` with its size first."""
    from ..data.counts import QueryError, TermCounter
    from ..data.indexed import IndexedDataset
    from ..data.ngram import default_index_dir
    from ..data.stepindex import estimate_bytes, human, order_record, step_index_dir
    from ..data.trace import Tracer

    if not member.dataset:
        raise QueryError(f"{member.name}: no training data known (open a Hub run with data=PREFIX, the "
                         "preshuffled rows it trained on)")
    where = Path(index_dir) if index_dir else default_index_dir(member.dataset)
    if log is not None and not (where / "manifest.json").is_file():
        n = IndexedDataset(member.dataset).num_tokens
        log(f"{member.name}: no suffix-array index of {member.dataset} yet: building it first in {where} "
            f"({n:,} tokens, {human(4 * n)} on disk, ~{max(1, round(n / 2.4e6))} s)")
    counter = TermCounter.for_member(member, index_dir=index_dir, build=True, progress=progress,
                                     step_index_max=step_index_max)
    if log is not None:
        record = order_record(counter.index, counter.order, counter.batch_size)
        side = step_index_dir(counter.index, record)
        if not (side / "manifest.json").is_file():
            log(f"{member.name}: building the step sidecar of its order in {side} (at most "
                f"{human(estimate_bytes(counter.index, record))})")
    return Tracer(counter, member.train_iters)


def check_step(member, step) -> int:
    """The step whose knowledge a trace reports: default the member's last checkpoint; any step
    from 0 to the steps it trained (a clear error beyond the run)."""
    from ..run import compact_steps, parse_revision

    steps = member.steps
    trained = member.train_iters
    if step is None:
        if steps:
            return steps[-1]
        if trained is None:
            raise AnalysisError(f"{member.name}: no checkpoints and no known length of training: pass --step")
        return trained
    n = parse_revision(step)
    if n is None:
        return steps[-1] if steps else trained
    if trained is not None and n > trained:
        raise AnalysisError(f"step {n} is beyond the run: {member.name} trained {trained} steps (0..{trained}; "
                            f"checkpoints {compact_steps(steps) or 'none'})")
    return n


def trace_member(member, text: str | None = None, *, ids=None, step=None, options=None, tracer=None,
                 query: str | None = None, index_dir=None, log=None):
    """Trace `text` (or token `ids`) in what `member` trained on; `count_until_step` is what the
    checkpoint at `step` had seen (default: the last checkpoint). Returns a pythia.data.trace.Trace."""
    if (text is None) == (ids is None):
        raise AnalysisError("trace a text or token ids (one of them)")
    step = check_step(member, step)
    tracer = tracer or open_tracer(member, index_dir=index_dir, log=log)
    if ids is None:
        ids = tracer.counter.encode(text)
    result = tracer.trace(ids, until_step=step, options=options, checkpoint_steps=member.steps, text=text,
                          query=query)
    result.extra.update(member=member.name, step=step, checkpoints=list(member.steps))
    return result


def generate(member, step, prompt: str | list[int], max_new_tokens: int, *, tracer=None, model=None,
             device=None) -> tuple[list[int], list[int]]:
    """(prompt ids, generated ids): greedy decoding by the checkpoint at `step`, the end-of-document
    token and ids past the tokenizer's vocabulary suppressed (so every text has max_new_tokens)."""
    import torch

    from ..data.tokenizer import EOD_TOKEN
    from ..generate import generate_greedy

    if max_new_tokens < 1:
        raise AnalysisError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    tracer = tracer or open_tracer(member)
    ids = tracer.counter.encode(prompt) if isinstance(prompt, str) else tracer.counter.check_ids(prompt)
    if model is None:
        model = member.checkpoint(step).load(device=device)
    vocab = model.embed_out.weight.shape[0]
    tok = tracer.counter.tokenizer
    known = tok.get_vocab_size(with_added_tokens=True)
    banned = list(range(known, vocab)) + [i for i in (tok.token_to_id(EOD_TOKEN),) if i is not None]
    if max(ids) >= vocab:
        raise AnalysisError(f"prompt token {max(ids)} is outside the model's vocabulary of {vocab}")
    longest = getattr(model.config, "max_seq_len", None)
    if longest and len(ids) + max_new_tokens > longest:
        raise AnalysisError(f"prompt ({len(ids)} tokens) + --max-new-tokens {max_new_tokens} exceed the model's "
                            f"{longest}-token context")
    out = generate_greedy(model, torch.tensor([ids]), max_new_tokens, suppress=banned)
    return ids, out[0, len(ids):].tolist()


def read_prompts(path) -> list[str]:
    """One prompt per line, verbatim ("\\n" written as a backslash-n stands for a newline)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"{path}: cannot read the prompts file ({exc})") from None
    prompts = [line.removesuffix("\r").replace("\\n", "\n") for line in lines if line.strip()]
    if not prompts:
        raise AnalysisError(f"{path}: no prompts (one per line)")
    return prompts


def trace_rows(trace, task: str) -> list[Row]:
    """A few numbers per trace: spans, covered share, seen share, longest span."""
    n = len(trace.tokens)
    covered = np.zeros(n, bool)
    for s in trace.spans:
        covered[s.start:s.end] = True
    rows = [Row("spans", len(trace.spans), task), Row("covered", float(covered.mean()) if n else 0.0, task)]
    if trace.spans:
        rows += [Row("seen", float(np.mean([s.count_until_step > 0 for s in trace.spans])), task),
                 Row("longest", max(s.length for s in trace.spans), task)]
    return rows


@register
class TraceAnalysis(Analysis):
    name = "trace"
    summary = ("OLMoTrace spans of memorized sequences and greedy generations in the training data, with the step "
               "each was first seen")
    options = (
        Option("memorized", int, 4, "memorized sequences of the memorization study traced per checkpoint (0: none)"),
        Option("prompts", str, None, "file of prompts (one per line) whose greedy continuations are traced"),
        Option("max_new_tokens", int, 32, "tokens generated per prompt"),
        Option("max_frequency", int, 10, "spans trained on more often than this are dropped"),
        Option("span_density", float, 0.05, "spans kept per token of text (the best ranked)"),
        Option("rank", str, "length", "rank spans by length or rarity (unigram log-probability)",
               choices=("length", "rarity")),
        Option("delimiters", str, "\\n,.", "comma-separated delimiters no span holds but at its end (\\n: newline)"),
        Option("max_documents", int, 3, "documents kept per span"),
        Option("bm25", bool, False, "order each span's documents by BM25 relevance to the text"),
        INDEX_OPTION,
    )

    def trace_options(self):
        from ..data.trace import TraceOptions

        o = self.opts
        delims = tuple(d.replace("\\n", "\n") for d in (o["delimiters"] or "").split(",") if d)
        return TraceOptions(delimiters=delims, max_frequency=o["max_frequency"], span_density=o["span_density"],
                            rank=o["rank"], max_documents=o["max_documents"], bm25=bool(o["bm25"])).check()

    def check(self, run, members) -> None:
        try:
            self.trace_options()
        except ValueError as exc:
            raise AnalysisError(f"trace: {exc}") from None
        if self.opts["prompts"]:
            read_prompts(self.opts["prompts"])
        for m in members:
            if not m.dataset:
                raise AnalysisError(f"trace: {m.name}: no training data known (open a Hub run with data=PREFIX)")

    def tracer(self, member):
        return _tracer(self, member)

    def compute(self, ctx) -> list[Row]:
        member, step, o = ctx.member, ctx.step, self.opts
        tracer, options = self.tracer(member), self.trace_options()
        traces, rows = [], []
        for pos, ids in self._memorized(ctx):
            t = trace_member(member, ids=ids, step=step, options=options, tracer=tracer)
            trained_at = pos // member.global_batch
            t.extra.update(kind="memorized", label=f"memorized@{pos}", position=pos, trained_step=trained_at)
            traces.append(t)
            seen = [s.first_step for s in t.spans if s.first_step is not None]
            rows += trace_rows(t, f"memorized@{pos}") + [Row("trained_step", trained_at, f"memorized@{pos}")]
            if seen:
                rows.append(Row("first_seen", min(seen), f"memorized@{pos}"))
        for i, prompt in enumerate(read_prompts(o["prompts"]) if o["prompts"] else []):
            p_ids, new = generate(member, step, prompt, o["max_new_tokens"], tracer=tracer, model=ctx.model)
            t = trace_member(member, ids=new, step=step, options=options, tracer=tracer,
                             query=prompt + (tracer.decode(new) or ""))
            t.extra.update(kind="generation", label=f"generation{i}", prompt=prompt)
            traces.append(t)
            rows += trace_rows(t, f"generation{i}")
        payload = {"format": "pythia-trace/1", "member": member.name, "step": step,
                   "traces": [t.to_json() for t in traces]}
        write_text_atomic(ctx.artifact_dir(self.name) / TRACES, json.dumps(payload, indent=1, sort_keys=True) + "\n")
        return rows

    def _memorized(self, ctx) -> list[tuple[int, list[int]]]:
        """(position, prompt + continuation tokens) of up to `memorized` sequences this checkpoint
        reproduced in the memorization study (none when it was not run at this step)."""
        from .memorization_store import load_scores, read_rows

        if not self.opts["memorized"]:
            return []
        try:
            scores = load_scores(ctx.run, ctx.member.name, ctx.step)
        except FileNotFoundError:
            return []
        pos = np.asarray(scores.memorized_positions()[:self.opts["memorized"]], dtype=np.int64)
        if not pos.size:
            return []
        width = int(scores.meta["prompt_len"]) + int(scores.meta["cont_len"])
        tokens = read_rows(ctx.member.order(), pos, width)
        return [(int(p), row.tolist()) for p, row in zip(pos, tokens)]


def _tracer(analysis, member):
    """The member's Tracer, opened once per training order for one analysis object."""
    cache = analysis.__dict__.setdefault("_tracers", {})
    key = order_key(member)
    if key not in cache:
        try:
            cache[key] = open_tracer(member, index_dir=analysis.opts["ngram_index"])
        except (OSError, ValueError) as exc:
            raise AnalysisError(f"{analysis.name}: {member.name}: cannot open the n-gram index of {member.dataset} "
                                f"({exc})") from None
    return cache[key]


@register
class TraceContamination(Analysis):
    """A benchmark's items traced in the training data: which ones a checkpoint had seen."""

    name = "trace_contamination"
    summary = "an lm-eval task's items traced in the training data: the share each checkpoint had seen (contamination)"
    scope = "run"
    selects_members = True
    options = (
        Option("task", str, None, "the lm-eval task whose items (prompt + answer) are traced"),
        Option("include_path", str, None, "folder(s) of task YAMLs (a demo's DEMO/tasks is added)"),
        Option("items", int, 50, "items traced (the task's first N)"),
        Option("contamination_min", int, 8, "tokens of a span that make an item count as seen"),
        INDEX_OPTION,
    )

    def check(self, run, members) -> None:
        o = self.opts
        if not o["task"]:
            raise AnalysisError("trace_contamination needs --task T (an lm-eval task)")
        if o["items"] < 1 or o["contamination_min"] < 1:
            raise AnalysisError("trace_contamination: --items and --contamination-min must be >= 1")
        for m in members:
            if not m.dataset:
                raise AnalysisError(f"trace_contamination: {m.name}: no training data known (open a Hub run with "
                                    "data=PREFIX)")
        self._texts, self._fingerprint = item_texts(run, o["task"], o["include_path"], o["items"])

    def reads(self, analysis: str) -> bool:
        return False  # no rows: the task's items and the training data (in the cache key)

    def cache_key(self, digest):
        key = super().cache_key(digest)
        key["task_fingerprint"] = getattr(self, "_fingerprint", None)
        return key

    def compute_run(self, run, store, members) -> list[dict]:
        from ..data.trace import TraceOptions

        o, least = self.opts, self.opts["contamination_min"]
        opts = TraceOptions(delimiters=(), max_frequency=None, span_density=None, max_documents=0)
        traced, rows, stored = {}, [], {}
        for m in members:
            key = order_key(m)
            if key not in traced:
                tracer = _tracer(self, m)
                traced[key] = [(label, tracer.trace(tracer.counter.encode(text), options=opts, text=text))
                               for label, text in self._texts]
            items = [{"item": label, "tokens": len(t.tokens), "text": t.text,
                      "spans": [{"start": s.start, "end": s.end, "count": s.count, "first_step": s.first_step}
                                for s in t.spans if s.length >= least],
                      "longest": [(s.length, s.first_step) for s in t.spans if s.first_step is not None]}
                     for label, t in traced[key]]
            for step in m.steps:
                hit = [any(s["first_step"] is not None and s["first_step"] < step for s in it["spans"]) for it in items]
                longest = [max((n for n, first in it["longest"] if first < step), default=0) for it in items]
                rows += [{"member": m.name, "step": step, "task": o["task"], "metric": metric, "value": value}
                         for metric, value in (("contaminated", float(np.mean(hit))), ("longest_seen",
                                               float(np.mean(longest))), ("items", len(items)))]
            stored[m.name] = [{k: v for k, v in it.items() if k != "longest"} for it in items]
        folder = Path(run.results_dir) / "artifacts" / "trace"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / f"contamination-{o['task']}.json", json.dumps(
            {"format": "pythia-trace-contamination/1", "task": o["task"], "min_tokens": least, "members": stored},
            indent=1, sort_keys=True) + "\n")
        return rows


def item_texts(run, task: str, include_path: str | None, limit: int) -> tuple[list[tuple[str, str]], str]:
    """(label, prompt + target delimiter + answer) of the first `limit` items of an lm-eval task
    (loaded offline, as the eval analysis does; a demo's tasks are found by name), and the task's
    fingerprint."""
    from ..evals.tasks import TaskError, load_tasks
    from .eval import demo_task_dir

    paths = [p for p in (include_path or "").split(",") if p.strip()]
    demo = demo_task_dir(run)
    if demo is not None and str(demo) not in paths:
        paths.insert(0, str(demo))
    try:
        spec = load_tasks([task], paths)[0]
    except TaskError as exc:
        raise AnalysisError(f"trace_contamination --task: {exc}") from None
    out = []
    for name, t in sorted(spec.loaded["tasks"].items()):
        for i, doc in enumerate(list(t.eval_docs)[:limit]):
            target = t.doc_to_target(doc)
            if t.OUTPUT_TYPE == "multiple_choice" and isinstance(target, int):
                target = t.doc_to_choice(doc)[target]
            delim = getattr(t.config, "target_delimiter", " ") or ""
            out.append((f"{name}#{i}", f"{t.doc_to_text(doc)}{delim}{target}"))
    if not out:
        raise AnalysisError(f"trace_contamination --task {task}: no items")
    return out[:limit], spec.fingerprint


def load_traces(results_dir) -> list[dict]:
    """Every stored traces.json under RESULTS/artifacts/trace (member, step order)."""
    base = Path(results_dir) / "artifacts" / "trace"
    out = []
    for path in sorted(base.glob(f"*/step*/{TRACES}")):
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return out


__all__ = ["TraceAnalysis", "TraceContamination", "check_step", "generate", "item_texts", "load_traces",
           "open_tracer", "read_prompts", "trace_member", "trace_rows"]
