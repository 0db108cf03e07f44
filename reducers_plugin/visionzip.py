"""VisionZip (Yang et al., CVPR 2025), the LLaVA-OneVision port: dominant + contextual tokens per frame.

Public code: ``cokeshao/HoliTom`` ``visionzip/llava_arch.py`` (the port HoliTom's paper evaluates) over
``dvlab-research/VisionZip``. SigLIP has no CLS token, so the score of a patch is the attention it receives
in the tower's last kept layer (averaged over heads and queries) instead of the CLS row, and the merge metric
is that layer's keys averaged over heads (:mod:`reducers_plugin.tower_attention`). Both are pooled per frame
with OneVision's own operator (``mm_spatial_pool_mode`` / ``_stride``) to the token grid. Per frame, with S
tokens to keep, ``d = int(S * dominant_ratio)`` and ``c = S - d``:

1. the ``d`` tokens of highest score are dominant, emitted in raster order;
2. of the others (raster order), ``c`` targets at stride ``max(1, (n - d) // c)``; every remaining token
   joins its most key-similar target;
3. a contextual token is its target **plus** the mean of its members (a sum, as in VisionZip);
4. frame output: ``[dominant ; contextual]``.

Budget: ``budget`` / ``ratio`` give N; S = N // T per frame in the port (``exact_budget=False``, T*S tokens), or
``floor(N/T)`` / ``ceil(N/T)`` frame by frame so that the total is exactly N (``exact_budget=True``, default;
adapted). Defaults: ``dominant_ratio = 54/64`` (the port's ``DOMINANT_RATIO``), 25 % kept. Needs a SigLIP-style
tower (recomputed attention; the tower itself keeps SDPA).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from llava.model.llava_arch import pool_stride, spatial_pool

from .base import VideoReducer, fill_by_count
from .layout import budget_options
from .pooling import per_frame_counts
from .tower_attention import TowerAttention


def visionzip_frames(hidden: torch.Tensor, score: torch.Tensor, metric: torch.Tensor, dominant: int,
                     contextual: int) -> torch.Tensor:
    """``hidden (G, n, D)``, ``score (G, n)``, ``metric (G, n, d_head)`` -> ``(G, dominant + contextual, D)``."""
    frames, tokens, dim = hidden.shape
    chosen = torch.zeros(frames, tokens, dtype=torch.bool, device=hidden.device)
    chosen.scatter_(1, score.topk(dominant, dim=1).indices, True)
    dominant_tokens = hidden[chosen].view(frames, dominant, dim)  # raster order
    rest = tokens - dominant
    hidden_rest = hidden[~chosen].view(frames, rest, dim)
    unit = F.normalize(metric[~chosen].view(frames, rest, -1).float(), dim=-1)
    targets = torch.arange(0, rest, max(1, rest // contextual), device=hidden.device)[:contextual]
    others = torch.ones(rest, dtype=torch.bool, device=hidden.device)
    others[targets] = False
    similarity = unit[:, others] @ unit[:, targets].transpose(1, 2)  # (G, rest - c, c)
    assign = F.one_hot(similarity.argmax(dim=2), contextual).to(hidden.dtype)
    members = assign.sum(dim=1).clamp(min=1)[..., None]
    merged = assign.transpose(1, 2) @ hidden_rest[:, others] / members
    return torch.cat([dominant_tokens, hidden_rest[:, targets] + merged], dim=1)


class VisionZip(VideoReducer):
    """Options: ``budget`` / ``ratio``, ``dominant_ratio``, ``exact_budget``, ``at_floor`` (floor: one token per
    frame)."""

    def __init__(self, budget: int | None = None, ratio: float | None = None, dominant_ratio: float = 54 / 64,
                 exact_budget: bool = True, at_floor: bool = True):
        super().__init__()
        self.budget, self.ratio = budget_options(budget, ratio, 0.25)
        if not 0 <= dominant_ratio < 1:
            raise ValueError(f"dominant_ratio must be in [0, 1) (at least one contextual token), got "
                             f"{dominant_ratio!r}")
        self.dominant_ratio, self.exact_budget, self.at_floor = dominant_ratio, exact_budget, at_floor
        self._hook: TowerAttention | None = None
        self._model = None

    def attach(self, model) -> None:
        self._hook = TowerAttention(model, "visionzip")
        self._model = weakref.ref(model)

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
        self._hook = self._model = None

    def frame_counts(self, frames: int, per_frame: int) -> torch.Tensor:
        """``(T,)`` tokens kept per frame."""
        total = self.target(frames, per_frame)
        if total < frames:
            total = self.floor(total, frames, f"one per frame, {frames} frames")
        if self.exact_budget:
            return per_frame_counts(total, frames)
        return torch.full((frames,), total // frames)

    def count(self, frames: int, per_frame: int) -> int:
        return int(self.frame_counts(frames, per_frame).sum())

    def reduce_video(self, grid: torch.Tensor, score: torch.Tensor, metric: torch.Tensor) -> torch.Tensor:
        """``grid (T, n, D)`` with pooled ``score (T, n)`` and ``metric (T, n, d_head)`` -> ``(count, D)``."""
        counts = self.frame_counts(grid.shape[0], grid.shape[1])

        def group(chosen: torch.Tensor, k: int) -> torch.Tensor:
            dominant = int(k * self.dominant_ratio)
            return visionzip_frames(grid[chosen], score[chosen], metric[chosen], dominant, k - dominant)

        return fill_by_count(counts, grid, group)

    def batch_signals(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention received ``(N, n)`` and keys ``(N, n, d_head)`` of the tower pass, pooled like the tokens."""
        model = self._model() if self._model is not None else None
        if self._hook is None or model is None:
            raise RuntimeError("visionzip: not attached to a model (select it with set_token_reducer)")
        received, keys = self._hook.take(batch.features.shape[0], "visionzip")
        stride, mode = pool_stride(model.config), getattr(model.config, "mm_spatial_pool_mode", "bilinear")
        return spatial_pool(received[..., None], stride, mode)[..., 0], spatial_pool(keys, stride, mode)
