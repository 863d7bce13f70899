"""Batches of a training order saved as one .npy: `pythia data batch --out`."""
from __future__ import annotations

import sys

import numpy as np

from ..io import atomic_path


def save_batches(path: str, order, steps: range, batch_size: int, stacked: bool) -> tuple:
    """Stream the batches of `steps` into one .npy (header first, then each batch's bytes):
    memory holds one batch, whatever the range. Written under a temporary name, then renamed.
    `order` is anything with .batch(step, batch_size) -> (B, S+1); `stacked`: shape (steps, B, S+1)
    (else the one batch's (B, S+1)). Returns the array's shape."""
    from tqdm.auto import tqdm

    first = order.batch(steps.start, batch_size)  # (B, S+1)
    shape = (len(steps), *first.shape) if stacked else first.shape
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<i8")), "fortran_order": False, "shape": shape}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        bar = tqdm(steps, unit="step", desc="batches", disable=len(steps) < 2 or not sys.stderr.isatty())
        for n in bar:
            block = first if n == steps.start else order.batch(n, batch_size)
            f.write(np.ascontiguousarray(block, dtype="<i8").tobytes())
    return shape
