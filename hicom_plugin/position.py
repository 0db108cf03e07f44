"""3-D sin/cos position embeddings of the global branch, in the paper's and the release's form.

Both are built from the same 1-D table over ``c`` channels,
``PE(p)[i] = sin(p / 10000^(2*floor(i/2)/c))`` for even ``i`` and ``cos(...)`` for odd ``i``:

* ``"split"`` (paper, appendix A): the channels are divided 3/8, 3/8, 2/8 between t, h and w; each
  axis gets its own table over its share and the three are concatenated. ``(1, 2, 3)`` and
  ``(3, 2, 1)`` get different embeddings.
* ``"sum"`` (release): three full-width tables, one per axis, are summed. The result is symmetric in
  the axes: ``(1, 2, 3)`` and ``(3, 2, 1)`` get the same embedding.

Either way ``Pos[t, h, w] = E_t[t] + E_h[h] + E_w[w]``, each ``E_a`` being axis ``a``'s table placed on
its channels (its own slice, or all of them). :class:`PositionGrid` keeps that factored form, so the
global branch can add ``Pos`` to its ~23k keys and values without ever building the
``(t, h, w, dim)`` tensor (see ``MultiHeadAttention.forward_folded``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POS_EMB_FORMS = ("split", "sum")


def sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """``(num_positions, dim)`` float32 CPU table of positions ``0..num_positions-1``."""
    if num_positions < 1 or dim < 1:
        raise ValueError(f"sincos_table: num_positions={num_positions} and dim={dim} must be >= 1")
    # An explicit device, so that building a model under a meta-device context still gives real tables.
    pos = torch.arange(num_positions, dtype=torch.float64, device="cpu")[:, None]
    channel = torch.arange(dim, dtype=torch.float64, device="cpu")
    angle = pos / torch.pow(10000.0, 2 * torch.div(channel, 2, rounding_mode="floor") / dim)
    table = torch.where(channel % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


def split_channels(dim: int) -> tuple[int, int, int]:
    """Channels of (t, h, w) in the ``"split"`` form: 3/8, 3/8 (rounded down to even), the rest to w."""
    if dim < 8:
        raise ValueError(f"split position embedding needs dim >= 8, got {dim}")
    d_th = 2 * ((3 * dim) // 16)
    return d_th, d_th, dim - 2 * d_th


def position_embedding_3d(t: int, h: int, w: int, dim: int, form: str = "split") -> torch.Tensor:
    """``(t, h, w, dim)`` float32 embedding of every grid position (computed, not cached)."""
    return PositionEmbedding3D(dim, form, max_positions=max(t, h, w))(t, h, w)


class PositionEmbedding3D(nn.Module):
    """Cached 1-D tables, combined on demand into a ``(t, h, w, dim)`` embedding.

    The tables cover ``max_positions`` positions per axis and are rebuilt larger when an input needs
    more. They are plain float32 tensors, not buffers: never in checkpoints, and never rounded by
    ``module.to(torch.bfloat16)``; the sum is cast to the requested dtype once, at the end.
    """

    def __init__(self, dim: int, form: str = "split", max_positions: int = 128) -> None:
        super().__init__()
        if form not in POS_EMB_FORMS:
            raise ValueError(f"PositionEmbedding3D: form={form!r}; allowed values: {', '.join(POS_EMB_FORMS)}")
        self.dim = dim
        self.form = form
        self.widths = split_channels(dim) if form == "split" else (dim, dim, dim)
        self.num_positions = max_positions
        self._tables = [sincos_table(max_positions, width) for width in self.widths]

    def grid(
        self, t: int, h: int, w: int, dtype: torch.dtype | None = None, device: torch.device | None = None
    ) -> PositionGrid:
        """The embedding of a ``(t, h, w)`` grid in factored form, tables in ``dtype`` (default float32)."""
        if max(t, h, w) > self.num_positions:
            self.num_positions = max(t, h, w, 2 * self.num_positions)
            self._tables = [sincos_table(self.num_positions, width) for width in self.widths]
        if device is not None and self._tables[0].device != torch.device(device):
            self._tables = [table.to(device) for table in self._tables]
        starts = (0, 0, 0) if self.form == "sum" else (0, self.widths[0], self.widths[0] + self.widths[1])
        tables = [table[:n] if dtype is None else table[:n].to(dtype)
                  for table, n in zip(self._tables, (t, h, w))]
        return PositionGrid(tables, starts, self.dim)

    def forward(
        self, t: int, h: int, w: int, dtype: torch.dtype | None = None, device: torch.device | None = None
    ) -> torch.Tensor:
        """Returns the ``(t, h, w, dim)`` embedding, in ``dtype`` (default float32) on ``device``."""
        out = self.grid(t, h, w, device=device).dense()  # summed in float32, rounded once
        return out if dtype is None else out.to(dtype)


class PositionGrid:
    """``Pos[t, h, w] = sum_a E_a[p_a]`` over a ``(t, h, w)`` grid, kept as its three per-axis tables.

    Args:
        tables: ``(t, c_t)``, ``(h, c_h)``, ``(w, c_w)``: the 1-D tables of the grid's positions.
        starts: first channel of each table inside the ``dim`` channels.
        dim: channels of the embedding.

    Grid positions are flattened row-major over ``(t, h, w)``, as the keys of the global branch are.
    """

    def __init__(self, tables: list[torch.Tensor], starts: tuple[int, int, int], dim: int) -> None:
        self.tables, self.starts, self.dim = tables, starts, dim
        self.shape = tuple(table.shape[0] for table in tables)

    def _channels(self, axis: int) -> slice:
        return slice(self.starts[axis], self.starts[axis] + self.tables[axis].shape[1])

    def _placed(self, part: torch.Tensor, axis: int) -> torch.Tensor:
        """``(..., c_a)`` -> ``(..., dim)``, zero outside axis ``a``'s channels."""
        start = self.starts[axis]
        return F.pad(part, (start, self.dim - start - part.shape[-1]))

    def dense(self) -> torch.Tensor:
        """The ``(t, h, w, dim)`` embedding itself."""
        pe_t, pe_h, pe_w = (self._placed(table, axis) for axis, table in enumerate(self.tables))
        return pe_t[:, None, None] + pe_h[None, :, None] + pe_w[None, None, :]

    def dot(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., dim)`` -> ``(..., t*h*w)``: ``x . Pos[p]`` for every grid position ``p``."""
        d_t, d_h, d_w = (x[..., self._channels(axis)] @ table.T for axis, table in enumerate(self.tables))
        out = d_t[..., :, None, None] + d_h[..., None, :, None] + d_w[..., None, None, :]
        return out.flatten(-3)

    def pool(self, weights: torch.Tensor) -> torch.Tensor:
        """``weights (..., t*h*w)`` -> ``(..., dim)``: ``sum_p weights[p] Pos[p]``."""
        grid = weights.unflatten(-1, self.shape)
        marginals = (grid.sum((-2, -1)), grid.sum((-3, -1)), grid.sum((-3, -2)))  # over t, h, w
        return sum(self._placed(m @ table, axis) for axis, (m, table) in enumerate(zip(marginals, self.tables)))


__all__ = ["PositionEmbedding3D", "PositionGrid", "position_embedding_3d", "sincos_table", "split_channels"]
