"""FastV (Chen et al., ECCV 2024): drop visual tokens inside the LLM from layer K on (stage ``llm``).

Re-implemented from the paper (the repository has no licence). During the prompt forward:

1. layers ``0 .. K-1`` run on the full sequence;
2. the attention of the last prompt token at layer K-1, averaged over heads, scores every visual token
   (the core recomputes that one row from the layer's own projections, so SDPA / flash attention stay on:
   :class:`~llava.model.token_reduction.LayerContext`);
3. the ``R`` best-scored visual tokens of each row and all text go on to layers ``K ..`` with their
   original positions (RoPE sees the gaps); ``R = round(M (1 - prune_ratio))`` as in FastV's HF demo, or
   ``R = budget`` tokens. Decoding attends to the same kept set.

Defaults are the paper's: K = 2, half the visual tokens pruned. ``prune_ratio`` is the fraction
*dropped* (FastV's ``fastv_r``). The LLM input stays M tokens: compare FastV on average visual tokens
per layer (:func:`average_tokens`, :func:`keep_for_average`) or on prefill FLOPs, not on LLM-input tokens.
"""

from __future__ import annotations

import math

import torch

from llava.model.token_reduction import LayerContext, TokenReducer


def average_tokens(visual: int, keep: int, layer: int, num_layers: int) -> float:
    """Visual tokens per decoder layer on average: ``(K M + (L - K) R) / L``."""
    return (layer * visual + (num_layers - layer) * keep) / num_layers


def keep_for_average(visual: int, target: float, layer: int, num_layers: int) -> int:
    """The largest ``R <= M`` whose :func:`average_tokens` is at most ``target``.

    Raises:
        ValueError: even ``R = 0`` averages above ``target`` (K M / L > target).
    """
    keep = math.floor((target * num_layers - layer * visual) / (num_layers - layer))
    if keep < 0:
        raise ValueError(f"fastv: an average of {target} visual tokens per layer is below its floor of "
                         f"{layer * visual / num_layers:.1f} (layer {layer} of {num_layers}, {visual} visual tokens)")
    return min(keep, visual)


class FastV(TokenReducer):
    """Options: ``layer`` (K >= 1), ``prune_ratio`` (fraction of visual tokens dropped) or ``budget`` (R, visual
    tokens kept per row from layer K on)."""

    stage = "llm"

    def __init__(self, layer: int = 2, prune_ratio: float | None = None, budget: int | None = None):
        super().__init__()
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
            raise ValueError(f"layer must be an integer >= 1 (it scores with layer K-1), got {layer!r}")
        if prune_ratio is not None and budget is not None:
            raise ValueError(f"set prune_ratio or budget, not both (got {prune_ratio!r} and {budget!r})")
        if prune_ratio is None and budget is None:
            prune_ratio = 0.5
        if prune_ratio is not None and not 0 <= prune_ratio < 1:
            raise ValueError(f"prune_ratio must be in [0, 1), got {prune_ratio!r}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise ValueError(f"budget must be a number of visual tokens >= 0, got {budget!r}")
        self.layer, self.prune_ratio, self.budget = layer, prune_ratio, budget
        self.llm_layer, self.llm_attention_layer = layer, layer - 1

    def kept_count(self, visual: int) -> int:
        """R for a row of ``visual`` visual tokens."""
        if self.budget is not None:
            return min(self.budget, visual)
        return round(visual * (1 - self.prune_ratio))

    def select_in_llm(self, ctx: LayerContext) -> list[torch.Tensor]:
        scores = ctx.attention[:, :, -1].mean(dim=1)  # (B, L): the last query, averaged over heads
        kept = []
        for row in range(scores.shape[0]):  # rows hold different visual spans
            visual = ctx.visual_mask[row].nonzero().flatten()
            best = scores[row, visual].topk(self.kept_count(visual.numel())).indices
            kept.append(visual[best].sort().values)
        return kept
