"""Local branch: one token per ``(alpha_T, alpha_H, alpha_W)`` group, by instruction-guided attention.

For every group (row-major over ``(t', h', w')``, ``ceil(n / alpha)`` groups per axis):

1. ``q``: the group pooled to one token (mean of its members, or the release's trilinear resize of the
   whole grid), optionally through the gated adapter ``adapt_q``.
2. ``Q = Inj(q, C)`` (:class:`~hicom_plugin.injection.GuideInjector`).
3. ``Z = softmax(Q K^T / sqrt(d)) V`` over the group's members, single head, no projections. Keys are
   the dense embeddings ``E`` in a guided branch with ``dense_keys`` (release), otherwise the features;
   values are the features. Both may pass a gated adapter (``adapt_k``, ``adapt_v``).
4. ``readout``: MLP ``d -> D -> D``.

``local_mode="average"`` replaces step 3 by the uniform mean of the group's members: the plain
average-pool baseline of the paper's ablation, same grouping and readout.

Axes whose length is not a multiple of the kernel are grouped by :func:`axis_groups`.

The whole micro-batch is computed at once: items are padded to the largest temporal group count and
to the largest temporal kernel (images use ``alpha_T = 1`` next to videos using 4), with masks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hicom_plugin.config import HIComConfig, num_attention_heads
from hicom_plugin.injection import GatedAdapter, GuideInjector, init_weights, two_layer_mlp


def axis_groups(
    n: torch.Tensor, k: torch.Tensor, num_groups: int, group_size: int, scheme: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Members of each group along one axis, for a batch of axis lengths.

    Args:
        n: ``(B,)`` axis lengths (>= 1).
        k: ``(B,)`` kernel sizes (>= 1).
        num_groups: padded group count, at least ``max(ceil(n / k))``.
        group_size: padded slot count, at least ``max(k)``.
        scheme: ``"pad"``: group ``g`` holds ``g*k .. g*k+k-1``, slots past ``n`` are invalid.
            ``"overlap"``: every group holds ``min(n, k)`` distinct members; the
            ``ceil(n/k)*k - n`` surplus slots become overlaps between neighbours, spread as evenly
            as possible with the larger ones at the end. For the sizes where the release's
            ``balance_divide_feature`` works this gives the same groups (30 frames, k=4:
            ``[0-3] ... [20-23] [23-26] [26-29]``); where it crashes (n = 2, 3, 5, 6, 9 with k=4)
            this still gives ``ceil(n/k)`` groups.

    Returns:
        ``index (B, num_groups, group_size)`` long, within ``[0, n)``, and ``valid`` of the same
        shape (False for padding slots and for groups past ``ceil(n / k)``).
    """
    n, k = n[:, None, None], k[:, None, None]
    g = torch.arange(num_groups, device=n.device)[None, :, None]
    j = torch.arange(group_size, device=n.device)[None, None, :]
    groups = torch.div(n + k - 1, k, rounding_mode="floor")
    if scheme == "pad":
        start = g * k
    elif scheme == "overlap":
        surplus = groups * k - n  # slots that must be shared between neighbouring groups
        boundaries = (groups - 1).clamp(min=1)
        base = torch.div(surplus, boundaries, rounding_mode="floor")
        extra = surplus - base * boundaries  # the last `extra` boundaries overlap one more
        overlap_before = g * base + (g - (groups - 1 - extra)).clamp(min=0)
        start = g * k - overlap_before
    else:
        raise ValueError(f"axis_groups: scheme={scheme!r}; allowed values: pad, overlap")
    index = start + j
    valid = (j < k) & (g < groups) & (index < n) & (index >= 0)
    return torch.minimum(index.clamp(min=0), n - 1), valid


def axis_pool_taps(
    n: torch.Tensor, k: torch.Tensor, num_groups: int, index: torch.Tensor, valid: torch.Tensor, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source positions and weights that pool each group to one token along one axis.

    ``"mean"``: the group's members (``index``/``valid`` from :func:`axis_groups`), equal weights.
    ``"trilinear"``: the two taps of ``F.interpolate(..., mode="linear", align_corners=False)``
    resizing ``n`` to ``ceil(n / k)``; applied on every axis this is the release's trilinear resize.

    Returns ``(index (B, num_groups, taps), weight (B, num_groups, taps))``; weights are 0 for groups
    past ``ceil(n / k)``.
    """
    if mode == "mean":
        weight = valid.float()
        return index, weight / weight.sum(-1, keepdim=True).clamp(min=1)
    if mode != "trilinear":
        raise ValueError(f"axis_pool_taps: mode={mode!r}; allowed values: mean, trilinear")
    groups = torch.div(n + k - 1, k, rounding_mode="floor")[:, None]
    g = torch.arange(num_groups, device=n.device)[None, :]
    ratio = n[:, None].float() / groups.float()
    src = ((g + 0.5) * ratio - 0.5).clamp(min=0)
    src = torch.where(groups == n[:, None], g.float(), src)  # same size: PyTorch copies
    last = n[:, None] - 1
    i0 = torch.minimum(src.floor().long(), last)
    i1 = torch.minimum(i0 + 1, last)
    lam1 = (src - i0).clamp(0, 1)
    in_range = (g < groups).float()
    weight = torch.stack([(1 - lam1) * in_range, lam1 * in_range], dim=-1)
    return torch.stack([i0, i1], dim=-1).clamp(min=0), weight


def _axis_plan(
    n: torch.Tensor, k: torch.Tensor, groups: int, size: int, scheme: str, pool: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group members and pooling taps of one axis: ``(index, valid, tap_index, tap_weight)``."""
    index, valid = axis_groups(n, k, groups, size, scheme)
    return (index, valid) + axis_pool_taps(n, k, groups, index, valid, pool)


def _spatial_plan(
    n: int, k: int, scheme: str, pool: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_axis_plan` of an axis shared by all items; tensors without the batch axis."""
    plan = _axis_plan(torch.tensor([n], device=device), torch.tensor([k], device=device),
                      math.ceil(n / k), k, scheme, pool)
    return tuple(x[0] for x in plan)


def _outer(t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``t (B, St, Pt)``, ``h (Sh, Ph)``, ``w (Sw, Pw)`` -> product ``(B, St*Sh*Sw, Pt*Ph*Pw)``."""
    out = t[:, :, None, None, :, None, None] * h[None, None, :, None, None, :, None] \
        * w[None, None, None, :, None, None, :]
    b, st, sh, sw, pt, ph, pw = out.shape
    return out.reshape(b, st * sh * sw, pt * ph * pw)


def _gather(x: torch.Tensor, frame: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``x (F, H, W, d)`` at ``frame (B, St, Pt)`` x ``row (Sh, Ph)`` x ``col (Sw, Pw)``
    -> ``(B, St*Sh*Sw, Pt*Ph*Pw, d)``, groups row-major over ``(t', h', w')``."""
    out = x[frame[:, :, None, None, :, None, None], row[None, None, :, None, None, :, None],
            col[None, None, None, :, None, None, :]]
    b, st, sh, sw, pt, ph, pw, d = out.shape
    return out.reshape(b, st * sh * sw, pt * ph * pw, d)


class LocalCompressor(nn.Module):
    """Grouped single-head attention of the local branch.

    Parameters (names): ``readout.{0,2}`` (``d -> D -> D``), ``injector`` (a
    :class:`GuideInjector`), and the optional gated adapters ``q_adapter`` (Linear without bias),
    ``k_adapter`` and ``v_adapter`` (MLP ``d -> d -> d``), each with ``norm`` and ``alpha``.
    """

    def __init__(self, cfg: HIComConfig, vision_dim: int, text_dim: int, llm_dim: int) -> None:
        super().__init__()
        if cfg.local_kernel is None:
            raise ValueError("LocalCompressor: cfg.local_kernel is None (no local branch)")
        self.cfg = cfg
        self.injector = GuideInjector(
            cfg.local_injection, text_dim, vision_dim, coarse_formula=cfg.coarse_formula,
            fine_formula=cfg.fine_formula, fine_pad_mask=cfg.fine_pad_mask, adapt_guide=cfg.adapt_g,
            direct_mlp=cfg.direct_mlp, num_heads=num_attention_heads(vision_dim, cfg.attn_head_dim),
        )
        d = vision_dim
        self.q_adapter = GatedAdapter(nn.Linear(d, d, bias=False), d) if cfg.adapt_q else None
        self.k_adapter = GatedAdapter(two_layer_mlp(d, d), d) if cfg.adapt_k else None
        self.v_adapter = GatedAdapter(two_layer_mlp(d, d), d) if cfg.adapt_v else None
        self.readout = two_layer_mlp(vision_dim, llm_dim)
        self.last_attention: dict[str, torch.Tensor] | None = None
        self.apply(init_weights)

    def forward(
        self,
        features: torch.Tensor,
        frames_per_item: list[int],
        temporal_kernels: list[int],
        dense_embeds: torch.Tensor | None = None,
        text_pooled: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compresses every item of a packed batch.

        Args:
            features: ``(sum_i T_i, H, W, d)``, item i owns ``T_i`` consecutive frames.
            frames_per_item: ``T_i``.
            temporal_kernels: ``alpha_T`` of each item (1 for images).
            dense_embeds: ``(sum_i T_i, H, W, d)``, required when ``cfg.needs_dense_embeds``, ignored
                otherwise.
            text_pooled, text_tokens, text_mask: the instruction per item (see GuideInjector).

        Returns:
            ``tokens (B, G, D)`` with ``G = max_i ceil(T_i/aT_i) * ceil(H/aH) * ceil(W/aW)``, groups
            row-major over ``(t', h', w')``, and ``valid (B, G)`` (False past item i's groups).
            With ``cfg.return_attention``, ``self.last_attention`` holds ``"weights"`` ``(B, G, M)``
            (0 on padding slots), ``"valid"`` ``(B, G, M)`` and ``"coords"`` ``(B, G, M, 3)``: the
            item-relative ``(t, h, w)`` of each of the ``M = max(aT) * aH * aW`` slots.
        """
        if len(frames_per_item) != len(temporal_kernels):
            raise ValueError(
                f"LocalCompressor: {len(frames_per_item)} items but {len(temporal_kernels)} temporal kernels"
            )
        _, height, width, dim = features.shape
        device = features.device
        _, kh, kw = self.cfg.local_kernel
        scheme, pool = self.cfg.group_scheme, self.cfg.query_pool
        n_t = torch.tensor(frames_per_item, device=device)
        k_t = torch.tensor(temporal_kernels, device=device)
        st = max(math.ceil(t / k) for t, k in zip(frames_per_item, temporal_kernels))
        sh, sw = math.ceil(height / kh), math.ceil(width / kw)
        kt_max = max(temporal_kernels)
        offsets = torch.cumsum(n_t, 0) - n_t

        t_idx, t_valid, t_tap, t_wt = _axis_plan(n_t, k_t, st, kt_max, scheme, pool)
        h_idx, h_valid, h_tap, h_wt = _spatial_plan(height, kh, scheme, pool, device)
        w_idx, w_valid, w_tap, w_wt = _spatial_plan(width, kw, scheme, pool, device)
        frames = offsets[:, None, None] + t_idx

        raw_values = _gather(features, frames, h_idx, w_idx)  # (B, G, M, d)
        valid = _outer(t_valid, h_valid, w_valid)  # (B, G, M)

        # Mean pooling reads the group's own members; trilinear reads its 2 x 2 x 2 interpolation taps.
        taps = raw_values if pool == "mean" else _gather(features, offsets[:, None, None] + t_tap, h_tap, w_tap)
        query = torch.einsum("bgm,bgmd->bgd", _outer(t_wt, h_wt, w_wt).to(features.dtype), taps)
        if self.q_adapter is not None:
            query = self.q_adapter(query)
        query = self.injector(query, text_pooled, text_tokens, text_mask)

        if self.cfg.needs_dense_embeds:
            if dense_embeds is None or dense_embeds.shape != features.shape:
                got = None if dense_embeds is None else tuple(dense_embeds.shape)
                raise ValueError(
                    f"LocalCompressor: dense_embeds of shape {tuple(features.shape)} are required "
                    f"(dense_keys=True, guided local branch), got {got}"
                )
            keys = _gather(dense_embeds, frames, h_idx, w_idx)
        else:
            keys = raw_values
        if self.k_adapter is not None:
            keys = self.k_adapter(keys)
        values = raw_values if self.v_adapter is None else self.v_adapter(raw_values)

        if self.cfg.local_mode == "average":  # the average-pool baseline: uniform weights
            weights = valid.float() / valid.sum(-1, keepdim=True).clamp(min=1)
        else:
            logits = torch.einsum("bgd,bgmd->bgm", query, keys).float() / math.sqrt(dim)
            logits = logits.masked_fill(~valid, torch.finfo(torch.float32).min)
            weights = torch.softmax(logits, dim=-1)
        mixed = torch.einsum("bgm,bgmd->bgd", weights.to(values.dtype), values)
        tokens = self.readout(mixed)

        group_valid = (torch.arange(st, device=device)[None, :] * k_t[:, None] < n_t[:, None])
        group_valid = group_valid[:, :, None].expand(-1, -1, sh * sw).reshape(len(frames_per_item), -1)

        if self.cfg.return_attention:
            coords = torch.stack(torch.broadcast_tensors(
                t_idx[:, :, None, None, :, None, None], h_idx[None, None, :, None, None, :, None],
                w_idx[None, None, None, :, None, None, :]), dim=-1)
            self.last_attention = {
                "weights": (weights * valid).detach(),
                "valid": valid,
                "coords": coords.reshape(valid.shape + (3,)),
            }
        return tokens, group_valid
