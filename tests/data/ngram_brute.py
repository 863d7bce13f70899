"""Brute-force n-gram counts over a training order, for checking pythia.data.counts: the
order's stream rebuilt by concatenating documents in doc_idx order, each sample scanned."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def training_stream(order):
    """Tokens and doc_idx slot of every stream position: items concatenated in doc_idx order."""
    ds = order.dataset
    toks = np.concatenate([np.asarray(ds[int(d)], np.int64) for d in order.doc_idx])
    slot = np.repeat(np.arange(len(order.doc_idx)), ds.sizes[np.asarray(order.doc_idx)])
    return toks, slot


def brute(order, pattern, positions, stream=None, not_followed_by=None):
    """Per training position: occurrences of `pattern` whose first token is an input position of
    the sample (one of its first S tokens), lying inside one document copy; with a mask
    not_followed_by, those whose next token in the same document is in the mask are skipped."""
    toks, slot = stream if stream is not None else training_stream(order)
    S, n, out = order.seq_len, len(pattern), []
    for k in positions:
        j = int(order.shuffle_idx[k])
        w, s = toks[j * S:j * S + S + 1], slot[j * S:j * S + S + 1]
        assert np.array_equal(w, order.sample(k))  # the rebuilt stream is the order's
        win, sw = sliding_window_view(w, n)[:S], sliding_window_view(s, n)[:S]  # (<= S, n) starting at inputs
        hit = np.all(win == pattern, 1) & np.all(sw == sw[:, :1], 1)
        if not_followed_by is not None:
            for i in np.flatnonzero(hit):
                g = j * S + i + n  # the next token in the stream
                if g < toks.size and slot[g] == s[i] and not_followed_by[toks[g]]:
                    hit[i] = False
        out.append(int(hit.sum()))
    return np.array(out, dtype=np.int64)
