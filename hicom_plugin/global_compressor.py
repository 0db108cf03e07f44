"""Global branch: ``N`` learnable queries, instruction-injected, attend to every token of the item.

``Z_g = readout(Q + MHA(Q, V + Pos, V or V + Pos))`` with ``Q = Inj(L, C)``:

* ``L`` ``(N, d)``: learnable queries, zero at init (as in the release). Under direct injection
  ``Q`` is the instruction alone, so ``L`` receives no gradient and the ``N`` outputs are identical.
* ``Pos``: :class:`~hicom_plugin.position.PositionEmbedding3D`, ``"split"`` or ``"sum"`` form, added
  to the keys and, with ``pos_emb_on_values``, to the values.
* ``MHA``: :class:`~hicom_plugin.injection.MultiHeadAttention` with
  ``num_attention_heads(d, attn_head_dim)`` heads (9 of 128 for SigLIP's 1152).

The default compute path (``fold_attention = True``) gives the same outputs and gradients as the
textbook form at a fraction of the cost (32 frames: fwd+bwd ~4x less work with distinct queries,
~100x less under direct injection):

* the key and value projections are folded into the queries and applied after the weighted sum
  (``MultiHeadAttention.forward_folded``), so the ~23k keys of a 32-frame video are never projected;
* ``Pos`` stays factored (``PositionGrid``): ``V + Pos`` is never built;
* under direct injection all ``N`` queries are the same vector, so one is attended and its output
  repeated.

``fold_attention = False`` runs the textbook form (the release's computation); tests and
``benchmarks`` compare the two.

Items of different lengths are padded to the longest with a key mask; the padded keys get weight 0.
"""

from __future__ import annotations

import torch
from torch import nn

from hicom_plugin.config import HIComConfig, num_attention_heads
from hicom_plugin.injection import GuideInjector, MultiHeadAttention, init_weights, two_layer_mlp
from hicom_plugin.position import PositionEmbedding3D


def pad_items(features: torch.Tensor, frames_per_item: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(sum_i T_i, H, W, d)`` -> ``(B, T_max, H, W, d)`` and ``frame_valid (B, T_max)``.

    ``frame_valid`` is None when every item has ``T_max`` frames (then the result is a view when possible).
    """
    t_max = max(frames_per_item)
    if all(t == t_max for t in frames_per_item):
        return features.reshape(len(frames_per_item), t_max, *features.shape[1:]), None
    lengths = torch.tensor(frames_per_item, device=features.device)
    offsets = torch.cumsum(lengths, 0) - lengths
    steps = torch.arange(t_max, device=features.device)
    frame_valid = steps[None, :] < lengths[:, None]
    index = torch.where(frame_valid, offsets[:, None] + steps[None, :], offsets[:, None])
    return features[index], frame_valid


class GlobalCompressor(nn.Module):
    """Parameters (names): ``query`` ``(N, d)``, ``injector`` (a :class:`GuideInjector`),
    ``attn.{q,k,v,out}_proj``, ``readout.{0,2}`` (``d -> D -> D``). The position tables are not
    part of the state dict."""

    def __init__(self, cfg: HIComConfig, vision_dim: int, text_dim: int, llm_dim: int) -> None:
        super().__init__()
        if cfg.num_global_queries < 1:
            raise ValueError("GlobalCompressor: cfg.num_global_queries is 0 (no global branch)")
        self.cfg = cfg
        self.query = nn.Parameter(torch.zeros(cfg.num_global_queries, vision_dim))
        heads = num_attention_heads(vision_dim, cfg.attn_head_dim)
        self.injector = GuideInjector(
            cfg.global_injection, text_dim, vision_dim, coarse_formula=cfg.coarse_formula,
            fine_formula=cfg.fine_formula, fine_pad_mask=cfg.fine_pad_mask,
            adapt_guide=cfg.global_adapt_g, direct_mlp=cfg.direct_mlp, num_heads=heads,
        )
        self.attn = MultiHeadAttention(vision_dim, heads)
        self.pos_emb = PositionEmbedding3D(vision_dim, cfg.pos_emb, max_positions=cfg.max_num_frames)
        self.readout = two_layer_mlp(vision_dim, llm_dim)
        self.last_attention: dict[str, torch.Tensor] | None = None
        self.fold_attention = True
        self.apply(init_weights)

    @staticmethod
    def _padded(features: torch.Tensor, frames_per_item: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, T_max, H, W, d)`` items and the key mask ``(B, T_max*H*W)`` (None when none is padded)."""
        padded, frame_valid = pad_items(features, frames_per_item)
        b, t, h, w, _ = padded.shape
        if frame_valid is None:
            return padded, None
        return padded, frame_valid[:, :, None].expand(b, t, h * w).reshape(b, t * h * w)

    def keys_and_values(
        self, features: torch.Tensor, frames_per_item: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Flattened keys and values ``(B, T_max*H*W, d)`` and the key mask ``(B, T_max*H*W)`` or None."""
        padded, key_valid = self._padded(features, frames_per_item)
        b, t, h, w, d = padded.shape
        with_pos = padded + self.pos_emb(t, h, w, dtype=padded.dtype, device=padded.device)
        keys = with_pos.reshape(b, t * h * w, d)
        values = keys if self.cfg.pos_emb_on_values else padded.reshape(b, t * h * w, d)
        return keys, values, key_valid

    def forward(
        self,
        features: torch.Tensor,
        frames_per_item: list[int],
        text_pooled: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """features ``(sum_i T_i, H, W, d)`` packed along frames -> ``(B, N, D)``.

        With ``cfg.return_attention``, ``self.last_attention`` holds ``"weights"``
        ``(B, heads, N, T_max*H*W)`` (0 on padded frames) and ``"valid"`` ``(B, T_max*H*W)``.
        """
        queries = self.query.to(features.dtype)[None].expand(len(frames_per_item), -1, -1)
        queries = self.injector(queries, text_pooled, text_tokens, text_mask)
        if self.fold_attention:
            tokens, weights, key_valid = self._folded(features, frames_per_item, queries)
        else:
            keys, values, key_valid = self.keys_and_values(features, frames_per_item)
            attended, weights = self.attn(queries, keys, values, key_valid)
            tokens = self.readout(queries + attended)
        if self.cfg.return_attention:
            if key_valid is None:
                key_valid = torch.ones(weights.shape[0], weights.shape[-1], dtype=torch.bool, device=weights.device)
            self.last_attention = {"weights": weights.detach(), "valid": key_valid}
        return tokens

    def _folded(
        self, features: torch.Tensor, frames_per_item: list[int], queries: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The folded form of ``readout(Q + MHA(Q, V + Pos, V (+ Pos)))``: ``(tokens, weights, key_valid)``."""
        padded, key_valid = self._padded(features, frames_per_item)
        b, t, h, w, d = padded.shape
        flat = padded.reshape(b, t * h * w, d)  # a view: the keys and values themselves
        pos = self.pos_emb.grid(t, h, w, dtype=padded.dtype, device=padded.device)
        shared = self.injector.kind == "direct"  # every query is the instruction: attend once
        unique = queries[:, :1] if shared else queries
        attended, weights = self.attn.forward_folded(
            unique, flat, flat, key_valid, key_pos=pos, value_pos=pos if self.cfg.pos_emb_on_values else None
        )
        tokens = self.readout(unique + attended)
        if shared:
            n = queries.shape[1]
            tokens, weights = tokens.expand(-1, n, -1), weights.expand(-1, -1, n, -1)
        return tokens, weights, key_valid
