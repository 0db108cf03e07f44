"""Measures of what VCD and TFC claim, on a projector's last forward (``keep_focus=True``).

* :func:`matched_group_states`: the bridge states of the groups paired with each instance;
  :func:`mean_pairwise_cosine` of them (centred on the mean state of the batch, so a component every
  token shares does not hide how the groups differ) is "are different instances' tokens apart?";
* :func:`focus_centroids` / :func:`focus_location_variance`: where each token looks in each frame
  (the attention-weighted patch coordinates) and how much that moves across an item's frames, for
  the tokens of matched groups: "does a token keep looking at the same thing?".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def matched_group_states(states: torch.Tensor, assignment: torch.Tensor, num_groups: int, group_size: int) -> torch.Tensor:
    """``states (B, K, d)``, ``assignment (B, M)`` -> ``(B, M, d)``: mean state of each instance's group."""
    groups = states[:, : num_groups * group_size].unflatten(1, (num_groups, group_size)).mean(2)
    return groups.gather(1, assignment[..., None].expand(-1, -1, groups.shape[-1]))


def mean_pairwise_cosine(vectors: torch.Tensor, mask: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cosine over the pairs of distinct real rows of each item: ``vectors (B, M, d)``, ``mask (B, M)``."""
    if centre is not None:
        vectors = vectors - centre
    unit = F.normalize(vectors, dim=-1)
    cos = unit @ unit.transpose(1, 2)
    pairs = mask[:, :, None] & mask[:, None, :] & ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    return cos[pairs].mean()


def matched_tokens(assignment: torch.Tensor, group_size: int) -> torch.Tensor:
    """``assignment (B, M)`` -> ``(B, M * group_size)`` token indices of the matched groups."""
    offsets = torch.arange(group_size, device=assignment.device)
    return (assignment[..., None] * group_size + offsets).flatten(1)


def focus_centroids(focus: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``focus (B, K, T, H*W)`` -> ``(B, K, T, 2)``: per frame, the (row, column) the token's attention
    centres on (attention renormalised within the frame)."""
    h, w = grid
    rows = torch.arange(h, dtype=focus.dtype, device=focus.device).repeat_interleave(w)
    cols = torch.arange(w, dtype=focus.dtype, device=focus.device).repeat(h)
    weights = focus / focus.sum(-1, keepdim=True).clamp(min=torch.finfo(focus.dtype).tiny)
    return torch.stack([(weights * rows).sum(-1), (weights * cols).sum(-1)], -1)


def focus_location_variance(focus: torch.Tensor, frame_valid: torch.Tensor, tokens: torch.Tensor,
                            grid: tuple[int, int]) -> torch.Tensor:
    """Mean over items and the given ``tokens (B, N)`` of the variance, across real frames, of the focus
    centroid (rows + columns, in patches squared)."""
    picked = focus.gather(1, tokens[..., None, None].expand(-1, -1, *focus.shape[2:]))
    centres = focus_centroids(picked, grid)  # (B, N, T, 2)
    valid = frame_valid[:, None, :, None].to(centres.dtype)
    count = valid.sum(2, keepdim=True)
    mean = (centres * valid).sum(2, keepdim=True) / count
    variance = (((centres - mean) ** 2) * valid).sum(2) / (count.squeeze(2) - 1).clamp(min=1)
    return variance.sum(-1).mean()
