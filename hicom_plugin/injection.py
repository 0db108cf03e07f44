"""Instruction injection ``Inj(A, C)`` and the small layers both compressor branches share.

``A`` is a batch of queries ``(B, Nq, d)``: the pooled group tokens of the local branch, or the
learnable queries of the global branch. ``C`` is the instruction of each item: pooled ``C_p``
``(B, d_text)`` for direct and coarse injection, tokens ``C_f`` ``(B, L, d_text)`` (with an
optional ``(B, L)`` mask, True = real token) for fine injection.

| kind     | paper                          | release                              | parameters            |
|----------|--------------------------------|--------------------------------------|-----------------------|
| none     | A                              | A                                    | none                  |
| direct   | MLP(C_p), broadcast            | C_p, broadcast                       | MLP if ``direct_mlp`` |
| coarse   | LN(A) * scale + shift          | LN(A * (1 + scale) + shift)          | MLP d->2d->2d, LN     |
| fine     | Attn(LN(A), C_f, C_f)          | LN(A + Attn(A, C_f, C_f))            | attention, LN         |

``(scale, shift)`` come from an MLP of ``C_p``. Whatever the kind, ``C`` first goes through an MLP
``d_text -> d -> d`` when its width differs from the queries' (or, for direct injection, when
``direct_mlp`` asks for one), then through the optional gated adapter ``adapt_g``.
"""

from __future__ import annotations

import torch
from torch import nn

from hicom_plugin.position import PositionGrid

INJECTIONS = ("none", "direct", "coarse", "fine")
LN_EPS = 1e-6


def two_layer_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear(in, out) -> GELU -> Linear(out, out)``; keys ``0.*`` and ``2.*`` as in the release."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def init_weights(module: nn.Module) -> None:
    """Release initialisation: Linear weights truncated normal (std 0.02), biases 0; LayerNorm 1 / 0.

    Learnable queries and adapter gates are plain parameters and keep their zero init.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class GatedAdapter(nn.Module):
    """``x -> (1 - alpha) * x + alpha * LN(proj(x))`` with ``alpha`` starting at 0 (identity at init).

    At init only ``alpha`` receives a gradient; ``proj`` and ``norm`` get exactly zero gradients until
    ``alpha`` moves away from 0.
    """

    def __init__(self, proj: nn.Module, dim: int) -> None:
        super().__init__()
        self.proj = proj
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1 - self.alpha) * x + self.alpha * self.norm(self.proj(x))


def _masked_softmax(logits: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
    """Float32 softmax over the last axis; ``key_valid`` ``(B, L)`` broadcast over heads and queries.

    A row without any valid key gets all-zero weights (its attention output is then zero).
    """
    if key_valid is None:
        return torch.softmax(logits.float(), dim=-1)
    valid = key_valid[:, None, None, :]
    logits = logits.float().masked_fill(~valid, torch.finfo(torch.float32).min)
    return torch.softmax(logits, dim=-1) * valid.any(dim=-1, keepdim=True)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with ``q_proj``/``k_proj``/``v_proj``/``out_proj`` (``dim -> dim``, with bias).

    Two equivalent computations:

    * :meth:`forward` projects every key and value (cheap when keys are few: fine injection).
    * :meth:`forward_folded` never projects the keys and values (global branch: 32 queries against
      ~23k keys). Per head, ``q . (W_k x + b_k) = (W_k^T q) . x + q . b_k``, so the queries are
      moved into the input space instead; and ``sum_j p_j (W_v x_j + b_v) = W_v (sum_j p_j x_j) +
      b_v sum_j p_j``, so the value projection is applied after the weighted sum.

    Per key, the folded form costs ``heads * Nq * dim`` multiply-adds for the logits and as many for the
    weighted sum, against ``2 * dim^2`` for projecting the key and the value: it pays while
    ``heads * Nq < dim`` (global branch: 9 * 32 = 288 < 1152, a quarter of the work), not for the
    fine injection's 648 local queries against 64 text tokens.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MultiHeadAttention: dim={dim} is not divisible by num_heads={num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim) -> (B, heads, N, head_dim)``."""
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, heads, N, head_dim) -> (B, N, dim)`` through ``out_proj``."""
        b, _, n, _ = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, n, self.dim))

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        key_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query ``(B, Nq, dim)``, key/value ``(B, L, dim)``, key_valid ``(B, L)`` bool or None.

        Returns ``(out (B, Nq, dim), weights (B, heads, Nq, L))``.
        """
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        probs = _masked_softmax(q @ k.transpose(-1, -2) * self.scale, key_valid)
        return self._merge(probs.to(v.dtype) @ v), probs

    def forward_folded(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        key_valid: torch.Tensor | None = None, key_pos: PositionGrid | None = None,
        value_pos: PositionGrid | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract and result as :meth:`forward`, at ``O(heads * Nq * L * dim)`` cost.

        ``key_pos`` / ``value_pos``: an embedding added to every key / value (``L = t*h*w`` grid
        positions), given factored so that ``key + Pos`` is never built: ``q . (k + p) = q . k + q . p``
        and ``sum_j w_j (v_j + p_j) = sum_j w_j v_j + sum_j w_j p_j``.
        """
        b, nq, _ = query.shape
        length = key.shape[1]
        h, hd = self.num_heads, self.head_dim
        q = self._heads(self.q_proj(query)) * self.scale  # (B, h, Nq, hd)
        w_k = self.k_proj.weight.view(h, hd, self.dim)
        q_in = torch.einsum("bhnc,hcd->bhnd", q, w_k)  # queries moved to the input space
        # q . b_k is the same for every key, so it cancels in the softmax; it is kept so that k_proj.bias
        # takes part in the graph like in the unfolded form (DDP expects every parameter to be used).
        q_bias = torch.einsum("bhnc,hc->bhn", q, self.k_proj.bias.view(h, hd))
        logits = (q_in.reshape(b, h * nq, self.dim) @ key.transpose(1, 2)).view(b, h, nq, length)
        if key_pos is not None:
            logits = logits + key_pos.dot(q_in)
        probs = _masked_softmax(logits + q_bias[..., None], key_valid)
        weights = probs.to(value.dtype)
        mixed = (weights.reshape(b, h * nq, length) @ value).view(b, h, nq, self.dim)
        if value_pos is not None:
            mixed = mixed + value_pos.pool(weights)
        w_v = self.v_proj.weight.view(h, hd, self.dim)
        heads = torch.einsum("bhnd,hcd->bhnc", mixed, w_v)
        heads = heads + self.v_proj.bias.view(1, h, 1, hd) * probs.sum(-1, keepdim=True).to(heads.dtype)
        return self._merge(heads), probs


def check_text_tokens(text_tokens, text_mask, items: int, text_dim: int, who: str) -> None:
    """``text_tokens`` must be ``(items, L, text_dim)`` and ``text_mask``, if given, ``(items, L)``."""
    if text_tokens is None or text_tokens.ndim != 3 or text_tokens.shape[0] != items \
            or text_tokens.shape[2] != text_dim:
        got = None if text_tokens is None else tuple(text_tokens.shape)
        raise ValueError(f"{who}: text_tokens must be ({items}, L, {text_dim}), got {got}")
    if text_mask is not None and text_mask.shape != text_tokens.shape[:2]:
        raise ValueError(f"{who}: text_mask {tuple(text_mask.shape)} does not match text_tokens "
                         f"{tuple(text_tokens.shape[:2])}")


class GuideInjector(nn.Module):
    """``Inj(A, C)`` of one branch; see the module docstring for the formulas.

    Args:
        kind: ``"none" | "direct" | "coarse" | "fine"``.
        text_dim: width of the instruction embeddings.
        qk_dim: width of the queries ``A``.
        coarse_formula, fine_formula: ``"paper" | "release"``.
        fine_pad_mask: mask instruction padding in fine injection.
        adapt_guide: gated adapter on the (projected) instruction.
        direct_mlp: direct injection passes ``C_p`` through an MLP even when widths agree.
        num_heads: heads of the fine-injection attention.
    """

    def __init__(
        self, kind: str, text_dim: int, qk_dim: int, *, coarse_formula: str = "paper",
        fine_formula: str = "paper", fine_pad_mask: bool = True, adapt_guide: bool = False,
        direct_mlp: bool = False, num_heads: int = 1,
    ) -> None:
        super().__init__()
        if kind not in INJECTIONS:
            raise ValueError(f"GuideInjector: kind={kind!r}; allowed values: {', '.join(INJECTIONS)}")
        if kind == "none" and adapt_guide:
            raise ValueError("GuideInjector: adapt_guide=True needs an injection kind other than 'none'")
        self.kind, self.coarse_formula, self.fine_formula = kind, coarse_formula, fine_formula
        self.fine_pad_mask = fine_pad_mask
        self.text_dim, self.qk_dim = text_dim, qk_dim
        needs_proj = kind != "none" and (text_dim != qk_dim or (kind == "direct" and direct_mlp))
        self.text_proj = two_layer_mlp(text_dim, qk_dim) if needs_proj else nn.Identity()
        self.guide_adapter = GatedAdapter(two_layer_mlp(qk_dim, qk_dim), qk_dim) if adapt_guide else None
        if kind == "coarse":
            self.coarse_proj = two_layer_mlp(qk_dim, 2 * qk_dim)
            self.coarse_norm = nn.LayerNorm(qk_dim, eps=LN_EPS)
        elif kind == "fine":
            self.fine_attn = MultiHeadAttention(qk_dim, num_heads)
            self.fine_norm = nn.LayerNorm(qk_dim, eps=LN_EPS)

    @property
    def needs_text_pooled(self) -> bool:
        return self.kind in ("direct", "coarse")

    @property
    def needs_text_tokens(self) -> bool:
        return self.kind == "fine"

    def _condition(self, text: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        text = self.text_proj(text.to(dtype))
        return text if self.guide_adapter is None else self.guide_adapter(text)

    def forward(
        self, queries: torch.Tensor, text_pooled: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """queries ``(B, Nq, qk_dim)``; text_pooled ``(B, text_dim)``; text_tokens ``(B, L, text_dim)``;
        text_mask ``(B, L)`` bool, True = real token. Returns ``(B, Nq, qk_dim)``."""
        if self.kind == "none":
            return queries
        b = queries.shape[0]
        if self.needs_text_pooled:
            if text_pooled is None or text_pooled.shape != (b, self.text_dim):
                got = None if text_pooled is None else tuple(text_pooled.shape)
                raise ValueError(
                    f"GuideInjector({self.kind}): text_pooled must be ({b}, {self.text_dim}), got {got}"
                )
            cond = self._condition(text_pooled, queries.dtype)[:, None, :]  # (B, 1, d)
            if self.kind == "direct":
                return cond.expand_as(queries)
            scale, shift = self.coarse_proj(cond).chunk(2, dim=-1)
            if self.coarse_formula == "paper":
                return self.coarse_norm(queries) * scale + shift
            return self.coarse_norm(queries * (1 + scale) + shift)
        check_text_tokens(text_tokens, text_mask, b, self.text_dim, "GuideInjector(fine)")
        cond = self._condition(text_tokens, queries.dtype)
        key_valid = text_mask.bool() if (self.fine_pad_mask and text_mask is not None) else None
        if self.fine_formula == "paper":
            out, _ = self.fine_attn(self.fine_norm(queries), cond, cond, key_valid)
            return out
        out, _ = self.fine_attn(queries, cond, cond, key_valid)
        return self.fine_norm(queries + out)


__all__ = [
    "GatedAdapter", "GuideInjector", "INJECTIONS", "MultiHeadAttention", "init_weights", "two_layer_mlp",
]
