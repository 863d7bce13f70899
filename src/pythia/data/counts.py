"""How often a model had seen an n-gram by step k: occurrences from the suffix-array index
(ngram.py) mapped to training steps through the GPT-NeoX order (order.py), all vectorised.

Definition. An occurrence of an n-gram inside a document counts once, at the optimizer step
of the training sample whose input positions (the first S of its S+1 tokens) hold its first
token, provided the whole n-gram lies inside that sample's S+1 tokens; every epoch copy of the
document counts. With the order's stream (items concatenated in doc_idx order, every epoch),
the e-th copy of document d starts at stream position c[d, e]; an occurrence at offset r of d
sits at g = c[d, e] + r, so its sample is j = g // S (offset g - jS < S by construction), it
fits when (g - jS) + n <= S + 1, its position is k with shuffle_idx[k] = j, and its step is
k // B. "Counts up to step k" are the occurrences of updates 0..k-1: what checkpoint `stepk`
had seen (step n = positions [B n, B (n+1)), as in `pythia data batch --step n`).

Preshuffled files (EleutherAI's layout, Hub runs): item k is position k, so an occurrence at
offset r < S of item k is seen at step k // B.

Two ways to the same answers: `count` reads a slice of the order's step sidecar (stepindex.py:
this mapping done once per token and stored in suffix-array order, built on the first count
when its estimated size is within a limit, or ahead by `pythia data count-index --run`);
the occurrence arrays mapped per query (below) serve --documents, not_followed_by, n-grams of
256+ tokens, sequence_counts, and orders whose sidecar cannot be written (step_index=False).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .indexed import DataFormatError
from .ngram import CHUNK, NgramIndex, Occurrences, open_index
from .order import PositionError, TrainingOrder
from .stepindex import ROOM_MAX


class QueryError(ValueError):
    """A count query that cannot be answered as asked (the message says why)."""


class EmptyQueryError(QueryError):
    """The text tokenizes to no tokens."""


class OutOfVocabularyError(QueryError):
    """Token ids outside the tokenizer's vocabulary."""


class OrderMap:
    """Dataset offsets -> training positions for a GPT-NeoX order (see module doc)."""

    def __init__(self, order: TrainingOrder):
        ds = order.dataset
        doc_idx = np.asarray(order.doc_idx)
        n, epochs = len(ds), order.num_epochs
        lens = ds.sizes[doc_idx].astype(np.int64)  # (E n,) tokens of each doc_idx slot
        self.slot_start = np.cumsum(lens) - lens  # (E n,) stream position of each slot
        self.slot_end = self.slot_start + lens
        copies = np.bincount(doc_idx, minlength=n)
        if copies.size != n or np.any(copies != epochs):
            raise DataFormatError(f"{order.stem}: doc_idx does not hold every item {epochs} times")
        if epochs == 1:
            copy_start = np.empty(n, np.int64)
            copy_start[doc_idx] = self.slot_start
        else:  # the slots of each item, in stream order: a stable sort by item
            copy_start = self.slot_start[np.argsort(doc_idx, kind="stable")]
        self.copy_start = copy_start.reshape(n, epochs)  # (n, E)
        shuffle = np.asarray(order.shuffle_idx).astype(np.int64)  # (Ns,) position -> sample
        self.position_of = np.empty(shuffle.size, np.int64)  # (Ns,) sample -> position
        self.position_of[shuffle] = np.arange(shuffle.size)
        self.order, self.seq_len, self.num_positions = order, order.seq_len, order.num_positions
        self.epochs = epochs

    def first_seen(self, item: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For tokens (item, offset in it) (m,): the training position of the sample holding each
        epoch copy as an input position ((m, E), -1 if never trained) and the tokens from there
        to the end of that sample of S+1 ((m, E)): what the step sidecar (stepindex.py) stores."""
        S = self.seq_len
        g = self.copy_start[item] + rel[:, None]  # (m, E) stream positions
        j = g // S  # (m, E) sample holding it as an input position
        room = S + 1 - (g - j * S)
        k = np.full(g.shape, -1, np.int64)
        inside = j < self.position_of.size
        k[inside] = self.position_of[j[inside]]
        k[k >= self.num_positions] = -1
        return k, room

    def positions(self, occ: Occurrences, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(index into occ, training position) of every counted copy of every occurrence."""
        S, epochs = self.seq_len, self.copy_start.shape[1]
        g = (self.copy_start[occ.item] + occ.rel[:, None]).reshape(-1)  # (m E,) stream positions
        j = g // S  # (m E,) sample holding the first token as an input position
        g -= j * S  # offset in that sample
        ok = (g <= S + 1 - n) & (j < self.position_of.size)
        idx = np.flatnonzero(ok)
        k = self.position_of[j[idx]]
        keep = k < self.num_positions
        if not keep.all():
            idx, k = idx[keep], k[keep]
        return (idx // epochs if epochs > 1 else idx), k

    def windows(self, positions: np.ndarray, offset: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (R, length) of the windows [offset, offset+length) of training positions, and
        whether each lies inside one document (else it cannot be counted by a document index)."""
        tokens = self.order.samples(positions)[:, offset:offset + length]  # checks the positions
        g = np.asarray(self.order.shuffle_idx)[positions].astype(np.int64) * self.seq_len + offset  # (R,)
        slot = np.searchsorted(self.slot_start, g, side="right") - 1
        return tokens, g + length <= self.slot_end[slot]


class PreshuffledMap:
    """Dataset offsets -> training positions for a preshuffled file (item k = position k)."""

    def __init__(self, order):
        self.order, self.seq_len, self.num_positions = order, order.seq_len, order.num_positions
        self.epochs = 1

    def first_seen(self, item: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As OrderMap.first_seen: item k is position k, its first S tokens its inputs."""
        k = np.where((rel < self.seq_len) & (item < self.num_positions), item, -1)[:, None]  # (m, 1)
        return k, (self.seq_len + 1 - rel)[:, None]

    def positions(self, occ: Occurrences, n: int) -> tuple[np.ndarray, np.ndarray]:
        ok = (occ.rel < self.seq_len) & (occ.item < self.num_positions)
        return np.flatnonzero(ok), occ.item[ok]

    def windows(self, positions: np.ndarray, offset: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        if positions.size and (positions.min() < 0 or positions.max() >= self.num_positions):
            raise PositionError(f"positions outside 0..{self.num_positions - 1}")
        tokens = np.asarray(self.order.rows[positions, offset:offset + length], dtype=np.int64)
        return tokens, np.ones(positions.size, bool)


def step_map(order):
    return OrderMap(order) if isinstance(order, TrainingOrder) else PreshuffledMap(order)


@dataclass
class TermCount:
    """The answer to one count query (see the module doc for what counts)."""

    tokens: list[int]
    corpus_count: int
    """Occurrences inside the dataset's documents, each once (no order, no epochs)."""
    step_counts: np.ndarray | None = None
    """(steps of the order,) occurrences counted at each 0-based optimizer step; None without an order."""
    until_step: int | None = None
    documents: list[dict] | None = None
    documents_total: int = 0
    text: str | None = None
    extra: dict = field(default_factory=dict)

    def at(self, step: int) -> int:
        """Occurrences in updates [0, step): what checkpoint `step` had seen."""
        if self.step_counts is None:
            return self.corpus_count
        return int(self.step_counts[:max(0, step)].sum())

    @property
    def count(self) -> int:
        return self.at(self.until_step) if self.step_counts is not None else self.corpus_count

    @property
    def first_step(self) -> int | None:
        """First 0-based update (below until_step) that holds an occurrence, else None."""
        if self.step_counts is None:
            return None
        hit = np.flatnonzero(self.step_counts[:self.until_step])
        return int(hit[0]) if hit.size else None

    def by_step(self, steps) -> list[dict]:
        cum = np.concatenate([[0], np.cumsum(self.step_counts)]) if self.step_counts is not None else None
        return [{"step": int(s), "count": int(cum[min(int(s), cum.size - 1)]) if cum is not None else self.corpus_count}
                for s in steps]

    def to_json(self, by_steps=None) -> dict:
        out = {"text": self.text, "tokens": self.tokens, "count": self.count, "first_step": self.first_step,
               "until_step": self.until_step, "corpus_count": self.corpus_count} | self.extra
        if by_steps is not None:
            out["by_step"] = self.by_step(by_steps)
        if self.documents is not None:
            out["documents"], out["documents_total"] = self.documents, self.documents_total
        return out


class TermCounter:
    """Counts n-grams of one dataset, optionally over one training order (a member's)."""

    def __init__(self, index: NgramIndex, order=None, batch_size: int | None = None,
                 train_iters: int | None = None, tokenizer_path=None, step_index: bool = True,
                 progress: bool = False, step_index_max: float | None = None):
        """step_index: count through the order's step sidecar (stepindex.py; built beside the
        index on the first count, ~3E+1 bytes per token, when its estimated size is within
        stepindex.size_limit(step_index_max): bytes, default $PYTHIA_STEP_INDEX_MAX or 16 GiB);
        False counts from the suffix array alone (slower, same answers)."""
        if order is not None and not batch_size:
            raise QueryError("counting by step needs the global batch size")
        if hasattr(order, "transform") and hasattr(order, "base"):  # a fork's (train.intervention.InterventionOrder)
            order = order.base  # same documents at the same positions; see for_member
        self.index, self.order, self.batch_size, self.train_iters = index, order, batch_size, train_iters
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else None
        self.use_step_index, self.progress, self.step_index_max = step_index, progress, step_index_max
        self._map = None
        self._steps = None
        self._tokenizer = None

    @classmethod
    def for_prefix(cls, prefix, index_dir=None, build: bool = True, progress: bool = True, tokenizer=None):
        """Whole-corpus counts of a dataset (no order)."""
        from .tokenize import dataset_tokenizer

        return cls(open_index(prefix, index_dir, build=build, progress=progress),
                   tokenizer_path=tokenizer or dataset_tokenizer(prefix))

    @classmethod
    def for_member(cls, member, index_dir=None, build: bool = True, progress: bool = False, tokenizer=None,
                   step_index: bool = True, step_index_max: float | None = None):
        """Counts over what a run member trained on (its dataset and its order)."""
        from .tokenize import dataset_tokenizer

        if not member.dataset:
            raise QueryError(f"{member.name}: no training data known (open a Hub run with data=PREFIX)")
        index = open_index(member.dataset, index_dir, build=build, progress=progress)
        tok = tokenizer or dataset_tokenizer(member.dataset) or member.tokenizer_path
        if getattr(member, "intervention", None) is not None:
            import warnings

            warnings.warn(f"{member.name} is a fork of {member.base}: counted over its base's training data (the "
                          f"edits its intervention made from step {member.from_step} on are not counted)", stacklevel=2)
        return cls(index, member.order(), member.global_batch, member.train_iters, tok, step_index=step_index,
                   progress=progress, step_index_max=step_index_max)

    # -- queries ---------------------------------------------------------------------------
    @property
    def map(self):
        if self._map is None and self.order is not None:
            self._map = step_map(self.order)
        return self._map

    @property
    def steps(self):
        """The order's step sidecar (stepindex.StepIndex), opened or built on first use; None
        without an order, when disabled, too large to build unasked, or where it cannot be written."""
        if self._steps is None and self.order is not None and self.use_step_index:
            from .stepindex import open_step_index

            self._steps = open_step_index(self.index, self.order, self.batch_size, smap=lambda: self.map,
                                          progress=self.progress, max_bytes=self.step_index_max)
            self.use_step_index = self._steps is not None
        return self._steps

    @property
    def num_steps(self) -> int:
        """Steps the order covers (the last may be partial)."""
        return -(-self.order.num_positions // self.batch_size)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.tokenizer_path is None:
                raise QueryError(f"no tokenizer known for {self.index.dataset.prefix}: pass --tokenizer, or "
                                 "give token ids (--tokens)")
            from .tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    @cached_property
    def vocab_size(self) -> int:
        if self.tokenizer_path is not None:
            return self.tokenizer.get_vocab_size(with_added_tokens=True)
        known = (self.index.tokenizer or {}).get("vocab_size")
        return int(known) if known else int(np.iinfo(self.index.dataset.dtype).max) + 1

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` exactly (no special tokens added, no space prepended)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            raise EmptyQueryError(f"{text!r} tokenizes to no tokens: nothing to count")
        return ids

    def check_ids(self, ids) -> list[int]:
        ids = [int(i) for i in ids]
        if not ids:
            raise EmptyQueryError("no token ids given: nothing to count")
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise OutOfVocabularyError(f"token id(s) {bad} outside the vocabulary 0..{self.vocab_size - 1} of "
                                       f"{self.tokenizer_path or self.index.dataset.prefix}")
        return ids

    def resolve_until(self, until_step: int | None) -> int:
        default = self.train_iters if self.train_iters is not None else self.num_steps
        until = default if until_step is None else int(until_step)
        if not 0 <= until <= self.num_steps:
            raise PositionError(f"--until-step {until} outside 0..{self.num_steps} (steps of the order)")
        return until

    def count(self, ids, *, until_step: int | None = None, documents: bool = False, max_documents: int = 20,
              not_followed_by: np.ndarray | None = None, text: str | None = None) -> TermCount:
        """Count one n-gram (token ids). not_followed_by: a boolean mask over the vocabulary;
        occurrences whose next token in the document is in it are dropped (e.g. digits, to
        count the number " 12" but not the start of " 123")."""
        ids = self.check_ids(ids)
        until = self.resolve_until(until_step) if self.order is not None else None
        if (not documents and not_followed_by is None and len(ids) <= ROOM_MAX and self.order is not None
                and self.steps is not None):
            steps_hist, corpus = self.steps.count(ids)  # a slice of the sidecar: same answers, faster
            return TermCount(ids, corpus, steps_hist, until, text=text)
        steps_hist = np.zeros(self.num_steps, np.int64) if self.order is not None else None
        corpus, per_doc = 0, _DocTally() if documents else None
        for occ in self.index.find(np.asarray(ids)):
            occ = self._drop_followed(occ, len(ids), not_followed_by)
            corpus += occ.offset.size
            steps = rows = None
            if self.order is not None:
                rows, k = self.map.positions(occ, len(ids))
                steps = k // self.batch_size
                steps_hist += np.bincount(steps, minlength=steps_hist.size)
            if per_doc is not None:
                per_doc.add(occ.item, rows, steps, until)
        result = TermCount(ids, corpus, steps_hist, until, text=text)
        if per_doc is not None:
            result.documents, result.documents_total = per_doc.table(self.index.dataset.prefix, max_documents,
                                                                     by_step=self.order is not None)
        return result

    def _drop_followed(self, occ: Occurrences, n: int, mask: np.ndarray | None) -> Occurrences:
        if mask is None or occ.offset.size == 0:
            return occ
        nxt = occ.offset + n  # (m,) token after the n-gram
        has_next = nxt < self.index.ends[occ.item]
        drop = np.zeros(occ.offset.size, bool)
        drop[has_next] = mask[np.asarray(self.index.tokens[nxt[has_next]], dtype=np.int64)]
        keep = ~drop
        return Occurrences(occ.pattern[keep], occ.offset[keep], occ.item[keep], occ.rel[keep])

    def sequence_counts(self, positions, *, until_step: int | None = None, offset: int = 0,
                        length: int = 64) -> np.ndarray:
        """For training positions (scored sequences), how many times the window [offset,
        offset+length) of each occurs in the training data of updates [0, until_step): an int64
        array, -1 where the window spans two documents (not countable by a document index).
        Duplicated sequences drive memorization (Biderman et al. 2023); a window trained on
        before until_step counts itself, so such counts are >= 1."""
        if self.order is None:
            raise QueryError("sequence counts need a training order (a run member)")
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        until = self.resolve_until(until_step)
        out = np.full(positions.size, -1, np.int64)
        for a in range(0, positions.size, 4096):
            part = positions[a:a + 4096]
            tokens, inside = self.map.windows(part, offset, length)  # (R, L), (R,)
            if tokens.shape[1] != length:
                raise PositionError(f"window [{offset}, {offset + length}) exceeds the "
                                    f"{self.map.seq_len + 1}-token samples")
            out[a:a + part.size][inside] = self._pattern_counts(tokens[inside], until)
        return out

    def _pattern_counts(self, patterns: np.ndarray, until: int) -> np.ndarray:
        if patterns.shape[0] == 0:
            return np.zeros(0, np.int64)
        uniq, inverse = np.unique(patterns, axis=0, return_inverse=True)
        counts = np.zeros(uniq.shape[0], np.int64)
        for occ in self.index.find(uniq, chunk=CHUNK):
            rows, k = self.map.positions(occ, uniq.shape[1])
            seen = k // self.batch_size < until
            counts += np.bincount(occ.pattern[rows[seen]], minlength=counts.size)
        return counts[inverse.reshape(-1)]


class _DocTally:
    """Per-document occurrences (corpus) and trained counts / first step, reduced chunk by chunk."""

    def __init__(self):
        self.corpus: list[tuple[np.ndarray, np.ndarray]] = []
        self.trained: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, items, rows, steps, until) -> None:
        self.corpus.append(np.unique(items, return_counts=True))
        if steps is not None:
            seen = steps < until
            self.trained.append(_min_per_item(items[rows[seen]], steps[seen]))

    def table(self, prefix, limit: int, by_step: bool) -> tuple[list[dict], int]:
        from .tokenize import DocumentMetadata

        docs, occ = _sum_per_item(self.corpus)
        trained, first = {}, {}
        if self.trained:
            items, cnt, mins = (np.concatenate(x) for x in zip(*self.trained))
            t_items, t_cnt = _sum_per_item([(items, cnt)])
            trained = dict(zip(t_items.tolist(), t_cnt.tolist()))
            f_items, _, f_min = _min_per_item(items, mins)
            first = dict(zip(f_items.tolist(), f_min.tolist()))
        rows = [{"document": d, "occurrences": c} for d, c in zip(docs.tolist(), occ.tolist())]
        if by_step:
            for r in rows:
                r["trained"], r["first_step"] = trained.get(r["document"], 0), first.get(r["document"])
            rows.sort(key=lambda r: (r["first_step"] is None, r["first_step"] or 0, r["document"]))
        else:
            rows.sort(key=lambda r: (-r["occurrences"], r["document"]))
        meta = DocumentMetadata(prefix)
        shown = rows[:limit]
        for r in shown:
            r["source"] = meta[r["document"]]
        return shown, len(rows)


def _sum_per_item(parts) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    items = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    uniq, inv = np.unique(items, return_inverse=True)
    return uniq, np.bincount(inv, weights=counts, minlength=uniq.size).astype(np.int64)


def _min_per_item(items, steps):
    """(unique items, rows per item, smallest step per item)."""
    if items.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((steps, items))
    items, steps = items[order], steps[order]
    first = np.concatenate([[True], items[1:] != items[:-1]])
    uniq = items[first]
    counts = np.diff(np.append(np.flatnonzero(first), items.size))
    return uniq, counts, steps[first]


def prebuild_member_index(member, index_dir=None, *, shard_tokens: int | None = None, rebuild: bool = False,
                          max_bytes: float = float("inf"), progress: bool = False, done: dict | None = None) -> dict:
    """The one-off work `pythia data count` would do on a member's first count: the suffix-array
    index of its training data (built when absent) and the step sidecar of its order, whatever
    its size within `max_bytes` (`pythia data count-index --run`). Returns prebuild_step_index's
    record; members sharing an order share one sidecar: with `done` ({path: member} of those
    already seen) a repeat gets {"path", "shared_with"} and nothing is built."""
    from .stepindex import order_record, prebuild_step_index, step_index_dir

    if member.dataset:  # the index first (with shard_tokens) when absent
        kw = {} if shard_tokens is None else {"shard_tokens": shard_tokens}
        open_index(member.dataset, index_dir, build=True, progress=progress, **kw)
    counter = TermCounter.for_member(member, index_dir=index_dir, build=True, progress=progress, step_index=False)
    path = step_index_dir(counter.index, order_record(counter.index, counter.order, counter.batch_size))
    done = {} if done is None else done
    if path in done:
        return {"path": path, "shared_with": done[path]}
    done[path] = member.name
    return prebuild_step_index(counter.index, counter.order, counter.batch_size, lambda: counter.map,
                               rebuild=rebuild, progress=progress, max_bytes=max_bytes)


def sequence_counts(member, positions, *, until_step: int | None = None, offset: int = 0, length: int = 64,
                    index_dir=None) -> np.ndarray:
    """For the memorization analysis: per scored training position, how many times its tokens
    [offset, offset+length) (Pythia scores the first 64) occur in what `member` trained on in
    updates [0, until_step) (default: all); -1 where the window spans two documents. Builds the
    dataset's index on first use."""
    counter = TermCounter.for_member(member, index_dir=index_dir, build=True)
    return counter.sequence_counts(positions, until_step=until_step, offset=offset, length=length)


__all__ = ["EmptyQueryError", "OrderMap", "OutOfVocabularyError", "PreshuffledMap", "QueryError", "TermCount",
           "TermCounter", "sequence_counts", "step_map"]
