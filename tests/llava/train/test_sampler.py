"""LLaVA's length-grouped sampler: a permutation, modality-pure megabatches, seeded per epoch."""

from __future__ import annotations

import random

from llava.train.llava_trainer import LengthGroupedSampler


def lengths(n=103, seed=0):
    rng = random.Random(seed)
    return [rng.randint(5, 300) * (1 if rng.random() < 0.7 else -1) for _ in range(n)]


def test_every_index_once_and_seeded_per_epoch():
    sampler = LengthGroupedSampler(batch_size=4, world_size=2, lengths=lengths(), seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(103)) and list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(103))


def test_modality_grouping_keeps_megabatches_pure_and_balances_ranks():
    values = lengths()
    sampler = LengthGroupedSampler(batch_size=4, world_size=2, lengths=values, group_by_modality=True)
    order = list(sampler)
    assert sorted(order) == list(range(103))
    size = 8
    full = order[: (len(order) // size) * size]
    mixed = 0
    for start in range(0, len(full), size):
        signs = {values[i] > 0 for i in full[start:start + size]}
        mixed += len(signs) > 1
    assert mixed <= 1  # only around the remainder
    # within a megabatch each rank's chunk holds long and short samples, not all the long ones
    megabatch = full[:size]
    rank0, rank1 = megabatch[:4], megabatch[4:]
    total0, total1 = sum(abs(values[i]) for i in rank0), sum(abs(values[i]) for i in rank1)
    assert abs(total0 - total1) <= max(abs(values[i]) for i in megabatch)
