"""Each data-parallel rank reads the rows GPT-NeoX's sampler gives it.

Independent transcription of GPT-NeoX v1.0's megatron/data/samplers.py DistributedBatchSampler:
a sequential sampler over the global batch's positions is cut into batches of micro x world
(one per gradient-accumulation micro-step), and rank r takes the r-th micro-sized slice."""
from __future__ import annotations

import numpy as np
import pytest

from pythia.train.distributed import DistContext, rank_slice
from pythia.train.spec import SuiteSpec
from pythia.train.trainer import MemberRun, Trainer

from .conftest import tiny_spec


def neox_rows(global_batch: int, micro: int, world: int, rank: int) -> list[list[int]]:
    rows, batch = [], []
    for idx in range(global_batch):  # SequentialSampler
        batch.append(idx)
        if len(batch) == micro * world:  # BatchSampler(batch_size=micro * world)
            rows.append(batch[rank * micro:(rank + 1) * micro])  # DistributedBatchSampler._batch
            batch = []
    return rows


@pytest.mark.parametrize("global_batch,micro,world", [(8, 2, 2), (12, 3, 2), (16, 2, 4), (6, 6, 1)])
def test_rank_slice_is_neox_sampler(global_batch, micro, world):
    for rank in range(world):
        want = neox_rows(global_batch, micro, world, rank)
        got = [list(range(global_batch))[rank_slice(global_batch, micro, world, m, rank)]
               for m in range(global_batch // (micro * world))]
        assert got == want


class _Order:
    def __init__(self, tokens):
        self.tokens = tokens

    def batch(self, step, batch_size):
        return self.tokens[step * batch_size:(step + 1) * batch_size]


def test_trainer_rank_reads_its_rows(tmp_path):
    """The trainer of rank 1 of 2 feeds its loss exactly the sampler's rows for that rank."""
    import torch

    from pythia.train.optim import DynamicLossScaler

    tokens = np.arange(8 * 17, dtype=np.int64).reshape(8, 17) % 300
    spec = SuiteSpec.from_dict(tiny_spec({"train": "unused", "valid": None}, tmp_path / "run",
                                         train={"micro_batch": 2, "global_batch": 8, "iters": 1}))
    member = spec.resolve_members(384)[0]
    ctx = DistContext()
    ctx.rank, ctx.world_size = 1, 2
    t = Trainer(MemberRun(member=member, spec=spec, member_dir=tmp_path / "m", order=_Order(tokens), ctx=ctx))
    weight = torch.zeros(1, requires_grad=True)
    t.model = torch.nn.Linear(1, 1)  # only its train() is used: the loss below is recorded, not computed
    t.optimizer = torch.optim.SGD([weight], lr=0.0)
    t.scaler = DynamicLossScaler(enabled=False)
    seen = []

    def record(rows):
        seen.append(rows[:, 0].tolist())
        return (weight * 0).sum()

    t._loss = record
    t.forward_backward(tokens)
    assert seen == [[int(tokens[i, 0]) for i in rows] for rows in neox_rows(8, 2, 2, 1)]
