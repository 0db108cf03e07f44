"""B-VLLM's two merges, batched: the one-hop temporal slot merge and the ToMe spatial merge.

Both follow the public code's ``merge.py`` (``threshold_soft_matching`` + ``merge_wavg``;
``multi_layer_merge`` over ``bipartite_soft_matching``), restated for a batch of items at once.
Which rows merge is decided without gradient; gradients flow through the averaged values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def slot_merge_plan(selection: torch.Tensor, threshold: float, single_frame: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Which selector slots merge into which, per item.

    Slot i's similarity to an earlier slot j is ``(cos(A_i, A_j) + 1) / 2`` over their frame weights;
    its best earlier slot j*(i) takes it when that similarity exceeds ``threshold`` (slot 0 has no
    earlier slot). Only one hop is followed: a slot merged into a slot that is itself merged is lost
    with it, as in the reference. 1-frame items keep slot 0 alone (every slot is that frame).

    Args:
        selection: ``(B, K, T)`` frame weights of each slot (zeros on padded frames).
        threshold: γ in [0, 1].
        single_frame: ``(B,)`` bool, items of one frame.

    Returns:
        ``adjacency (B, K, K)``: row l averages the slots it holds (itself and its sources);
        ``kept (B, K)`` bool.
    """
    b, k, _ = selection.shape
    sims = (F.cosine_similarity(selection[:, None], selection[:, :, None], dim=-1) + 1) / 2  # (B, K, K)
    sims = torch.tril(sims, diagonal=-1)
    best, target = sims.max(dim=-1)  # (B, K)
    source = best > threshold
    eye = torch.eye(k, dtype=torch.bool, device=selection.device).expand(b, k, k)
    # adjacency[b, l, i]: slot i is averaged into slot l (its target) or i == l
    into = (target[:, None, :] == torch.arange(k, device=selection.device)[None, :, None]) & source[:, None, :]
    adjacency = eye | into
    kept = ~source
    single = single_frame[:, None]
    first = torch.zeros(k, dtype=torch.bool, device=selection.device)
    first[0] = True
    kept = torch.where(single, first[None], kept)
    adjacency = torch.where(single[:, :, None], eye, adjacency)
    return adjacency, kept


def merge_slots(slots: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """``slots (B, K, ...)`` -> each row the unweighted mean of the rows it holds (``adjacency (B, K, K)``)."""
    weights = adjacency.to(slots.dtype)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return torch.einsum("blk,bkd->bld", weights, slots.flatten(2)).view_as(slots)


def bipartite_merge(tokens: torch.Tensor, remove: int) -> torch.Tensor:
    """One ToMe step on every row of ``tokens (N, n, C)``: removes ``remove`` tokens.

    Even positions are matched to their most similar odd position (cosine); the ``remove`` best
    matched even tokens are averaged into their odd partners. Output: the unmerged even tokens (in
    match-score order) followed by the odd tokens, ``(N, n - remove, C)``.
    """
    if remove <= 0:
        return tokens
    with torch.no_grad():
        unit = tokens / tokens.norm(dim=-1, keepdim=True)
        scores = unit[:, ::2] @ unit[:, 1::2].transpose(-1, -2)
        best, partner = scores.max(dim=-1)
        order = best.argsort(dim=-1, descending=True)[..., None]
        unmerged_idx, merged_idx = order[:, remove:], order[:, :remove]
        partner_idx = partner[..., None].gather(dim=1, index=merged_idx)
    even, odd = tokens[:, ::2], tokens[:, 1::2]
    n, c = tokens.shape[0], tokens.shape[-1]
    unmerged = even.gather(1, unmerged_idx.expand(n, unmerged_idx.shape[1], c))
    moved = even.gather(1, merged_idx.expand(n, remove, c))
    summed = odd.scatter_reduce(1, partner_idx.expand(n, remove, c), moved, reduce="sum")
    sizes = torch.ones_like(odd[..., :1]).scatter_reduce(1, partner_idx, torch.ones_like(moved[..., :1]), reduce="sum")
    return torch.cat([unmerged, summed / sizes], dim=1)


def multi_layer_merge(tokens: torch.Tensor, target: int) -> torch.Tensor:
    """``(N, n, C)`` -> ``(N, min(n, target), C)``: halve while ``n // 2 > target``, then one last step."""
    while tokens.shape[1] // 2 > target:
        tokens = bipartite_merge(tokens, tokens.shape[1] // 2)
    return bipartite_merge(tokens, tokens.shape[1] - target)


__all__ = ["bipartite_merge", "merge_slots", "multi_layer_merge", "slot_merge_plan"]
