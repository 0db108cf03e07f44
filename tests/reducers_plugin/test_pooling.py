"""The trivial baselines against per-frame / per-cell loops written from their definitions, and their budgets."""

from __future__ import annotations

import math

import pytest
import torch

from reducers_plugin.layout import VideoLayout, apportion, budget_options, target_count
from reducers_plugin.pooling import FrameSubsample, Pool2D, Pool3D, RandomDrop, closest_grid, per_frame_counts


def _bins(size: int, out: int) -> list[tuple[int, int]]:
    """Adaptive pooling's input range of each output cell."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _pool_frame_reference(frame: torch.Tensor, k: int) -> torch.Tensor:
    """``(s*s, D)`` -> ``(k, D)``: block means on the smallest h' x w' >= k grid, then 1-D means to k."""
    side = math.isqrt(frame.shape[0])
    rows = math.ceil(math.sqrt(k))
    cols = math.ceil(k / rows)
    grid = frame.view(side, side, -1)
    cells = [grid[r0:r1, c0:c1].mean(dim=(0, 1)) for r0, r1 in _bins(side, rows) for c0, c1 in _bins(side, cols)]
    return torch.stack([torch.stack(cells[a:b]).mean(0) for a, b in _bins(len(cells), k)])


def test_layout_is_read_from_the_count_and_split():
    assert VideoLayout.read(4 * 196 + 1, 4, "x") == VideoLayout(4, 14, "one_token")
    assert VideoLayout.read(4 * 196, 4, "x") == VideoLayout(4, 14, "no_token")
    assert VideoLayout.read(4 * 197, 4, "x") == VideoLayout(4, 14, "frame")
    assert VideoLayout.read(4 * 13 * 14, 4, "x") == VideoLayout(4, 13, "grid")
    assert VideoLayout.read(17, 1, "x") == VideoLayout(1, 4, "one_token")
    with pytest.raises(ValueError, match="x: a video item of 30 tokens over 4 frames"):
        VideoLayout.read(30, 4, "x")
    # LLaVA-Video's grid: 2 frames of 3 rows of 3 tokens + a newline (-1) per row
    visual = torch.arange(18.0).view(2, 3, 3)
    tokens = torch.cat([visual, torch.full((2, 3, 1), -1.0)], dim=2).reshape(-1, 1)
    layout = VideoLayout.read(24, 2, "x")
    grid, newline = layout.split(tokens)
    assert torch.equal(grid.flatten(), torch.arange(18.0)) and newline.tolist() == [[-1.0]]
    assert layout.newlines == 1 and VideoLayout(2, 3, "no_token").newlines == 0


def test_budget_arithmetic():
    assert target_count(6272, 680, None) == 680 and target_count(100, 500, None) == 100
    assert target_count(6272, None, 0.25) == 1568 and target_count(3, None, 0.01) == 1
    assert budget_options(None, None, 0.25) == (None, 0.25)
    for bad in ((5, 0.5), (0, None), (None, 0.0), (None, 1.5), (True, None)):
        with pytest.raises(ValueError):
            budget_options(*bad, 0.25)
    counts = per_frame_counts(680, 32)
    assert counts.sum() == 680 and set(counts.tolist()) == {21, 22}
    shares = torch.tensor([0.4, 5.7, 9.9, 2.5, 1.5])
    got = apportion(shares, 18, 1, 8)
    assert got.tolist() == [1, 6, 8, 2, 1] and got.sum() == 18  # floors 1,5,8,2,1 = 17; +1 to 5.7
    # 17 -> 13: one off each entry above the floor, smallest remainder first (2, 5, 8), then once more (4)
    assert apportion(shares, 13, 1, 8).tolist() == [1, 3, 7, 1, 1]


@pytest.mark.parametrize("budget", [5, 23, 48])  # below, around and at the tiny video's 4 x 16 tokens
def test_pool2d_equals_block_means_per_frame(budget):
    grid = torch.randn(4, 16, 6, generator=torch.Generator().manual_seed(budget))
    out = Pool2D(budget=budget).reduce_video(grid)
    counts = per_frame_counts(budget, 4)
    reference = torch.cat([_pool_frame_reference(grid[t], int(k)) for t, k in enumerate(counts)])
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_pool3d_equals_block_means_and_picks_the_closest_grid():
    grid = torch.randn(5, 49, 3, generator=torch.Generator().manual_seed(0))
    out = Pool3D(grid=[2, 3, 2]).reduce_video(grid)
    volume = grid.view(5, 7, 7, 3)
    reference = torch.stack([volume[a:b, c:d, e:f].mean(dim=(0, 1, 2))
                             for a, b in _bins(5, 2) for c, d in _bins(7, 3) for e, f in _bins(7, 2)])
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    # exact where a grid exists (17x8x5 = 680, 41x8x8 = 2624), else the most cells below (1328 = 16 * 83)
    assert closest_grid(32, 14, 680) == (17, 8, 5) and closest_grid(128, 14, 2624) == (41, 8, 8)
    assert math.prod(closest_grid(64, 14, 1328)) == 1326
    with pytest.raises(ValueError, match="larger than the video"):
        Pool3D(grid=[9, 2, 2]).count(8, 196)


def test_frame_subsample_keeps_uniform_whole_frames():
    grid = torch.randn(32, 196, 2)
    reducer = FrameSubsample(budget=680)  # 3 frames of 196
    out = reducer.reduce_video(grid)
    assert out.shape[0] == reducer.count(32, 196) == 588
    torch.testing.assert_close(out, grid[[5, 16, 26]].flatten(0, 1))


def test_random_drop_is_a_seeded_sorted_subset():
    grid = torch.arange(4 * 16, dtype=torch.float32).view(4, 16, 1)
    first = RandomDrop(budget=20, seed=1).reduce_video(grid).flatten()
    assert torch.equal(first, RandomDrop(budget=20, seed=1).reduce_video(grid).flatten())
    assert not torch.equal(first, RandomDrop(budget=20, seed=2).reduce_video(grid).flatten())
    assert first.numel() == 20 and bool((first[1:] > first[:-1]).all())
