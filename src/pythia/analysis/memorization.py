"""`memorization`: which training sequences a checkpoint reproduces verbatim, Pythia's way.

Biderman et al. 2023, "Emergent and Predictable Memorization in Large Language Models"
(arXiv 2304.11158); procedure of EleutherAI/pythia predictable-memorization/eval_memorization.py.
For every training position i the checkpoint has trained on (default: [0, step x global batch))
the prompt is the first 32 tokens of sample i and the target the next 32; the score is how many
of the 32 greedy tokens (end-of-document suppressed) equal the target; memorized <=> 32/32. The
scoring itself is `pythia.memorization` (`exact`: one teacher-forced pass, decoding only past
the first mismatch; `generate`: plain greedy decoding). Per-sequence scores are kept one byte
each in the artifact folder (`memorization_store`), chunk by chunk so a killed run resumes;
the results table gets the memorized fraction, the mean score, the score histogram, and the
same binned by the step each sequence was trained at.

With `duplicates=True` it also counts how many times each scored window (the prompt +
continuation tokens from the sample start, 64 for Pythia) occurs in the member's training data
of updates [0, step) (`pythia.data.counts`, the n-gram index of `ngram_index`, built beside the
data on first use), stores the counts beside the scores (`load_scores(...).duplicates`), and
adds memorization per log2 bin of that count (tasks `duplicates=A:B`, B exclusive: 1:2, 2:3,
3:5, 5:9, ...; `duplicates=uncountable` for windows spanning two documents) and the Spearman
rank correlation of count and score (task `duplicates`, metric `spearman`): the paper's
"duplicates drive memorization" (Biderman et al. 2023, sec. 4; Carlini et al. 2023, arXiv
2202.07646). Scores already stored for the same checkpoint, positions and settings are reused
(not under force=True).

`memorization_predictability` (whole run): precision and recall of predicting the memorized set
of (member B, step t) from that of (member A, step s) over the positions both scored, across
sizes (same step) and across checkpoints (same member). `memorization_export` writes the
scores as Pythia's `index,accuracy` CSVs.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .base import Analysis, AnalysisError, Option, Row, register
from .memorization_store import (Positions, artifact_folders, bin_by_duplicates, bin_by_trained_step,
                                 compute_chunked, compute_duplicates, export_pythia_csv, finished_scores,
                                 load_scores, parse_range, precision_recall, read_rows)
from .term_counts import INDEX_OPTION, order_key

__all__ = ["Memorization", "MemorizationExport", "MemorizationPredictability", "duplicate_rows",
           "fraction_over_steps", "predictability_matrix"]

_NOT_IN_KEY = ("mem_batch", "mem_chunk", "ngram_index")  # how/where the work is done, not what it computes


def _range_option(text, name="--positions") -> tuple[int, int | None] | None:
    if text is None:
        return None
    try:
        return parse_range(text, name)
    except ValueError as exc:
        raise AnalysisError(str(exc)) from None


def _config_json(checkpoint) -> dict:
    """config.json of a checkpoint ({} without one), parsed once per Checkpoint (its load shares it)."""
    return checkpoint.hf_config if (Path(checkpoint.path) / "config.json").is_file() else {}


def eod_of(checkpoint) -> int:
    """The id Pythia's min_length kept out of the continuation: config.json's eos_token_id (what
    transformers' generate masks), else the tokenizer's <|endoftext|>, else 0."""
    eos = _config_json(checkpoint).get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if eos is None and (Path(checkpoint.path) / "tokenizer.json").is_file():
        from ..data.tokenizer import EOD_TOKEN, load_tokenizer

        eos = load_tokenizer(Path(checkpoint.path) / "tokenizer.json").token_to_id(EOD_TOKEN)
    return int(eos) if eos is not None else 0


def check_vocab(member) -> None:
    """Refuse a dataset tokenized for another model: the dataset's manifest names its tokenizer;
    its vocabulary must fit the model and equal the tokenizer the checkpoints carry."""
    from ..data.tokenize import dataset_tokenizer, read_manifest

    steps = member.steps
    vocab = _config_json(member.checkpoint(steps[-1])).get("vocab_size") if steps else None
    info = (read_manifest(member.dataset) or {}).get("tokenizer") or {}
    if vocab and info.get("vocab_size") and int(info["vocab_size"]) > int(vocab):
        raise AnalysisError(f"memorization: {member.name}: dataset {member.dataset} was tokenized with "
                            f"{info['vocab_size']} tokens ({info.get('path')}), the model has a vocabulary "
                            f"of {vocab}: a tokenizer/vocab mismatch")
    data_tok = dataset_tokenizer(member.dataset)
    model_tok = member.checkpoint(steps[-1]).path / "tokenizer.json" if steps else None
    if data_tok is None or model_tok is None or not model_tok.is_file():
        return
    from ..data.tokenizer import load_tokenizer

    a, b = load_tokenizer(data_tok).get_vocab(True), load_tokenizer(model_tok).get_vocab(True)
    if a != b:
        diff = sorted(set(a.items()) ^ set(b.items()))[:3]
        raise AnalysisError(f"memorization: {member.name}: the dataset's tokenizer {data_tok} and the "
                            f"checkpoint's {model_tok} differ ({len(a)} vs {len(b)} tokens; e.g. {diff}): "
                            "a tokenizer/vocab mismatch")


@register
class Memorization(Analysis):
    name = "memorization"
    summary = "verbatim memorization of training sequences (32-token prompt -> 32 greedy tokens), Pythia's score"
    scope = "checkpoint"
    version = 1
    options = (
        Option("positions", str, None, "training positions A:B (B exclusive) to score; default 0:step x global "
                                       "batch, every sequence the checkpoint has trained on"),
        Option("sample", int, None, "score K positions drawn at random (without replacement) from that range"),
        Option("sample_seed", int, 0, "random seed of --sample"),
        Option("method", str, "exact", "exact: one teacher-forced pass, decoding only past the first mismatch; "
                                       "generate: greedy decoding of every sequence (same answer)",
               choices=("exact", "generate")),
        Option("prefix_only", bool, False, "store each sequence's longest matched prefix instead of Pythia's "
                                           "position-wise score: the same memorized set, and no decoding at all "
                                           "with --method exact"),
        Option("prompt_len", int, 32, "prompt tokens (Pythia: 32)"),
        Option("cont_len", int, 32, "continuation tokens to reproduce (Pythia: 32)"),
        Option("allow_eod", bool, False, "let greedy decoding produce the end-of-document token (Pythia "
                                         "suppressed it with min_length=64)"),
        Option("mem_batch", int, 256, "sequences per forward pass"),
        Option("mem_chunk", int, 65536, "sequences per resumable chunk (a killed run redoes at most one)"),
        Option("when_bins", int, 16, "bins of training steps for memorization vs when a sequence was trained"),
        Option("duplicates", bool, False, "also count how many times each scored window (prompt + continuation) "
                                          "occurs in the training data up to the step, and bin memorization by it"),
        INDEX_OPTION,
    )

    def cache_key(self, digest):
        """Without duplicates the key is what it was before that option existed (no rescoring)."""
        key = super().cache_key(digest)
        key["options"] = {k: v for k, v in key["options"].items()
                          if k not in _NOT_IN_KEY and not (k == "duplicates" and not v)}
        return key

    # -- input checks ------------------------------------------------------------------------
    def order(self, member):
        """The member's training order, opened once per analysis run."""
        cache = self.__dict__.setdefault("_orders", {})
        if member.name not in cache:
            if not member.dataset:
                raise AnalysisError(f"memorization: {member.name} has no training dataset (a Hub repo needs "
                                    "open_run(repo, data=PREFIX) with the preshuffled rows)")
            try:
                cache[member.name] = member.order()
            except (OSError, ValueError, IndexError) as exc:
                raise AnalysisError(f"memorization: {member.name}: cannot read its training data "
                                    f"{member.dataset}: {exc}") from None
        return cache[member.name]

    def check(self, run, members) -> None:
        o = self.opts
        P, C = o["prompt_len"], o["cont_len"]
        if not (1 <= P and 1 <= C <= 255):
            raise AnalysisError(f"memorization: --prompt-len must be >= 1 and --cont-len 1..255, got {P}, {C}")
        for name in ("mem_batch", "mem_chunk", "when_bins"):
            if o[name] < 1:
                raise AnalysisError(f"memorization: --{name.replace('_', '-')} must be >= 1, got {o[name]}")
        if o["sample"] is not None and o["sample"] < 1:
            raise AnalysisError(f"memorization: --sample must be >= 1, got {o['sample']}")
        rng = _range_option(o["positions"])
        for m in members:
            order = self.order(m)
            if order.seq_len + 1 < P + C:
                raise AnalysisError(f"memorization: {m.name}: samples of {order.seq_len + 1} tokens are shorter "
                                    f"than prompt + continuation ({P} + {C})")
            if rng and rng[1] is not None and rng[1] > order.num_positions:
                raise AnalysisError(f"memorization: --positions {o['positions']} goes beyond the {m.name} order's "
                                    f"{order.num_positions} positions")
            if rng and rng[1] is not None and (o["sample"] or 0) > rng[1] - rng[0]:
                raise AnalysisError(f"memorization: --sample {o['sample']} is more than the {rng[1] - rng[0]} "
                                    f"positions {o['positions']}")
            check_vocab(m)
            if o["duplicates"] and not m.global_batch:
                raise AnalysisError(f"memorization --duplicates: {m.name}: global batch unknown, so the step at "
                                    "which each occurrence was trained cannot be told")

    def positions(self, member, step: int) -> Positions:
        """The positions to score at `step` (checked against the order before any work)."""
        o, order = self.opts, self.order(member)
        lo, hi = _range_option(o["positions"]) or (0, None)
        if hi is None:
            if not member.global_batch:
                raise AnalysisError(f"memorization: {member.name}: global batch unknown; pass --positions A:B")
            hi = max(lo, step * member.global_batch)
        if hi > order.num_positions:
            raise AnalysisError(f"memorization: {member.name} step {step}: positions {lo}:{hi} go beyond the "
                                f"order's {order.num_positions} positions (pass --positions within 0:"
                                f"{order.num_positions})")
        if o["sample"] is None:
            return Positions(lo, hi)
        if o["sample"] > hi - lo:
            raise AnalysisError(f"memorization: --sample {o['sample']} is more than the {hi - lo} positions {lo}:{hi}")
        pick = np.random.default_rng(o["sample_seed"]).choice(hi - lo, size=o["sample"], replace=False)
        return Positions.of(np.sort(pick) + lo)

    @property
    def kind(self) -> str:
        """What one byte holds: "full" (matched positions) or "prefix" (matched prefix length)."""
        return "prefix" if self.opts["prefix_only"] else "full"

    def task(self, positions: Positions) -> str:
        o = self.opts
        parts = [f"positions={positions.lo}:{positions.hi}" if o["sample"] is None else
                 f"positions={_range_label(o['positions'])},sample={o['sample']},seed={o['sample_seed']}"]
        if (o["prompt_len"], o["cont_len"]) != (32, 32):
            parts.append(f"prompt={o['prompt_len']},cont={o['cont_len']}")
        if o["allow_eod"]:
            parts.append("eod")
        return ",".join(parts)

    # -- the work ----------------------------------------------------------------------------
    def compute(self, ctx) -> list[Row]:
        o = self.opts
        member, step = ctx.member, ctx.step
        positions = self.positions(member, step)
        order = self.order(member)
        eod = eod_of(ctx.checkpoint)
        meta = {"member": member.name, "step": step, "digest": ctx.checkpoint.digest, "prompt_len": o["prompt_len"],
                "cont_len": o["cont_len"], "allow_eod": bool(o["allow_eod"]), "eod_id": eod, "method": o["method"],
                "score": self.kind, "version": self.version}
        folder = ctx.artifact_dir(self.name)
        result = self._stored(ctx, folder, positions, meta)
        if result is None:
            result = compute_chunked(folder, positions, meta, self._scorer(ctx, order, eod), o["mem_chunk"],
                                     progress=ctx.progress,
                                     desc=f"memorization {member.name} {ctx.checkpoint.revision}")
        rows = summary_rows(result, self.task(positions)) + when_rows(result, member.global_batch, o["when_bins"])
        if o["duplicates"]:
            rows += duplicate_rows(dataclasses.replace(result, duplicates=self._count(ctx, folder, positions)))
        return rows

    def _stored(self, ctx, folder, positions: Positions, meta: dict):
        """Scores already published for exactly this checkpoint (weights digest), these positions
        and scoring settings by this version (e.g. when only duplicates=True or --when-bins is
        new, or a run was killed while counting): reused unless the run is forced."""
        return None if ctx.force else finished_scores(folder, positions, meta)

    def counter(self, member):
        """The member's count index (TermCounter), opened (built when absent) once per data order."""
        from ..data.counts import TermCounter

        cache = self.__dict__.setdefault("_counters", {})
        key = order_key(member)
        if key not in cache:
            self.order(member)  # names a member without training data first
            try:
                cache[key] = TermCounter.for_member(member, index_dir=self.opts["ngram_index"], build=True)
            except (OSError, ValueError) as exc:
                raise AnalysisError(f"memorization --duplicates: {member.name}: cannot open the n-gram index of "
                                    f"{member.dataset} ({exc})") from None
        return cache[key]

    def _count(self, ctx, folder, positions: Positions) -> np.ndarray:
        """The duplicate counts of the scored windows (stored beside the scores, chunk by chunk)."""
        o, member, step = self.opts, ctx.member, ctx.step
        counter, width = self.counter(member), o["prompt_len"] + o["cont_len"]
        meta = {"member": member.name, "step": step, "until_step": step, "offset": 0, "length": width,
                "dataset": str(member.dataset), "data_seed": member.data_seed, "global_batch": member.global_batch}

        def count(pos: np.ndarray) -> np.ndarray:
            try:
                return counter.sequence_counts(pos, until_step=step, offset=0, length=width)
            except ValueError as exc:
                raise AnalysisError(f"memorization --duplicates: {member.name} step {step}: {exc}") from None

        return compute_duplicates(folder, positions, meta, count, o["mem_chunk"], progress=ctx.progress,
                                  desc=f"duplicates {member.name} {ctx.checkpoint.revision}")

    def _scorer(self, ctx, order, eod: int):
        import torch

        from ..memorization import score_sequences

        o = self.opts
        P, C, batch = o["prompt_len"], o["cont_len"], o["mem_batch"]
        vocab = ctx.model.embed_out.weight.shape[0]

        def score(pos: np.ndarray) -> np.ndarray:
            out = [np.zeros(0, np.uint8)]
            for i in range(0, len(pos), batch):  # rows are read batch by batch: a chunk of 2049-token rows is large
                tokens = read_rows(order, pos[i:i + batch], P + C)  # (n, P+C)
                if tokens.size and int(tokens.max()) >= vocab:
                    bad = int(np.argmax(tokens.max(1) >= vocab))
                    raise AnalysisError(f"memorization: {ctx.member.name}: training position {int(pos[i + bad])} "
                                        f"holds token {int(tokens[bad].max())}, beyond the model's vocabulary of "
                                        f"{vocab}: a tokenizer/vocab mismatch")
                counts = score_sequences(ctx.model, torch.from_numpy(tokens), P, C, o["method"], self.kind,
                                         None if o["allow_eod"] else eod)
                out.append(counts.cpu().numpy().astype(np.uint8))
            return np.concatenate(out)

        return score


def _range_label(text) -> str:
    return text if text is not None else "trained"


def summary_rows(result, task: str) -> list[Row]:
    """sequences, memorized, memorized_frac, mean_score (full; fraction of C) or mean_prefix
    (prefix; tokens) and the histogram score_hist_k / prefix_hist_k (counts) over one range."""
    s, C = result.scores, result.cont_len
    n = len(s)
    rows = [Row("sequences", n, task)]
    if not n:
        return rows
    mem = float(result.memorized.mean())
    rows += [Row("memorized", int(result.memorized.sum()), task),
             Row("memorized_frac", mem, task, (mem * (1 - mem) / n) ** 0.5)]
    full = result.meta["score"] == "full"
    values = s / C if full else s.astype(np.float64)
    rows.append(Row("mean_score" if full else "mean_prefix", float(values.mean()), task,
                    float(values.std() / n ** 0.5)))
    hist = np.bincount(s, minlength=C + 1)
    rows += [Row(f"{'score' if full else 'prefix'}_hist_{k}", int(c), task) for k, c in enumerate(hist)]
    return rows


def when_rows(result, global_batch: int | None, bins: int) -> list[Row]:
    """memorized_frac, mean_score/mean_prefix and sequences per bin of the step at which each
    sequence was trained (task "trained_step=A:B")."""
    if not global_batch:
        return []
    full = result.meta["score"] == "full"
    scale = result.cont_len if full else 1
    out = []
    for b in bin_by_trained_step(result, global_batch, bins):
        task = f"trained_step={b['first']}:{b['last']}"
        out += [Row("sequences", b["sequences"], task), Row("memorized_frac", b["memorized"] / b["sequences"], task),
                Row("mean_score" if full else "mean_prefix", b["mean"] / scale, task)]
    return out


def duplicate_rows(result) -> list[Row]:
    """sequences, memorized_frac, mean_score/mean_prefix per log2 bin of the duplicate count
    (task "duplicates=A:B", B exclusive; "duplicates=uncountable" for windows spanning two
    documents), and over the countable windows the Spearman rank correlation of count and score
    (task "duplicates": `spearman`, None when undefined) and their number (`countable`)."""
    from scipy.stats import spearmanr

    full = result.meta["score"] == "full"
    scale = result.cont_len if full else 1
    out = []
    for b in bin_by_duplicates(result):
        task = "duplicates=uncountable" if b["first"] < 0 else f"duplicates={b['first']}:{b['last']}"
        out += [Row("sequences", b["sequences"], task), Row("memorized_frac", b["memorized"] / b["sequences"], task),
                Row("mean_score" if full else "mean_prefix", b["mean"] / scale, task)]
    counts = np.asarray(result.duplicates)
    ok = counts >= 0
    c, s = counts[ok], np.asarray(result.scores)[ok]
    rho = None
    if len(np.unique(c)) > 1 and len(np.unique(s)) > 1:  # else the rank correlation is undefined
        rho = float(spearmanr(c, s).statistic)
    return out + [Row("countable", int(ok.sum()), "duplicates"), Row("spearman", rho, "duplicates")]


@register
class MemorizationPredictability(Analysis):
    name = "memorization_predictability"
    summary = "precision/recall of predicting a checkpoint's memorized set from smaller members or earlier steps"
    scope = "run"
    version = 1
    options = (
        Option("positions", str, None, "only training positions A:B (default: every position both checkpoints scored)"),
        Option("predict_from", str, "both", "pairs: sizes (other members, same step), checkpoints (same member, "
                                            "other steps), both, or all (every pair)",
               choices=("both", "sizes", "checkpoints", "all")),
        Option("memorized_at", int, None, "count a sequence as memorized from K matched tokens (default: all of them)"),
    )

    def check(self, run, members) -> None:
        _range_option(self.opts["positions"])
        if self.opts["memorized_at"] is not None and self.opts["memorized_at"] < 1:
            raise AnalysisError(f"memorization_predictability: --memorized-at must be >= 1, "
                                f"got {self.opts['memorized_at']}")

    def compute_run(self, run, store, members) -> list[dict]:
        lo, hi = _range_option(self.opts["positions"]) or (0, None)
        arts = {(m.name, s): f for m in members for s, f in artifact_folders(run.results_dir, m.name).items()}
        loaded: dict = {}

        def scores(key):
            if key not in loaded:
                loaded[key] = load_scores(arts[key], mmap=True)
            return loaded[key]

        rows = []
        for (b, t) in sorted(arts):
            for (a, s) in sorted(arts):
                if (a, s) == (b, t) or not _wanted(self.opts["predict_from"], a, s, b, t):
                    continue
                pr = precision_recall(scores((a, s)), scores((b, t)), self.opts["memorized_at"], lo, hi)
                task = f"predictor={a}@step{s}"
                rows += [{"member": b, "step": t, "task": task, "metric": k, "value": v}
                         for k, v in pr.items()]
        return rows


def _wanted(kind: str, a, s, b, t) -> bool:
    return {"all": True, "sizes": s == t, "checkpoints": a == b, "both": s == t or a == b}[kind]


@register
class MemorizationExport(Analysis):
    name = "memorization_export"
    summary = "write memorization scores as Pythia's index,accuracy CSVs (memorization_{member}_{step}.csv)"
    scope = "run"
    cacheable = False
    selects_members = True  # exports only the members asked for
    options = (Option("export", str, None, "folder for the CSVs (one per member and step, no header, as "
                                           "Pythia's eval_memorization.py wrote them)"),)

    def check(self, run, members) -> None:
        if not self.opts["export"]:
            raise AnalysisError("memorization_export: name the output folder with --export DIR")

    def compute_run(self, run, store, members) -> list[dict]:
        out = Path(self.opts["export"])
        rows = []
        for m in members:
            for step, folder in artifact_folders(run.results_dir, m.name).items():
                scores = load_scores(folder)
                if scores.meta.get("score") != "full":
                    raise AnalysisError(f"memorization_export: {folder} holds matched prefixes (--prefix-only), "
                                        "not Pythia's position-wise accuracy; recompute without --prefix-only")
                export_pythia_csv(scores, out / f"memorization_{m.name}_{step}.csv")
                rows.append({"member": m.name, "step": step, "metric": "exported", "value": len(scores.scores)})
        return rows


def fraction_over_steps(store, metric: str = "memorized_frac") -> dict[str, list[tuple[int, float, float, float]]]:
    """Plot data "memorized fraction over steps per size": {size: [(step, mean, min, max) over
    the size's members]} from the summary rows (tasks "positions=...")."""
    by: dict[tuple[str, int], list[float]] = {}
    for r in store.rows(analysis="memorization", metric=metric):
        if r["task"].startswith("positions=") and r["value"] is not None:
            by.setdefault((r["size"], r["step"]), []).append(r["value"])
    out: dict[str, list] = {}
    for (size, step), v in sorted(by.items()):
        out.setdefault(size, []).append((step, float(np.mean(v)), min(v), max(v)))
    return out


def predictability_matrix(store, metric: str = "recall", *, step: int | None = None,
                          member: str | None = None) -> tuple[list, np.ndarray]:
    """A precision/recall heatmap from the `memorization_predictability` rows: across sizes at
    `step` (rows: target members, columns: predictor members) or across checkpoints of `member`
    (rows: target steps, columns: predictor steps). Returns (labels of rows = of columns, matrix);
    NaN where a pair is missing or undefined, 1 on the diagonal."""
    if (step is None) == (member is None):
        raise ValueError("give either step= (across sizes) or member= (across checkpoints)")
    cells = {}
    for r in store.rows(analysis="memorization_predictability", metric=metric):
        a, s = r["task"].removeprefix("predictor=").rsplit("@step", 1)
        if step is not None and r["step"] == step == int(s):
            cells[(r["member"], a)] = r["value"]
        elif member is not None and r["member"] == member == a:
            cells[(r["step"], int(s))] = r["value"]
    labels = sorted({k for pair in cells for k in pair}, key=lambda x: (str(type(x)), x))
    out = np.full((len(labels), len(labels)), np.nan)
    for i, target in enumerate(labels):
        for j, predictor in enumerate(labels):
            value = 1.0 if i == j else cells.get((target, predictor))
            out[i, j] = np.nan if value is None else value
    return labels, out
