"""Trivial baselines: uniform 2D pooling, 3D (t, h, w) pooling, uniform frame subsampling, random drop.

All act on one video's pooled tokens ``(T, s*s, D)`` (OneVision: s = 14 after its own 2x2 pooling)
and emit compact, raster-ordered tokens.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from .base import VideoReducer, fill_by_count
from .layout import budget_options


def per_frame_counts(total: int, frames: int) -> torch.Tensor:
    """``(T,)`` counts summing to ``total``, spread evenly over time (frame t gets
    ``floor((t+1) N / T) - floor(t N / T)``, i.e. ``floor(N/T)`` or ``ceil(N/T)``)."""
    edges = torch.arange(frames + 1) * total // frames
    return edges[1:] - edges[:-1]


def pool_frames(grid: torch.Tensor, k: int) -> torch.Tensor:
    """``(G, s*s, D)`` -> ``(G, k, D)``: adaptive average pooling to the smallest ``h' x w'`` grid with
    ``h' w' >= k`` cells (``h' = ceil(sqrt(k))``), then adaptive 1-D pooling of its raster order to ``k``."""
    frames, tokens, dim = grid.shape
    side = math.isqrt(tokens)
    rows = math.isqrt(k - 1) + 1 if k > 1 else 1
    cols = -(-k // rows)
    maps = grid.transpose(1, 2).reshape(frames, dim, side, side)
    pooled = F.adaptive_avg_pool2d(maps, (rows, cols)).flatten(2)  # (G, D, rows*cols)
    if rows * cols != k:
        pooled = F.adaptive_avg_pool1d(pooled, k)
    return pooled.transpose(1, 2)


class Pool2D(VideoReducer):
    """Each frame average-pooled to ``n_t`` tokens, ``n_t`` in ``{floor(N/T), ceil(N/T)}``: exactly N.

    Options: ``budget`` (tokens per video) or ``ratio`` (kept fraction); ``at_floor`` (floor: one token
    per frame).
    """

    def __init__(self, budget: int | None = None, ratio: float | None = None, at_floor: bool = True):
        super().__init__()
        self.budget, self.ratio = budget_options(budget, ratio, 0.25)
        self.at_floor = at_floor

    def count(self, frames: int, per_frame: int) -> int:
        total = self.target(frames, per_frame)
        return total if total >= frames else self.floor(total, frames, f"one per frame, {frames} frames")

    def reduce_video(self, grid: torch.Tensor) -> torch.Tensor:
        frames, per_frame, _ = grid.shape
        counts = per_frame_counts(self.count(frames, per_frame), frames)
        return fill_by_count(counts, grid, lambda chosen, k: pool_frames(grid[chosen], k))


@lru_cache(maxsize=256)
def closest_grid(frames: int, side: int, total: int) -> tuple[int, int, int]:
    """The ``(t', h', w')`` with ``t' <= T``, ``h', w' <= s`` whose product is the largest ``<= total``;
    ties prefer the squarer grid, then more frames, then more rows."""
    best, key = (1, 1, 1), None
    for t in range(1, frames + 1):
        for h in range(1, side + 1):
            w = min(side, total // (t * h))
            if w < 1:
                break
            candidate = (t * h * w, -abs(h - w), t, h)
            if key is None or candidate > key:
                best, key = (t, h, w), candidate
    return best


class Pool3D(VideoReducer):
    """Adaptive 3D average pooling of ``(T, s, s)`` to ``grid = (t', h', w')`` (HICom's local branch without
    attention at ``(8, 9, 9)``), flattened in raster order.

    Options: ``grid``, or ``budget`` / ``ratio``, which pick the grid of the most cells ``<= N``
    (:func:`closest_grid`): the closest achievable count, reported by ``num_output_tokens``.
    """

    def __init__(self, grid: list[int] | None = None, budget: int | None = None, ratio: float | None = None):
        super().__init__()
        if grid is not None:
            if budget is not None or ratio is not None:
                raise ValueError(f"set grid or budget/ratio, not both (grid={grid!r}, budget={budget!r}, "
                                 f"ratio={ratio!r})")
            if len(grid) != 3 or not all(isinstance(g, int) and g >= 1 for g in grid):
                raise ValueError(f"grid must be three positive integers (t, h, w), got {grid!r}")
            grid = list(grid)
        else:
            budget, ratio = budget_options(budget, ratio, 0.25)
        self.grid, self.budget, self.ratio = grid, budget, ratio

    def out_grid(self, frames: int, side: int) -> tuple[int, int, int]:
        if self.grid is not None:
            t, h, w = self.grid
            if t > frames or h > side or w > side:
                raise ValueError(f"pool3d: grid {self.grid} is larger than the video's ({frames}, {side}, {side})")
            return t, h, w
        return closest_grid(frames, side, self.target(frames, side * side))

    def count(self, frames: int, per_frame: int) -> int:
        return math.prod(self.out_grid(frames, math.isqrt(per_frame)))

    def reduce_video(self, grid: torch.Tensor) -> torch.Tensor:
        frames, per_frame, dim = grid.shape
        side = math.isqrt(per_frame)
        volume = grid.reshape(frames, side, side, dim).permute(3, 0, 1, 2)[None]
        pooled = F.adaptive_avg_pool3d(volume, self.out_grid(frames, side))
        return pooled[0].flatten(1).transpose(0, 1)


def uniform_frames(frames: int, keep: int) -> torch.Tensor:
    """Indices of ``keep`` of ``frames`` frames, the centres of ``keep`` equal segments."""
    return ((2 * torch.arange(keep) + 1) * frames) // (2 * keep)


class FrameSubsample(VideoReducer):
    """Keeps ``floor(N / s^2)`` whole frames, uniformly spaced (:func:`uniform_frames`).

    Options: ``budget`` / ``ratio``; ``at_floor`` (floor: the middle frame).
    """

    def __init__(self, budget: int | None = None, ratio: float | None = None, at_floor: bool = True):
        super().__init__()
        self.budget, self.ratio = budget_options(budget, ratio, 0.25)
        self.at_floor = at_floor

    def kept_frames(self, frames: int, per_frame: int) -> int:
        total = self.target(frames, per_frame)
        return total // per_frame if total >= per_frame else self.floor(total, per_frame, "one frame") // per_frame

    def count(self, frames: int, per_frame: int) -> int:
        return self.kept_frames(frames, per_frame) * per_frame

    def reduce_video(self, grid: torch.Tensor) -> torch.Tensor:
        frames, per_frame, _ = grid.shape
        index = uniform_frames(frames, self.kept_frames(frames, per_frame)).to(grid.device)
        return grid[index].flatten(0, 1)


class RandomDrop(VideoReducer):
    """A uniform random subset of exactly N tokens, in original order; ``seed`` fixes it (the same subset for
    every video of the same size)."""

    def __init__(self, budget: int | None = None, ratio: float | None = None, seed: int = 0):
        super().__init__()
        self.budget, self.ratio = budget_options(budget, ratio, 0.25)
        self.seed = seed

    def count(self, frames: int, per_frame: int) -> int:
        return self.target(frames, per_frame)

    def kept_indices(self, frames: int, per_frame: int) -> torch.Tensor:
        total = frames * per_frame
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(total, generator=generator)[: self.count(frames, per_frame)].sort().values

    def reduce_video(self, grid: torch.Tensor) -> torch.Tensor:
        index = self.kept_indices(grid.shape[0], grid.shape[1]).to(grid.device)
        return grid.flatten(0, 1)[index]
