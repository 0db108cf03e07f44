"""The Hungarian assignment against a brute-force search, and the per-item matching of a padded batch
against the prototype's ragged ``batch_bipartite_matching`` (re-stated here)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from disco_plugin.matching import linear_assignment, match_instances


@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (4, 4), (2, 6), (5, 5)])
def test_assignment_is_optimal_and_one_to_one(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        cost = rng.normal(size=shape)
        if trial % 4 == 0:
            cost = np.round(cost)  # ties
        cols = linear_assignment(cost)
        assert len(set(cols.tolist())) == shape[0]
        best = min(sum(cost[i, p[i]] for i in range(shape[0]))
                   for p in itertools.permutations(range(shape[1]), shape[0]))
        assert cost[np.arange(shape[0]), cols].sum() == pytest.approx(best, abs=1e-12)


def test_more_rows_than_columns_is_refused():
    with pytest.raises(ValueError, match="3 rows but only 2 columns"):
        linear_assignment(np.zeros((3, 2)))


def _prototype_matching(visual, text, visual_nums, text_nums):
    """The prototype's loop: one similarity over the concatenated batch, then a per-sample assignment of
    groups (rows) to texts (columns), returned as ``(global group index, global text index)`` pairs."""
    sim = visual @ text.T
    cost = -sim.numpy()
    pairs, v0, t0 = [], 0, 0
    for nv, nt in zip(visual_nums, text_nums):
        block = cost[v0:v0 + nv, t0:t0 + nt]
        text_for_row = linear_assignment(block.T)  # rows: texts; the same optimum as scipy on block
        pairs += [(v0 + int(g), t0 + j) for j, g in enumerate(text_for_row)]
        v0, t0 = v0 + nv, t0 + nt
    return pairs


def test_padded_matching_equals_the_ragged_loop():
    torch.manual_seed(0)
    groups, counts = 4, [3, 0, 4, 1]
    u = torch.nn.functional.normalize(torch.randn(len(counts), groups, 8), dim=-1)
    texts = [torch.nn.functional.normalize(torch.randn(c, 8), dim=-1) for c in counts]
    width = max(counts)
    e = torch.zeros(len(counts), width, 8)
    mask = torch.zeros(len(counts), width, dtype=torch.bool)
    for i, t in enumerate(texts):
        e[i, : len(t)], mask[i, : len(t)] = t, True
    assignment = match_instances(u @ e.transpose(1, 2), mask)
    ours = [(i * groups + int(assignment[i, j]), sum(counts[:i]) + j) for i in range(len(counts)) for j in range(counts[i])]
    ref = _prototype_matching(u.flatten(0, 1), torch.cat(texts), [groups] * len(counts), counts)
    assert ours == ref
    assert assignment[1].tolist() == [0] * width  # an item without instances: padding only
