"""The probe's pooling: each (4,3,3) group's mean over the cells it really holds."""

from __future__ import annotations

import torch

from benchmarks.demo_probe import group_means


def test_group_means_match_a_loop_and_ignore_padding():
    torch.manual_seed(0)
    features = torch.randn(8, 7, 7, 5)  # 8 frames on the tiny tower's 7x7 grid: 2 x 3 x 3 groups
    pooled = group_means(features).reshape(2, 3, 3, 5)
    for t in range(2):
        for h in range(3):
            for w in range(3):
                cells = features[4 * t:4 * t + 4, 3 * h:3 * h + 3, 3 * w:3 * w + 3]  # the last group is 4x1x1 cells
                torch.testing.assert_close(pooled[t, h, w], cells.reshape(-1, 5).mean(0))
    # a lone cell in the corner group is that group's whole mean, not diluted by padding
    assert torch.allclose(pooled[0, 2, 2], features[:4, 6, 6].mean(0))
