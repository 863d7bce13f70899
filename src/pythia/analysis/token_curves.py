"""`token_curves`: the surprisal of every token of a fixed probe at every checkpoint, what each
member had seen by then, and per-token learning statistics (definitions: `pythia.token_dynamics`;
Chang, Tu and Bergen, TACL 2024; Michaelov et al. 2025).

Per checkpoint (a unit each): the probe's pass (`_probe.score`, shared with `val_loss` on the
same windows) gives every token's surprisal; it is kept as a piece,
`artifacts/token_curves/{member}/step{N}/surprisal.npz` (float16, windows x (T-1)), with rows
`mean_surprisal` (the mean over the probe: val_loss's number on val_loss's windows) and, when
the member's training order is known, `r2_unigram`, `r2_bigram`, `coef_unigram`, `coef_bigram`:
least squares of the stored surprisal on the add-one smoothed n-gram surprisals of what the
member trained on in updates 0..step-1 (`pythia.data.seen_ngrams`, one pass over the order;
snapshots kept under `artifacts/token_curves/_counts/`, so a resumed or extended run scans only
the steps it has not counted yet).

Per member (after its checkpoints; recomputed when any of them changed): the pieces are stacked
into `artifacts/token_curves/{member}.npz` (`MemberView.token_curves()` loads it), written
atomically: `tokens` (windows x T ids), `steps`, `surprisal` (steps x windows x (T-1), float16;
position k-1 holds the surprisal of token k), and per probe token `aoa`, `forgettability`,
`variability` and `count` (occurrences in what the member had seen by its last step; -1 where
unknown). Rows: `acquired_frac` at each step, and `aoa_median`, `forgettability_mean`,
`variability_mean`, `n_tokens` over all tokens (task "") and per frequency bucket (task
`freq=2^k:2^(k+1)`), and the most-forgotten tokens (metric `forgotten`, task
"rank. context⟦token⟧", value = forgettability).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from ..io import write_npz_atomic
from ..token_dynamics import (acquired_share, age_of_acquisition, bucket_key, forgettability, frequency_bucket,
                              ngram_surprisals, ols_fit, variability)
from ._probe import PROBE_OPTIONS, Probe, read_probe, score as score_probe
from .base import Analysis, AnalysisError, Option, Row, register

COUNTS_FORMAT = "pythia-seen-ngrams/1"
CONTEXT_TOKENS = 12
"""Tokens of context shown before a most-forgotten token."""


def has_order(member) -> bool:
    """Whether the member's training data is known (a Hub repo opened without data= is not)."""
    return bool(member.dataset)


def piece_path(run, member_name: str, step: int) -> Path:
    """One checkpoint's surprisals (ctx.artifact_dir's layout)."""
    return Path(run.results_dir) / "artifacts" / "token_curves" / member_name / f"step{step}" / "surprisal.npz"


@register
class TokenCurves(Analysis):
    name = "token_curves"
    summary = ("surprisal of every probe token at every checkpoint; age of acquisition, forgetting, and fits "
               "on the n-gram counts of what each member had seen")
    version = 1
    options = PROBE_OPTIONS + (
        Option("val_batch", int, 8, "windows per forward pass", affects_result=False),
        Option("top_forgotten", int, 10, "most-forgotten tokens listed per member (rows `forgotten`)",
               affects_result=False),  # the member stage only: in its digest, not in the checkpoints' keys
    )

    def __init__(self, **opts):
        super().__init__(**opts)
        self._counters: dict = {}  # running n-gram counters by order, for checkpoints in step order

    # -- input checks ---------------------------------------------------------------------------
    def check(self, run, members) -> None:
        read_probe(run, self.opts, {})  # bad probe options or too few windows: named now
        if self.opts["top_forgotten"] < 0:
            raise AnalysisError(f"--top-forgotten must be >= 0, got {self.opts['top_forgotten']}")
        blind = [m.name for m in members if not has_order(m)]
        if blind:
            warnings.warn(f"token_curves: no training data known for {', '.join(blind)} (a Hub repo opened without "
                          "data=PREFIX): surprisal curves only, no n-gram rows (r2_unigram, r2_bigram, coef_*) and "
                          "no frequency buckets for them", stacklevel=3)

    def _probe(self, run, shared: dict) -> Probe:
        return read_probe(run, self.opts, shared)

    # -- per checkpoint -------------------------------------------------------------------------
    def compute(self, ctx) -> list[Row]:
        pr = self._probe(ctx.run, ctx.shared)
        per_token, sums = score_probe(ctx, pr.key, pr.windows, self.opts["val_batch"])
        surprisal = per_token.astype(np.float16)
        vocab = int(ctx.model.config.vocab_size)
        write_npz_atomic(ctx.artifact_dir(self.name) / "surprisal.npz",
                         {"surprisal": surprisal, "probe": np.array(pr.digest), "vocab_size": np.array(vocab)})
        rows = [Row("mean_surprisal", sum(sums) / per_token.size)]
        if has_order(ctx.member):
            state, pairs = self.counts_at(ctx.run, ctx.member, pr, vocab, ctx.step)
            u, b = ngram_surprisals(pr.windows, state.unigram, pairs, state.bigram, state.total, vocab)
            y = surprisal.astype(np.float64)
            r2_u, _ = ols_fit(y, [u])
            r2_b, (c_u, c_b) = ols_fit(y, [u, b])
            rows += [Row("r2_unigram", r2_u), Row("r2_bigram", r2_b), Row("coef_unigram", c_u),
                     Row("coef_bigram", c_b)]
        return rows

    # -- what the member had seen -----------------------------------------------------------------
    def counts_at(self, run, member, pr: Probe, vocab: int, step: int):
        """(counts of updates 0..step-1 for the probe's tokens and pairs, the pairs): a stored
        snapshot, else the running counter of this order advanced (from the nearest earlier
        snapshot), then stored."""
        from ..data.seen_ngrams import NgramState, SeenNgramCounter, probe_pairs

        pairs = probe_pairs(pr.windows)
        folder = self._counts_dir(run, member, pr, vocab)
        path = folder / f"step{step}.npz"
        if path.is_file():
            return _load_state(path, step), pairs
        counter = self._counters.get(folder)
        if counter is None or counter.state.step > step:
            earlier = sorted((int(p.stem[4:]) for p in folder.glob("step*.npz") if int(p.stem[4:]) < step), reverse=True)
            start = _load_state(folder / f"step{earlier[0]}.npz", earlier[0]) if earlier else None
            try:
                counter = SeenNgramCounter(member.order(), member.global_batch, pairs, vocab, start)
            except (OSError, ValueError) as exc:
                raise AnalysisError(f"token_curves: {member.name}: cannot read its training order ({exc})") from None
            self._counters[folder] = counter
        state: NgramState = counter.advance(step)
        write_npz_atomic(path, {"unigram": state.unigram, "bigram": state.bigram, "total": np.array(state.total)},
                         compress=True)
        return state.copy(), pairs

    def _counts_dir(self, run, member, pr: Probe, vocab: int) -> Path:
        """Snapshots of one order's counts for one probe: members that trained on the same order
        (data, data seed, batch; not forks) share them."""
        ident = {"format": COUNTS_FORMAT, "data": member.dataset, "data_seed": member.data_seed,
                 "batch": member.global_batch, "fork": member.name if member.base else None,
                 "probe": pr.digest, "vocab": vocab}
        h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(run.results_dir) / "artifacts" / self.name / "_counts" / h
        folder.mkdir(parents=True, exist_ok=True)
        record = folder / "order.json"
        if not record.is_file():
            from ..io import write_json_atomic

            write_json_atomic(record, ident)
        return folder

    # -- per member -----------------------------------------------------------------------------
    def _current(self, run, member, store) -> list[tuple[int, str]]:
        """(step, weights digest) of the member's checkpoints whose unit and piece are current."""
        out = []
        for step in member.steps:
            ck = member.checkpoint(step)
            try:
                digest = ck.digest
            except (OSError, ValueError):
                continue
            if (store.unit_key(self.name, member.name, step) == self.cache_key(digest)
                    and piece_path(run, member.name, step).is_file()):
                out.append((step, digest))
        return out

    def member_inputs(self, run, member, store) -> str | None:
        current = self._current(run, member, store)
        if not current:
            return None
        ident = [current, has_order(member), self.opts["top_forgotten"]]
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]

    def member_outputs_exist(self, run, member) -> bool:
        return member.token_curves_path.is_file()

    def compute_member(self, run, member, store) -> list[dict]:
        steps = [s for s, _ in self._current(run, member, store)]
        pr = self._probe(run, {})
        pieces, vocab = [], None
        for s in steps:
            path = piece_path(run, member.name, s)
            with np.load(path, allow_pickle=False) as z:
                if str(z["probe"]) != pr.digest:
                    raise AnalysisError(f"{path}: scored on another probe ({z['probe']}, now {pr.digest}); "
                                        "rerun with --force")
                pieces.append(z["surprisal"])
                vocab = int(z["vocab_size"])
        surprisal = np.stack(pieces)  # (K, W, T-1) float16
        aoa, forg, var = age_of_acquisition(steps, surprisal), forgettability(surprisal), variability(surprisal)
        count = np.full(aoa.shape, -1, np.int64)
        if has_order(member):
            state, _ = self.counts_at(run, member, pr, vocab, steps[-1])
            count = state.unigram[pr.windows[:, 1:]]
        write_npz_atomic(member.token_curves_path, {
            "tokens": pr.windows, "steps": np.asarray(steps, np.int64), "surprisal": surprisal, "aoa": aoa,
            "forgettability": forg, "variability": var, "count": count})
        rows = [{"step": s, "metric": "acquired_frac", "value": float(v)} for s, v in zip(steps, acquired_share(steps, aoa))]
        rows += _bucket_rows(aoa, forg, var, count if has_order(member) else None)
        rows += self._forgotten_rows(member, pr.windows, forg)
        return rows

    def _forgotten_rows(self, member, windows: np.ndarray, forg: np.ndarray) -> list[dict]:
        top = self.opts["top_forgotten"]
        if top <= 0:
            return []
        order = np.argsort(-forg.reshape(-1), kind="stable")[:top]
        decode = _decoder(member)
        rows = []
        for rank, flat in enumerate(order.tolist(), 1):
            w, k = divmod(flat, forg.shape[1])  # surprisal position k holds token k + 1
            context = decode(windows[w, max(0, k + 1 - CONTEXT_TOKENS):k + 1])
            token = decode(windows[w, k + 1:k + 2])
            rows.append({"step": None, "metric": "forgotten", "task": f"{rank}. {context}⟦{token}⟧",
                         "value": float(forg[w, k])})
        return rows


def _bucket_rows(aoa, forg, var, count) -> list[dict]:
    groups = {"": np.ones(aoa.shape, bool)}
    if count is not None:
        uniq, inverse = np.unique(count, return_inverse=True)
        labels = np.array([frequency_bucket(int(c)) for c in uniq])[inverse.reshape(count.shape)]
        groups |= {label: labels == label for label in sorted(set(labels.flat), key=bucket_key)}
    rows = []
    for task, mask in groups.items():
        rows += [{"step": None, "task": task, "metric": "aoa_median", "value": float(np.median(aoa[mask]))},
                 {"step": None, "task": task, "metric": "forgettability_mean", "value": float(forg[mask].mean())},
                 {"step": None, "task": task, "metric": "variability_mean", "value": float(var[mask].mean())},
                 {"step": None, "task": task, "metric": "n_tokens", "value": float(mask.sum())}]
    return rows


def _decoder(member):
    """ids -> readable text (newlines and tabs escaped); ids in angle brackets without a tokenizer."""
    path = member.tokenizer_path
    tok = None
    if path is not None:
        from ..data.tokenizer import load_tokenizer

        try:
            tok = load_tokenizer(path)
        except (OSError, ValueError):
            tok = None

    def decode(ids) -> str:
        ids = [int(i) for i in ids]
        text = tok.decode(ids) if tok is not None else "".join(f"<{i}>" for i in ids)
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return decode


def _load_state(path: Path, step: int):
    from ..data.seen_ngrams import NgramState

    with np.load(path, allow_pickle=False) as z:
        return NgramState(step, z["unigram"].astype(np.int64), z["bigram"].astype(np.int64), int(z["total"]))
