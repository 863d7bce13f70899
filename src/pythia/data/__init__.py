"""Data area: tokenizers, GPT-NeoX .bin/.idx datasets, GPT-NeoX v1.0's exact training order,
batches by step, provenance, preshuffled export and shards.

Modules: indexed (format), tokenizer, corpus (readers), tokenize (corpus -> dataset),
order (doc/sample/shuffle_idx + TrainingOrder/PreshuffledOrder), provenance, preshuffle, shards.
"""
from __future__ import annotations

from .indexed import IndexedDataset, IndexedDatasetBuilder
from .order import PreshuffledOrder, TrainingOrder, num_samples_for

__all__ = ["IndexedDataset", "IndexedDatasetBuilder", "PreshuffledOrder", "TrainingOrder", "num_samples_for"]
