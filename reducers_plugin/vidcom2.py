"""VidCom2 (Liu et al., EMNLP 2025): frame-adaptive selection of the tokens least like their video and frame.

On one video's projected, pooled tokens ``(T, n, D)`` (public code: ``xuyang-liu16/VidCom2``,
``token_compressor/vidcom2/vidcom2.py``, OneVision ``one_token`` branch):

1. keep the half of the channels with the lowest variance over all tokens; L2-normalise each token;
2. ``s_v(x) = sum_a exp(-|x - c_v|^2 / 2a)`` against the video mean ``c_v``, ``s_f`` likewise against the
   token's frame mean, over ``a in {1/8, 1/4, 1/2, 1, 2}``;
3. frame uniqueness ``u_t = -mean_t s_v``; ``p = softmax((u - max u) / 0.01)``;
   ``scale_t = min(R (1 + p_t - mean p), 1)``;
4. frame t keeps the ``k_t`` tokens of smallest ``s_v + s_f``, in original order.

``k_t = max(1, round(n * scale_t))`` in the original (``exact_budget=False``), which lands within about
T/2 of ``R * M``. With ``exact_budget=True`` (default; adapted) the ``k_t`` are rounded by largest
remainder so that they sum to exactly N (each in ``[1, n]``). ``R`` is N / M from ``budget`` / ``ratio``
(the original's ``R_RATIO``, default 0.25).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import VideoReducer
from .layout import apportion, budget_options

ALPHAS = (0.125, 0.25, 0.5, 1.0, 2.0)
TEMPERATURE = 0.01


def gaussian_similarity(x: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """``sum_a exp(-|x - c|^2 / 2a)`` over the last axis."""
    dist = (x - center).pow(2).sum(dim=-1)
    return sum(torch.exp(-dist / (2 * a)) for a in ALPHAS)


def vidcom2_scores(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, n, D)`` -> ``(s_v, s_f)``, each ``(T, n)``."""
    flat = grid.flatten(0, 1).float()
    channels = flat.var(dim=0, unbiased=False).topk(flat.shape[-1] // 2, largest=False).indices
    frames = F.normalize(flat[:, channels], dim=-1).view(grid.shape[0], grid.shape[1], -1)
    video_center = frames.mean(dim=(0, 1), keepdim=True)
    frame_center = frames.mean(dim=1, keepdim=True)
    return gaussian_similarity(frames, video_center), gaussian_similarity(frames, frame_center)


def frame_scales(video_score: torch.Tensor, base: float) -> torch.Tensor:
    """``(T, n)`` video scores -> ``(T,)`` per-frame retention ``scale_t``."""
    uniqueness = -video_score.mean(dim=-1)
    probs = torch.softmax((uniqueness - uniqueness.max()) / TEMPERATURE, dim=0)
    return (base * (1 + probs - probs.mean())).clamp(max=1.0)


class VidCom2(VideoReducer):
    """Options: ``budget`` / ``ratio`` (R = N / M), ``exact_budget`` (largest-remainder ``k_t``), ``at_floor``
    (floor: one token per frame)."""

    def __init__(self, budget: int | None = None, ratio: float | None = None, exact_budget: bool = True,
                 at_floor: bool = True):
        super().__init__()
        self.budget, self.ratio = budget_options(budget, ratio, 0.25)
        self.exact_budget, self.at_floor = exact_budget, at_floor

    def _total(self, frames: int, per_frame: int) -> int:
        total = self.target(frames, per_frame)
        return total if total >= frames else self.floor(total, frames, f"one per frame, {frames} frames")

    def count(self, frames: int, per_frame: int) -> int:
        if self.exact_budget:
            return self._total(frames, per_frame)
        raise ValueError("vidcom2 with exact_budget=False keeps a data-dependent count (within about T/2 of the "
                         "budget), which cannot be announced before the tokens are seen; use exact_budget=True")

    def frame_counts(self, video_score: torch.Tensor) -> torch.Tensor:
        """``(T,)`` tokens kept per frame."""
        frames, per_frame = video_score.shape
        total = self._total(frames, per_frame)
        scales = frame_scales(video_score, total / (frames * per_frame))
        if self.exact_budget:
            return apportion((scales * per_frame).double(), total, 1, per_frame)
        return (scales * per_frame).round().long().clamp(min=1)

    def kept_indices(self, grid: torch.Tensor) -> torch.Tensor:
        """Flat indices into ``grid.flatten(0, 1)`` of the kept tokens, in original order."""
        video_score, frame_score = vidcom2_scores(grid)
        counts = self.frame_counts(video_score).to(grid.device)
        per_frame = grid.shape[1]
        # rank of each token inside its frame by ascending s_v + s_f; keep ranks below the frame's count
        order = (video_score + frame_score).argsort(dim=-1, stable=True)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(per_frame, device=grid.device).expand_as(order))
        return (ranks < counts[:, None]).flatten().nonzero().flatten()

    def reduce_video(self, grid: torch.Tensor) -> torch.Tensor:
        return grid.flatten(0, 1)[self.kept_indices(grid)]

