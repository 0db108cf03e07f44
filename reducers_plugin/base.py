"""Shared frame of the reducers that act on a video's projected, pooled tokens (stage ``tokens``).

A subclass implements :meth:`VideoReducer.reduce_video` on one video's grid ``(T, s*s, D)`` and
:meth:`VideoReducer.count`, the number of visual tokens that call returns. This class reads the item's
layout (:class:`~reducers_plugin.layout.VideoLayout`), keeps the trailing newline last, and leaves images
and the dummy image of text-only samples as they are: the methods are defined on videos.
"""

from __future__ import annotations

import logging

import torch

from llava.model.token_reduction import TokenReducer

from .layout import VideoLayout, target_count

logger = logging.getLogger(__name__)
_FLOORS_LOGGED: set[tuple] = set()


def fill_by_count(counts: torch.Tensor, like: torch.Tensor, reduce_group) -> torch.Tensor:
    """Per-frame outputs of different lengths, computed once per distinct length and laid out frame by frame.

    Args:
        counts: ``(T,)`` tokens frame t emits.
        like: a tensor whose dtype, device and last dimension D the result takes.
        reduce_group: ``(frame indices (G,), k) -> (G, k, D)`` for the G frames that emit k tokens.

    Returns:
        ``(counts.sum(), D)``.
    """
    counts = counts.cpu()
    offsets = torch.cumsum(counts, 0) - counts
    out = like.new_empty(int(counts.sum()), like.shape[-1])
    for k in counts.unique().tolist():  # budgets split as floor/ceil: at most two lengths
        chosen = (counts == k).nonzero().flatten()
        dest = (offsets[chosen, None] + torch.arange(k)).flatten().to(like.device)
        out[dest] = reduce_group(chosen.to(like.device), k).reshape(-1, like.shape[-1])
    return out


class VideoReducer(TokenReducer):
    """Stage ``tokens`` on video items; subclasses store ``budget`` / ``ratio`` (or their own knobs) and
    ``at_floor``: whether a budget below the fewest tokens the method can produce runs at that floor
    (logged; ``num_output_tokens`` reports it) or is an error."""

    stage = "tokens"

    def reduce_video(self, grid: torch.Tensor, *signals: torch.Tensor) -> torch.Tensor:
        """``(T, s*s, D)`` tokens of one video (and its slices of :meth:`batch_signals`) -> ``(count(T, s*s), D)``."""
        raise NotImplementedError

    def batch_signals(self, batch) -> tuple[torch.Tensor, ...]:
        """What the method reads besides the tokens, for every frame of the batch (``(sum T_i, ...)`` each, the
        first ``(sum T_i, s*s)`` per token), e.g. tower attention; default: nothing."""
        return ()

    def count(self, frames: int, per_frame: int) -> int:
        """Visual tokens :meth:`reduce_video` returns for ``frames`` frames of ``per_frame`` tokens."""
        raise NotImplementedError

    def target(self, frames: int, per_frame: int) -> int:
        """N from the ``budget`` / ``ratio`` options, for a video of ``frames * per_frame`` tokens."""
        return target_count(frames * per_frame, self.budget, self.ratio)

    def floor(self, asked: int, floor: int, unit: str) -> int:
        """``floor`` when the ``at_floor`` option allows running there (logged once), else a ValueError."""
        name = type(self).__name__
        if not self.at_floor:
            raise ValueError(f"{name}: a budget of {asked} tokens is below its floor of {floor} tokens ({unit}); "
                             f"set at_floor=true to run at the floor")
        if (name, asked, floor) not in _FLOORS_LOGGED:
            _FLOORS_LOGGED.add((name, asked, floor))
            logger.warning("%s: a budget of %d tokens is below its floor; running at %d tokens (%s)", name, asked,
                           floor, unit)
        return floor

    def reduce_tokens(self, tokens: list[torch.Tensor], batch) -> list[torch.Tensor]:
        signals = [signal.split(batch.frames_per_item) for signal in self.batch_signals(batch)]
        out = []
        for i, (item, frames, modality) in enumerate(zip(tokens, batch.frames_per_item, batch.modalities)):
            if modality != "video":
                out.append(item)
                continue
            layout = VideoLayout.read(item.shape[0], frames, type(self).__name__)
            grid, newlines = layout.split(item)
            mine = [signal[i] for signal in signals]
            if mine and mine[0].shape[1] != layout.per_frame:
                raise ValueError(f"{type(self).__name__}: the tower's per-patch scores pool to {mine[0].shape[1]} "
                                 f"cells per frame but the video has {layout.per_frame} tokens per frame")
            out.append(torch.cat([self.reduce_video(grid, *mine).to(item.dtype), newlines]))
        return out

    def num_output_tokens(self, num_tokens_in: int, t: int, h: int, w: int, modality: str) -> int:
        if modality != "video":
            return num_tokens_in
        layout = VideoLayout.read(num_tokens_in, t, type(self).__name__)
        return self.count(layout.frames, layout.per_frame) + layout.newlines
