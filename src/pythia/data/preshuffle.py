"""Write a training order out as a "preshuffled" dataset (item k = training position k, S+1
tokens each), the layout EleutherAI released for Pythia (pile-*-pythia-preshuffled)."""
from __future__ import annotations

from tqdm.auto import tqdm

from .indexed import IndexedDatasetBuilder


def export_preshuffled(order, out_prefix, num_positions: int | None = None,
                       chunk_rows: int = 1024, progress: bool = True) -> dict:
    """Positions [0, num_positions) of `order` (default: all usable) -> out_prefix.bin/.idx,
    atomically. Returns a summary {items, tokens, width, dtype}."""
    total = order.num_positions if num_positions is None else int(num_positions)
    if not 0 < total <= order.num_positions:
        raise ValueError(f"num_positions {total} outside 1..{order.num_positions}")
    with IndexedDatasetBuilder(out_prefix, order.dataset.dtype) as builder:
        bar = tqdm(total=total, desc="preshuffle", unit="row", disable=not progress or None)
        for lo in range(0, total, chunk_rows):
            hi = min(total, lo + chunk_rows)
            builder.add_rows(order.samples(range(lo, hi)))  # (R, S+1)
            bar.update(hi - lo)
        bar.close()
    return {"items": total, "tokens": builder.num_tokens, "width": order.seq_len + 1,
            "dtype": order.dataset.dtype.name}
