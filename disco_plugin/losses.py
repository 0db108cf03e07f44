"""VCD and TFC on padded batches: every item at once, padding and items without instances masked.

Both are the prototype's formulas (``ZJHTerry18/STEP``, ``MultiModalLLM_fg_PT_2.vtc_loss`` and
``vid_tc_loss``) written over padded tensors with masks instead of concatenated ragged lists. A loss
over nothing is an exact zero that still depends on the inputs, so every rank runs the same graph.

* :func:`vcd_loss`: the matched pairs ``(u_{pi(i)}, e_i)`` of the micro-batch; logits
  ``s_ij = u_{pi(i)} . e_j / tau``; negatives are the other instances of the same item (``"video"``,
  the prototype) or of every item (``"batch"``); the loss is the mean over pairs of
  ``(CE over row i + CE over column i) / 2``.
* :func:`tfc_loss`: per item, frame and token, the focused feature ``f_{k,t}`` (normalised) must be
  nearer its own temporal centre ``c_k = mean_t f_{k,t}`` than any other token's centre and vice
  versa: ``(CE_j(f_{k,t} . c_j / tau, k) + CE_k(f_{k,t} . c_j / tau, j)) / 2``, averaged over the real
  (item, frame, token) triples. Frames where an instance is absent are not treated specially (the
  prototype neither gates nor renormalises them); padded frames are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import VCD_NEGATIVES

#: Logit of a masked pair: far below any real one, finite so a fully masked row stays finite.
MASKED = -1e9


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(values * weights) / max(sum(weights), 1)``: zero (with a graph) when nothing is real."""
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1)


def vcd_loss(groups: torch.Tensor, instances: torch.Tensor, assignment: torch.Tensor, instance_mask: torch.Tensor,
             temperature: torch.Tensor, negatives: str = "video") -> torch.Tensor:
    """Concept-discrimination loss.

    Args:
        groups: ``(B, G, E)`` L2-normalised group embeddings ``u``.
        instances: ``(B, M, E)`` L2-normalised instance embeddings ``e`` (padded).
        assignment: ``(B, M)`` long, the group of each instance slot (:func:`match_instances`).
        instance_mask: ``(B, M)`` bool, real instance slots.
        temperature: ``tau``, a scalar or a ``(1,)`` tensor.
        negatives: ``"video"`` or ``"batch"``.
    """
    if negatives not in VCD_NEGATIVES:
        raise ValueError(f"vcd_loss: negatives={negatives!r}; allowed values: {', '.join(VCD_NEGATIVES)}")
    b, m, e = instances.shape
    matched = groups.gather(1, assignment[..., None].expand(-1, -1, groups.shape[-1]))  # (B, M, E)
    valid = instance_mask.flatten()  # (N,)
    logits = matched.flatten(0, 1) @ instances.flatten(0, 1).T / temperature  # (N, N): row visual, column text
    allowed = valid[:, None] & valid[None, :]
    if negatives == "video":
        item = torch.arange(b, device=instances.device).repeat_interleave(m)
        allowed = allowed & (item[:, None] == item[None, :])
    logits = logits.masked_fill(~allowed, MASKED)
    v2t = -logits.log_softmax(1).diagonal()
    t2v = -logits.log_softmax(0).diagonal()
    return _masked_mean((v2t + t2v) / 2, valid)


def tfc_loss(focused: torch.Tensor, frame_valid: torch.Tensor, token_mask: torch.Tensor,
             temperature: torch.Tensor) -> torch.Tensor:
    """Temporal-focus loss.

    Args:
        focused: ``(B, K, T, D)`` per-frame focused features (:meth:`ResamplerOutput.focus_features`).
        frame_valid: ``(B, T)`` bool, real frames.
        token_mask: ``(B, K)`` bool, the tokens that take part (all zero for an item without the loss).
        temperature: ``tau``, a scalar or a ``(1,)`` tensor.
    """
    unit = F.normalize(focused, dim=-1)
    frames = frame_valid[:, None, :, None].to(unit.dtype)
    centres = (unit * frames).sum(2) / frames.sum(2).clamp(min=1)  # (B, K, D)
    logits = torch.einsum("bktd,bjd->btkj", unit, centres) / temperature  # (B, T, K, K)
    logits = logits.masked_fill(~(token_mask[:, None, :, None] & token_mask[:, None, None, :]), MASKED)
    to_centre = -logits.log_softmax(3).diagonal(dim1=2, dim2=3)  # (B, T, K): token k's frame -> its centre
    from_centre = -logits.log_softmax(2).diagonal(dim1=2, dim2=3)  # centre j -> token j's frame
    weights = frame_valid[:, :, None] & token_mask[:, None, :]
    return _masked_mean((to_centre + from_centre) / 2, weights)
