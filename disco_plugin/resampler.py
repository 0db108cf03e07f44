"""``DiscoResampler``: K learnable queries encapsulate each visual item into exactly K LLM tokens.

A bridge of ``depth`` pre-norm layers (self-attention over the queries, cross-attention to the item's
``T*H*W`` patch features, MLP) reads every item of a micro-batch at once: items are padded to the
longest one along the frame axis and padded frames are masked out of the attention. The
cross-attention is computed eagerly so its probabilities are kept: averaged over heads and summed
over layers they are each token's *focus map* ``(T, H*W)`` (the prototype's ``encode_fg_vision``),
from which TFC reads the per-frame focused features.

Parameter names (under ``model.mm_projector.resampler.``): ``queries``, ``input_norm``,
``layers.<i>.{self_norm,self_attn,cross_norm,cross_attn,mlp_norm,mlp}``, ``output_norm``,
``readout.<j>``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .config import DiscoConfig


def pad_items(features: torch.Tensor, frames_per_item: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_i T_i, H, W, D)`` -> ``(B, T_max, H*W, D)`` and ``frame_valid (B, T_max)`` (one gather)."""
    lengths = torch.tensor(frames_per_item, device=features.device)
    t_max = int(max(frames_per_item))
    offsets = torch.cumsum(lengths, 0) - lengths
    steps = torch.arange(t_max, device=features.device)
    frame_valid = steps[None, :] < lengths[:, None]
    index = torch.where(frame_valid, offsets[:, None] + steps[None, :], offsets[:, None])
    return features.flatten(1, 2)[index], frame_valid


def masked_attention_probs(logits: torch.Tensor, frame_valid: torch.Tensor, scope: str) -> torch.Tensor:
    """``logits (B, h, K, T, P)`` -> probabilities of the same shape, zero on padded frames.

    ``scope="clip"``: one softmax over all ``T*P`` patches; ``"frame"``: a softmax over each frame's
    ``P`` patches divided by the item's frame count, so both sum to 1 over an item's patches.
    """
    valid = frame_valid[:, None, None, :, None]
    logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    if scope == "clip":
        shape = logits.shape
        probs = logits.flatten(3).softmax(-1).view(shape)
    else:
        frames = frame_valid.sum(1).to(logits.dtype)[:, None, None, None, None]
        probs = logits.softmax(-1) / frames
    return probs * valid


class CrossAttention(nn.Module):
    """Queries ``(B, K, d)`` attend to patches ``(B, T, P, D_v)``; returns ``(B, K, d)`` and the
    probabilities ``(B, h, K, T, P)``."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, scope: str) -> None:
        super().__init__()
        self.num_heads, self.scope = num_heads, scope
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, patches: torch.Tensor, frame_valid: torch.Tensor):
        b, k, d = queries.shape
        h = self.num_heads
        q = self.q_proj(queries).view(b, k, h, d // h).transpose(1, 2)  # (B, h, K, dh)
        keys = self.k_proj(patches).unflatten(-1, (h, d // h))  # (B, T, P, h, dh)
        values = self.v_proj(patches).unflatten(-1, (h, d // h))
        logits = torch.einsum("bhkc,btphc->bhktp", q, keys) * (d // h) ** -0.5
        probs = masked_attention_probs(logits, frame_valid, self.scope)
        out = torch.einsum("bhktp,btphc->bkhc", probs, values).reshape(b, k, d)
        return self.out_proj(out), probs


class BridgeLayer(nn.Module):
    def __init__(self, cfg: DiscoConfig, kv_dim: int) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.self_norm = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, cfg.num_heads, batch_first=True)
        self.cross_norm = nn.LayerNorm(d)
        self.cross_attn = CrossAttention(d, kv_dim, cfg.num_heads, cfg.attention_scope)
        self.mlp_norm = nn.LayerNorm(d)
        width = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, width), nn.GELU(), nn.Linear(width, d))

    def forward(self, x: torch.Tensor, patches: torch.Tensor, frame_valid: torch.Tensor):
        y = self.self_norm(x)
        x = x + self.self_attn(y, y, y, need_weights=False)[0]
        attended, probs = self.cross_attn(self.cross_norm(x), patches, frame_valid)
        x = x + attended
        return x + self.mlp(self.mlp_norm(x)), probs


class ResamplerOutput(NamedTuple):
    """What one pass over a micro-batch gives (a named tuple: ZeRO-3's hooks find the tensors in it).

    Attributes:
        tokens: ``(B, K, D_llm)`` LLM tokens.
        states: ``(B, K, d)`` the queries after the bridge (before the readout MLP).
        focus: ``(B, K, T_max, P)`` each token's cross-attention, mean over heads, sum over layers.
        patches: ``(B, T_max, P, D_v)`` the normalised features the bridge read (zero on padded frames).
        frame_valid: ``(B, T_max)`` bool.
    """

    tokens: torch.Tensor
    states: torch.Tensor
    focus: torch.Tensor
    patches: torch.Tensor
    frame_valid: torch.Tensor

    def focus_features(self) -> torch.Tensor:
        """``(B, K, T_max, D_v)``: per frame, the patches weighed by the token's focus, averaged over the
        ``P`` patches (the prototype's ``video_frame_att_feats``)."""
        return torch.einsum("bktp,btpd->bktd", self.focus, self.patches) / self.patches.shape[2]


class DiscoResampler(nn.Module):
    """K queries -> bridge over every item's patches -> MLP to the LLM width."""

    def __init__(self, cfg: DiscoConfig, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.queries = nn.Parameter(torch.zeros(cfg.num_queries, cfg.hidden_size))
        self.input_norm = nn.LayerNorm(vision_dim)
        self.layers = nn.ModuleList(BridgeLayer(cfg, vision_dim) for _ in range(cfg.depth))
        self.output_norm = nn.LayerNorm(cfg.hidden_size)
        readout: list[nn.Module] = [nn.Linear(cfg.hidden_size, llm_dim)]
        for _ in range(cfg.readout_depth - 1):
            readout += [nn.GELU(), nn.Linear(llm_dim, llm_dim)]
        self.readout = nn.Sequential(*readout)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.queries, std=0.02)

    def forward(self, features: torch.Tensor, frames_per_item: list[int]) -> ResamplerOutput:
        """``features (sum_i T_i, H, W, D_v)`` packed along frames -> :class:`ResamplerOutput`."""
        patches, frame_valid = pad_items(features, frames_per_item)
        patches = self.input_norm(patches) * frame_valid[:, :, None, None].to(patches.dtype)
        x = self.queries.to(patches.dtype).expand(patches.shape[0], -1, -1)
        focus = None
        for layer in self.layers:
            x, probs = layer(x, patches, frame_valid)
            focus = probs.mean(1) if focus is None else focus + probs.mean(1)
        states = self.output_norm(x)
        return ResamplerOutput(self.readout(states), states, focus, patches, frame_valid)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights, zero biases, unit LayerNorms (the prototype's init)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
