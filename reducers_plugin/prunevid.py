"""PruneVid (Huang et al., ACL 2025), pre-LLM stage: segment, average static tokens over time, cluster.

On one video's projected, pooled tokens ``(T, n, D)`` (public code: ``Visual-AI/PruneVid``,
``models/pllava/modeling_pllava.py``: ``cluster_dpc_knn``, ``refine_clusters``, ``merge_frames_dynamic``):

1. **Segments.** DPC-kNN (below) clusters the frame means into ``int(T * temporal_segment_ratio)``
   clusters; a cluster keeps its longest runs of consecutive frames (all of them on a tie, none if its
   longest run is one frame) and every other run joins the longer of its two neighbouring runs (the
   left one on a tie). The segments are the runs of equal labels that remain.
2. **Static tokens.** In a segment of W frames, a spatial position whose mean cosine similarity over the
   ``W (W - 1)`` ordered pairs of distinct frames exceeds ``tau`` is static: its W tokens are averaged
   into one. The other positions stay dynamic, frame by frame.
3. **Spatial merging.** Each group (a segment's static tokens; each frame's dynamic tokens) of more than
   ``min_group`` tokens is DPC-kNN-clustered into ``int(m * cluster_ratio)`` clusters and replaced by the
   cluster means, in the order of the centres' scores; smaller groups pass unchanged.
4. Output: segment after segment, ``[static ; dynamic of frame 1 ; dynamic of frame 2 ; ...]``.

**DPC-kNN** over m tokens of width C: ``d_ij = |x_i - x_j| / sqrt(C)``; density
``rho_i = exp(-mean of the k smallest d_ij^2)`` (itself included) plus ``1e-6`` uniform noise; ``delta_i``
the distance to the nearest denser token (the largest distance if none); the centres are the top
``rho * delta``; every token joins its nearest centre, a centre itself.

The count of steps 1-4 depends on the video (how many positions are static), so with
``exact_budget=False`` (the original) :meth:`PruneVid.count` raises. ``exact_budget=True`` (default;
adapted) keeps steps 1-2 and 4 and sets the cluster counts of step 3 so that the video keeps exactly N
tokens (``budget`` / ``ratio``): each non-empty group gets clusters in proportion to its size (largest
remainder, at least one, at most its size; a group given its size passes unchanged). If the segments and
static averaging leave fewer than N tokens, the static positions of lowest similarity turn dynamic until
at least N remain. The floor is ``T + T // 2`` tokens: every segment has at least two frames, so there
are at most that many groups.

Other named differences: the noise is drawn from a generator seeded by ``seed`` (the original's is
unseeded); the temporal k is ``min(neighbours, T)`` and the temporal cluster count at least one (the
original crashes for T < 7 or T < 4); a one-frame segment (T = 1 only) has no static tokens (the original
divides by zero). PruneVid's second stage, attention-guided pruning inside the LLM at layer 10 with its KV
caches, is not implemented here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import VideoReducer
from .layout import apportion, budget_options

DENSITY_NOISE = 1e-6


def dpc_knn(x: torch.Tensor, clusters: int, neighbours: int, generator: torch.Generator) -> torch.Tensor:
    """DPC-kNN cluster labels of G groups of m tokens: ``(G, m, C)`` -> ``(G, m)`` in ``[0, clusters)``.

    Label j is the centre of j-th highest score; the noise is drawn as ``(G, m)`` from ``generator``.
    """
    x = x.float()
    groups, m, width = x.shape
    dist = torch.cdist(x, x) / math.sqrt(width)
    nearest = dist.topk(min(neighbours, m), dim=-1, largest=False).values
    density = (-(nearest**2).mean(dim=-1)).exp()
    density = density + torch.rand((groups, m), generator=generator).to(density.device) * DENSITY_NOISE
    denser = density[:, None, :] > density[:, :, None]  # [g, i, j]: j is denser than i
    far = dist.flatten(1).max(dim=-1).values[:, None, None]
    score = torch.where(denser, dist, far).min(dim=-1).values * density
    centres = score.topk(clusters, dim=-1).indices  # (G, k)
    labels = dist.gather(1, centres[:, :, None].expand(-1, -1, m)).argmin(dim=1)
    return labels.scatter(1, centres, torch.arange(clusters, device=x.device).expand(groups, -1))


def cluster_means(x: torch.Tensor, labels: torch.Tensor, clusters: int) -> torch.Tensor:
    """``(G, m, C)`` tokens and ``(G, m)`` labels -> ``(G, clusters, C)`` means (every cluster has its centre)."""
    onehot = F.one_hot(labels, clusters).to(x.dtype)  # (G, m, k)
    return onehot.transpose(1, 2) @ x / onehot.sum(dim=1)[..., None]


def contiguous_segments(labels: list[int]) -> list[int]:
    """Frame cluster labels -> segment lengths (summing to T), as in step 1 of the module docstring."""
    frames = len(labels)
    runs = []  # [label, start, length]
    for t, label in enumerate(labels):
        if runs and runs[-1][0] == label:
            runs[-1][2] += 1
        else:
            runs.append([label, t, 1])
    longest: dict[int, int] = {}
    for label, _, length in runs:
        longest[label] = max(longest.get(label, 0), length)
    refined = list(labels)
    for label, start, length in runs:
        if length < longest[label] or longest[label] == 1:
            refined[start:start + length] = [-1] * length

    def run_from(t: int, step: int) -> int:
        """Frames from t (inclusive) going ``step`` that share t's current label."""
        count = 0
        while 0 <= t + step * count < frames and refined[t + step * count] == refined[t]:
            count += 1
        return count

    t = 0
    while t < frames:
        if refined[t] != -1:
            t += 1
            continue
        end = t
        while end < frames and refined[end] == -1:
            end += 1
        left = run_from(t - 1, -1) if t > 0 else 0
        right = run_from(end, 1) if end < frames else 0
        if left == right == 0:
            label = 0
        else:
            label = refined[t - 1] if left >= right and left > 0 else refined[end]
        refined[t:end] = [label] * (end - t)
        t = end
    bounds = [0] + [t for t in range(1, frames) if refined[t] != refined[t - 1]] + [frames]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def static_similarity(window: torch.Tensor) -> torch.Tensor:
    """``(W, n, D)`` -> ``(n,)`` mean cosine similarity of each position over the ordered pairs of distinct frames."""
    frames = window.shape[0]
    if frames < 2:
        return torch.full(window.shape[1:2], -math.inf, device=window.device)
    unit = F.normalize(window.float(), dim=-1)
    pairs = unit.sum(dim=0).pow(2).sum(dim=-1) - frames  # sum over all ordered pairs, minus the W self-pairs
    return pairs / (frames * (frames - 1))


class PruneVid(VideoReducer):
    """Options: ``budget`` / ``ratio`` (with ``exact_budget``), ``exact_budget`` (false: the original's
    data-dependent count), ``tau``, ``temporal_segment_ratio``, ``cluster_ratio``, ``neighbours`` (k),
    ``min_group`` (groups this small pass unchanged in the original), ``seed``, ``at_floor``."""

    def __init__(self, budget: int | None = None, ratio: float | None = None, exact_budget: bool = True,
                 tau: float = 0.8, temporal_segment_ratio: float = 0.25, cluster_ratio: float = 0.5,
                 neighbours: int = 7, min_group: int = 14, seed: int = 0, at_floor: bool = True):
        super().__init__()
        if exact_budget:
            self.budget, self.ratio = budget_options(budget, ratio, 0.25)
        elif budget is not None or ratio is not None:
            raise ValueError(f"prunevid: budget={budget!r} / ratio={ratio!r} need exact_budget=true; with "
                             f"exact_budget=false the count follows temporal_segment_ratio and cluster_ratio")
        else:
            self.budget = self.ratio = None
        if not (0 < temporal_segment_ratio <= 1 and 0 < cluster_ratio < 1):
            raise ValueError(f"prunevid needs 0 < temporal_segment_ratio <= 1 and 0 < cluster_ratio < 1, got "
                             f"{temporal_segment_ratio!r} and {cluster_ratio!r}")
        if neighbours < 1 or min_group < 0:
            raise ValueError(f"prunevid needs neighbours >= 1 and min_group >= 0, got {neighbours!r}, {min_group!r}")
        self.exact_budget, self.tau, self.seed, self.at_floor = exact_budget, tau, seed, at_floor
        self.temporal_segment_ratio, self.cluster_ratio = temporal_segment_ratio, cluster_ratio
        self.neighbours, self.min_group = neighbours, min_group

    # ------------------------------------------------------------------ budget

    def count(self, frames: int, per_frame: int) -> int:
        if not self.exact_budget:
            raise ValueError("prunevid with exact_budget=False keeps a count that depends on the video (how many "
                             "tokens are static), which cannot be announced before the video is seen; use "
                             "exact_budget=True with a budget or ratio")
        total = self.target(frames, per_frame)
        floor = min(frames + frames // 2, frames * per_frame)
        return total if total >= floor else self.floor(total, floor, f"T + T // 2 groups, {frames} frames")

    # ------------------------------------------------------------------ steps 1-2

    def segments(self, grid: torch.Tensor, generator: torch.Generator) -> list[int]:
        """Step 1: ``(T, n, D)`` -> segment lengths."""
        frames = grid.shape[0]
        clusters = max(1, int(frames * self.temporal_segment_ratio))
        labels = dpc_knn(grid.float().mean(dim=1)[None], clusters, min(self.neighbours, frames), generator)
        return contiguous_segments(labels[0].tolist())

    def static_masks(self, grid: torch.Tensor, lengths: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Step 2: per segment, the ``(n,)`` similarities and static masks."""
        sims = [static_similarity(window) for window in grid.split(lengths)]
        return sims, [sim > self.tau for sim in sims]

    def demote(self, sims: list[torch.Tensor], masks: list[torch.Tensor], lengths: list[int],
               total: int) -> list[torch.Tensor]:
        """Exact budget: the least similar static positions turn dynamic until the groups hold ``total`` tokens."""
        per_frame = masks[0].numel()
        capacity = sum(int(mask.sum()) + length * (per_frame - int(mask.sum())) for mask, length in zip(masks, lengths))
        if capacity >= total:
            return masks
        segment = torch.cat([torch.full((int(m.sum()),), s) for s, m in enumerate(masks)])
        position = torch.cat([m.nonzero().flatten().cpu() for m in masks])
        similarity = torch.cat([sim[m].cpu() for sim, m in zip(sims, masks)])
        order = similarity.argsort(stable=True)
        gains = (torch.tensor(lengths) - 1)[segment[order]]
        demoted = int((gains.cumsum(0) < total - capacity).sum()) + 1
        masks = [mask.clone() for mask in masks]
        for s, p in zip(segment[order[:demoted]].tolist(), position[order[:demoted]].tolist()):
            masks[s][p] = False
        return masks

    # ------------------------------------------------------------------ steps 3-4

    def merge(self, tokens: torch.Tensor, clusters: int, generator: torch.Generator) -> torch.Tensor:
        """``(G, m, D)`` -> ``(G, clusters, D)`` cluster means, or the tokens when ``clusters == m``."""
        if clusters == tokens.shape[1]:
            return tokens
        labels = dpc_knn(tokens, clusters, min(self.neighbours, tokens.shape[1]), generator)
        return cluster_means(tokens, labels, clusters)

    def faithful_clusters(self, size: int) -> int:
        return size if size <= self.min_group else max(1, int(size * self.cluster_ratio))

    def reduce_video(self, grid: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        frames, per_frame, _ = grid.shape
        grid = grid.float()
        lengths = self.segments(grid, generator)
        sims, masks = self.static_masks(grid, lengths)
        if self.exact_budget:
            total = self.count(frames, per_frame)
            masks = self.demote(sims, masks, lengths, total)
            sizes = torch.tensor([g for mask, length in zip(masks, lengths)
                                  for g in [int(mask.sum())] + [per_frame - int(mask.sum())] * length])
            filled = sizes > 0
            quotas = torch.zeros_like(sizes)
            high = sizes[filled].double()
            quotas[filled] = apportion(high * total / high.sum(), total, torch.ones_like(high), high)
            quotas = quotas.tolist()
        out, group = [], 0
        for window, mask, length in zip(grid.split(lengths), masks, lengths):
            static, dynamic = window[:, mask].mean(dim=0), window[:, ~mask]  # (s, D), (W, n - s, D)
            if self.exact_budget:
                static_k, dynamic_k = quotas[group], torch.tensor(quotas[group + 1:group + 1 + length])
                group += 1 + length
            else:
                static_k = self.faithful_clusters(static.shape[0])
                dynamic_k = torch.full((length,), self.faithful_clusters(dynamic.shape[1]))
            if static.shape[0]:
                out.append(self.merge(static[None], static_k, generator)[0])
            if dynamic.shape[1]:
                # at most two cluster counts per segment (largest remainder): one batched merge per count
                merged = [None] * length
                for k in dynamic_k.unique().tolist():
                    chosen = (dynamic_k == k).nonzero().flatten()
                    for i, tokens in zip(chosen.tolist(), self.merge(dynamic[chosen.to(grid.device)], k, generator)):
                        merged[i] = tokens
                out.extend(merged)
        return torch.cat(out)
