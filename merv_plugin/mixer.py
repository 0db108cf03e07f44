"""Fusion of the encoders' projected tokens (MERV's ``feature_fusion``), on packed items.

Every mixer takes ``x (E, N, d)``: encoder ``e``'s projected tokens of all items packed along ``N``
(item ``i`` owns ``item_index == i``; every encoder has the same layout), and returns the fused tokens
``(N', d)`` with their ``item_index``, and the per-item encoder weights ``(B, E)`` (``None`` where the
fusion has none).

:class:`LearnableQueryMixer` is MERV's ``CrossAttentionAdapterLearnableQuery`` with ``averagetoken``
(``merv/util/nn_utils.py``): the softmax weights of a one-head attention from a static learnable query
to the encoders' mean tokens mix the encoders token-wise. Only the query and key projections act on the
output (MERV's ``nn.MultiheadAttention`` also allocates value and output projections whose result it
discards; they are not built here, and the checkpoint importer drops them).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def item_means(x: torch.Tensor, item_index: torch.Tensor, num_items: int) -> torch.Tensor:
    """``(E, N, d)`` -> ``(E, B, d)``: each encoder's mean token of each item."""
    sums = x.new_zeros(x.shape[0], num_items, x.shape[-1]).index_add_(1, item_index, x)
    counts = torch.bincount(item_index, minlength=num_items).clamp(min=1).to(x.dtype)
    return sums / counts[None, :, None]


def weighted_sum(x: torch.Tensor, weights: torch.Tensor, item_index: torch.Tensor) -> torch.Tensor:
    """``sum_e weights[item, e] * x[e]`` -> ``(N, d)``."""
    return torch.einsum("en,end->nd", weights[item_index].T.to(x.dtype), x)


class LearnableQueryMixer(nn.Module):
    """``cross_attention_avg_lq``: ``a = softmax_e((Q W_q + b_q) . (mean_e W_k + b_k) / sqrt(D_q))``,
    output ``sum_e a_e x_e``; ``t*h*w`` tokens for any number of encoders.

    Parameters (names map to MERV's checkpoint, :mod:`merv_plugin.checkpoint`): ``query (1, D_q)``,
    ``q_proj`` (D_q -> D_q), ``k_proj`` (d -> D_q). Initialised as MERV's: Xavier-uniform query and
    projection weights, zero biases (``nn.MultiheadAttention``'s reset).
    """

    def __init__(self, num_encoders: int, dim: int, query_dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.empty(1, query_dim))
        self.q_proj = nn.Linear(query_dim, query_dim)
        self.k_proj = nn.Linear(dim, query_dim)
        for weight in (self.query, self.q_proj.weight, self.k_proj.weight):
            nn.init.xavier_uniform_(weight)
        nn.init.zeros_(self.q_proj.bias)
        nn.init.zeros_(self.k_proj.bias)

    def weights(self, x: torch.Tensor, item_index: torch.Tensor, num_items: int) -> torch.Tensor:
        """``(B, E)`` mixing weights (each row sums to 1)."""
        keys = self.k_proj(item_means(x, item_index, num_items))  # (E, B, D_q)
        query = self.q_proj(self.query)[0]  # (D_q,)
        logits = keys @ query / math.sqrt(query.shape[0])  # (E, B)
        return logits.T.float().softmax(dim=-1)

    def forward(self, x, item_index, num_items):
        weights = self.weights(x, item_index, num_items)
        return weighted_sum(x, weights, item_index), item_index, weights


class ScalarMixer(nn.Module):
    """``scalar``: static learnable weights ``softmax(s)`` (MERV's ``ScalarAdapter``, randn init)."""

    def __init__(self, num_encoders: int, dim: int, query_dim: int):
        super().__init__()
        self.scalar = nn.Parameter(torch.randn(num_encoders))

    def forward(self, x, item_index, num_items):
        weights = self.scalar.float().softmax(0).expand(num_items, -1)
        return weighted_sum(x, weights, item_index), item_index, weights


class ChannelConcatMixer(nn.Module):
    """``concat_channel``: the encoders' tokens side by side, then a Linear ``E*d -> d``."""

    def __init__(self, num_encoders: int, dim: int, query_dim: int):
        super().__init__()
        self.projector = nn.Linear(num_encoders * dim, dim)

    def forward(self, x, item_index, num_items):
        return self.projector(x.permute(1, 0, 2).flatten(1)), item_index, None


class SequenceConcatMixer(nn.Module):
    """``concat``: every encoder's tokens one after another, per item (``E`` times the tokens)."""

    def __init__(self, num_encoders: int, dim: int, query_dim: int):
        super().__init__()

    def forward(self, x, item_index, num_items):
        # stable sort by item keeps, within an item, encoder-major order
        order = torch.sort(item_index.repeat(x.shape[0]), stable=True)
        return x.flatten(0, 1)[order.indices], order.values, None


MIXERS = {"cross_attention_avg_lq": LearnableQueryMixer, "scalar": ScalarMixer,
          "concat_channel": ChannelConcatMixer, "concat": SequenceConcatMixer}
