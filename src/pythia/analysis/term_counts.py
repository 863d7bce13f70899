"""`term_counts`: how often each term of a file occurs in what each member had trained on by
each of its checkpoints (rows: task = the term, metric "count", step = the checkpoint step),
for correlation with per-item accuracy. Counting: `pythia.data.counts` (suffix-array index +
the member's GPT-NeoX order); the index is built beside the training data on first use.
"""
from __future__ import annotations

from pathlib import Path

from .base import Analysis, AnalysisError, Option, register

INDEX_OPTION = Option("ngram_index", str, None,
                      "n-gram index folder of the training data (default: PREFIX.sa beside it; built when absent)")


def read_terms(path) -> list[str]:
    """One term per line, taken verbatim (no stripping, so ' 42' counts the tokens of ' 42');
    blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"{path}: cannot read the terms file ({exc})") from None
    terms = [line.removesuffix("\r") for line in lines if line.strip()]
    if not terms:
        raise AnalysisError(f"{path}: no terms (one per line)")
    return terms


def order_key(member) -> tuple:
    """Members with equal keys trained on one order: one TermCounter serves them all."""
    return (member.dataset, member.data_seed, member.global_batch, member.train_iters)


def member_counters(members, index_dir=None, progress: bool = False) -> dict:
    """A TermCounter per member; members with the same data and data seed share one (one order)."""
    from ..data.counts import TermCounter

    shared, out = {}, {}
    for m in members:
        if not m.dataset:
            raise AnalysisError(f"{m.name}: no training data known (open a Hub run with data=PREFIX)")
        key = order_key(m)
        if key not in shared:
            shared[key] = TermCounter.for_member(m, index_dir=index_dir, build=True, progress=progress)
        out[m.name] = shared[key]
    return out


@register
class TermCounts(Analysis):
    name = "term_counts"
    summary = "occurrences of each term of --terms FILE in what each member had trained on by each checkpoint"
    scope = "run"
    cacheable = False  # the terms file's content is an input the cache key cannot see
    options = (
        Option("terms", str, None, "file of terms, one per line, verbatim (' 42' counts the tokens of ' 42')"),
        INDEX_OPTION,
    )

    def check(self, run, members) -> None:
        if not self.opts["terms"]:
            raise AnalysisError("term_counts needs --terms FILE (one term per line)")
        read_terms(self.opts["terms"])

    def compute_run(self, run, store, members) -> list[dict]:
        from ..data.counts import QueryError

        terms = read_terms(self.opts["terms"])
        counters = member_counters(members, self.opts["ngram_index"])
        rows, cache = [], {}
        for m in members:
            counter = counters[m.name]
            for line, term in enumerate(terms, 1):
                if (id(counter), term) not in cache:
                    try:
                        cache[id(counter), term] = counter.count(counter.encode(term), text=term)
                    except QueryError as exc:
                        raise AnalysisError(f"{self.opts['terms']}: term {line} {term!r}: {exc}") from None
                tc = cache[id(counter), term]
                rows += [{"member": m.name, "step": s, "task": term, "metric": "count", "value": tc.at(s)}
                         for s in m.steps]
        return rows
