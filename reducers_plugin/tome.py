"""ToMe (Bolya et al., ICLR 2023) bipartite soft matching, applied to a video's pooled tokens.

Re-implemented from the paper (its code is CC BY-NC). One round on ``n`` tokens with ``r`` merges:

1. split the tokens alternately into A (even index) and B (odd index);
2. every a in A finds its most cosine-similar b in B (the metric is the tokens themselves, as there are
   no ViT keys after the projector);
3. the ``r`` A tokens with the most similar partners merge into them by size-weighted average (sizes
   tracked across rounds); the other A tokens stay;
4. the result is ``[unmerged A in descending-similarity order ; B]``.

Rounds repeat with ``r = min(n // 2, n - N)`` until N tokens remain (each round at most halves), so the
count is exactly N. Applied globally over the ``T * s * s`` tokens of the video (spatio-temporal).
``order="position"`` (default) sorts the result by each merged token's earliest original index, so the
LLM sees frame order; ``order="tome"`` keeps ToMe's own output order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import VideoReducer
from .layout import budget_options

ORDERS = ("position", "tome")


def bipartite_merge(x: torch.Tensor, size: torch.Tensor, first: torch.Tensor, r: int):
    """One ToMe round on ``x (n, D)`` with sizes ``size (n,)`` and earliest indices ``first (n,)``, ``r`` merges.

    Returns the three tensors for the ``n - r`` tokens left, in ToMe's order ``[unmerged A ; B]``.
    """
    metric = F.normalize(x.float(), dim=-1)
    scores = metric[0::2] @ metric[1::2].T  # (|A|, |B|)
    best, partner = scores.max(dim=-1)
    edges = best.argsort(descending=True, stable=True)
    merged, unmerged = edges[:r], edges[r:]
    dst = partner[merged]
    weighted = (x * size[:, None]).float()
    a_x, b_x = weighted[0::2], weighted[1::2]
    a_size, b_size = size[0::2], size[1::2]
    a_first, b_first = first[0::2], first[1::2]
    b_x = b_x.index_add(0, dst, a_x[merged])
    b_size = b_size.index_add(0, dst, a_size[merged])
    b_first = b_first.scatter_reduce(0, dst, a_first[merged], reduce="amin")
    new_size = torch.cat([a_size[unmerged], b_size])
    new_x = torch.cat([a_x[unmerged], b_x]) / new_size[:, None]
    return new_x.to(x.dtype), new_size, torch.cat([a_first[unmerged], b_first])


class ToMe(VideoReducer):
    """Token merging to exactly N tokens. Options: ``budget`` / ``ratio``, ``order`` (see module docstring)."""

    def __init__(self, budget: int | None = None, ratio: float | None = None, order: str = "position"):
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        self.budget, self.ratio = budget_options(budget, ratio, 0.25)
        self.order = order

    def count(self, frames: int, per_frame: int) -> int:
        return self.target(frames, per_frame)

    def merge(self, x: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(n, D)`` -> merged ``(N, D)``, sizes ``(N,)``, earliest original index ``(N,)`` in output order."""
        size = torch.ones(x.shape[0], device=x.device)
        first = torch.arange(x.shape[0], device=x.device)
        while x.shape[0] > total:
            x, size, first = bipartite_merge(x, size, first, min(x.shape[0] // 2, x.shape[0] - total))
        if self.order == "position":
            order = first.argsort()
            x, size, first = x[order], size[order], first[order]
        return x, size, first

    def reduce_video(self, grid: torch.Tensor) -> torch.Tensor:
        return self.merge(grid.flatten(0, 1), self.count(grid.shape[0], grid.shape[1]))[0]
