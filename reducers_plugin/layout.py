"""A video item's LLM tokens as the token-wise OneVision path lays them out, and budget arithmetic.

After the projector and OneVision's per-frame 2x2 pooling, a video of T frames is ``T * s * s`` tokens
in raster order, frame after frame, with the newline tokens of ``config.mm_newline_position``. The
reducers here read the layout back from the count alone (:meth:`VideoLayout.read`):

================ ======================== ==================================================
newline position tokens of one item       the reducers emit
================ ======================== ==================================================
``one_token``    ``T * s^2 + 1``          the reduced tokens, then the newline (as given)
``no_token``     ``T * s^2``              the reduced tokens
``frame``        ``T * (s^2 + 1)``        the reduced tokens, then ONE newline
``grid``         ``T * s * (s + 1)``      the reduced tokens, then ONE newline
================ ======================== ==================================================

For ``T, s >= 1`` no count fits two rows of the table, so the reading is unambiguous. Pruned or merged
tokens have no rows or frames left to end, so the per-row (LLaVA-Video, lmms-eval's ``llava_vid``) and
per-frame newlines are replaced by OneVision's single trailing newline; the budget N never counts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


#: newline position -> newline tokens of T frames of side s
NEWLINES = {
    "one_token": lambda t, s: 1,
    "no_token": lambda t, s: 0,
    "frame": lambda t, s: t,
    "grid": lambda t, s: t * s,
}


@dataclass(frozen=True)
class VideoLayout:
    """``frames`` x ``side`` x ``side`` visual tokens with the newlines of ``position`` (see the table)."""

    frames: int
    side: int
    position: str

    @property
    def newlines(self) -> int:
        """Newline tokens the reducers emit: one, or none for ``no_token``."""
        return 0 if self.position == "no_token" else 1

    @property
    def per_frame(self) -> int:
        return self.side * self.side

    @property
    def num_visual(self) -> int:
        """M: visual tokens without the newline."""
        return self.frames * self.per_frame

    @classmethod
    def read(cls, num_tokens: int, frames: int, where: str) -> VideoLayout:
        """The layout of a video item of ``num_tokens`` tokens and ``frames`` frames.

        Raises:
            ValueError: the count fits no supported layout (``where`` names the reducer).
        """
        if frames >= 1:
            side = math.isqrt(num_tokens // frames)  # s in every layout: s^2 <= L // T < (s + 1)^2
            for position, newlines in NEWLINES.items():
                if side >= 1 and frames * side * side + newlines(frames, side) == num_tokens:
                    return cls(frames, side, position)
        raise ValueError(
            f"{where}: a video item of {num_tokens} tokens over {frames} frames is not T*s*s visual tokens with "
            f"the newlines of mm_newline_position one_token, no_token, frame or grid"
        )

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, D)`` -> the visual grid ``(T, s*s, D)`` and the newline the reducers emit ``(newlines, D)``."""
        t, s, dim = self.frames, self.side, tokens.shape[-1]
        if self.position == "frame":
            frames = tokens.reshape(t, s * s + 1, dim)
            return frames[:, :-1], frames[0, -1:]
        if self.position == "grid":
            rows = tokens.reshape(t, s, s + 1, dim)
            return rows[:, :, :-1].reshape(t, s * s, dim), rows[0, 0, -1:]
        visual = tokens[: self.num_visual]
        return visual.reshape(t, s * s, dim), tokens[self.num_visual :]


def target_count(total: int, budget: int | None, ratio: float | None) -> int:
    """N: the visual tokens to keep out of ``total``, from ``budget`` (tokens) or ``ratio`` (kept fraction).

    A budget above ``total`` keeps everything; a ratio rounds half up and keeps at least one token.
    """
    if budget is not None:
        return min(budget, total)
    return min(total, max(1, math.floor(ratio * total + 0.5)))


def budget_options(budget: int | None, ratio: float | None, default_ratio: float) -> tuple[int | None, float | None]:
    """``(budget, ratio)`` checked: at most one set (neither: ``ratio = default_ratio``); ``budget`` an int
    >= 1, ``ratio`` in (0, 1]."""
    if budget is None and ratio is None:
        ratio = default_ratio
    if budget is not None and ratio is not None:
        raise ValueError(f"set exactly one of budget (tokens) and ratio (kept fraction), got budget={budget!r}, "
                         f"ratio={ratio!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise ValueError(f"budget must be a positive integer number of tokens, got {budget!r}")
    if ratio is not None and not (isinstance(ratio, (int, float)) and 0 < ratio <= 1):
        raise ValueError(f"ratio must be a kept fraction in (0, 1], got {ratio!r}")
    return budget, ratio


def apportion(shares: torch.Tensor, total: int, low: int, high: int) -> torch.Tensor:
    """Integers ``k`` with ``low <= k <= high`` and ``k.sum() == total``, closest to real ``shares`` ``(T,)``.

    Largest-remainder rounding: start from ``floor(shares)`` clipped to ``[low, high]``, then add one to
    the entries with the largest remainders (or take one from those with the smallest) until the sum is
    ``total``. Ties go to the earlier entry. ``T * low <= total <= T * high`` is the caller's to check.
    """
    counts = shares.floor().clamp(low, high).long()
    while (gap := total - int(counts.sum())) != 0:
        remainder = shares - counts
        room = counts < high if gap > 0 else counts > low
        order = torch.argsort(torch.where(room, remainder, -math.inf if gap > 0 else math.inf),
                              descending=gap > 0, stable=True)
        step = order[: min(abs(gap), int(room.sum()))]
        counts[step] += 1 if gap > 0 else -1
    return counts
