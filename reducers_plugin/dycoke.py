"""DyCoke (Tao et al., CVPR 2025) temporal token merging (TTM) on a video's pooled tokens.

Public code: ``KD-TAO/DyCoke``, ``llava/model/llava_arch.py`` (``dycole_ttm``), hooked into OneVision's
``one_token`` branch. With ``k`` = ``merging_ratio`` and ``keep = int((1 - k) * n)``:

1. frames are paired (0, 1), (2, 3), ...: frame 2j stays whole; frame 2j+1 keeps the ``keep`` tokens
   least cosine-similar to the same position of frame 2j, in ascending-similarity order (``topk`` order);
2. for i = 0, 4, 8, ... < T - 4, frame i + 2 is pruned the same way against frame i.

So each group of four frames keeps one whole frame (the last group two). Tokens count
``(P - G) n + (P + G) keep`` for ``P = T // 2`` pairs and ``G = len(range(0, T - 4, 4))``.

Deviations (named options): the original drops the last frame of an odd T; ``keep_odd_last_frame=True``
(default) keeps it whole instead (``False``: as the original). The original fails for T <= 4 (an empty
``torch.stack``); here the second step simply has nothing to do. DyCoke's decode-time KV selection is
:class:`DyCokeKV`, a reducer of its own (a reducer acts at one stage).

Budget: ``merging_ratio`` sets the count (the original's knob; default 0.7 as its lmms-eval wrapper);
``budget`` / ``ratio`` instead pick the largest ``keep`` whose count is ``<= N``. The count cannot go
below ``keep = 0`` (about (T/4 + 1) n, 28 % of M at 32 frames): a smaller N runs at that floor
(``at_floor=True``, the default; logged) or is an error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llava.model.token_reduction import DecodeContext, TokenReducer

from .base import VideoReducer
from .layout import target_count


class DyCokeTTM(VideoReducer):
    """Options: ``merging_ratio`` or ``budget`` / ``ratio``; ``at_floor``; ``keep_odd_last_frame``."""

    def __init__(self, merging_ratio: float | None = None, budget: int | None = None, ratio: float | None = None,
                 at_floor: bool = True, keep_odd_last_frame: bool = True):
        super().__init__()
        given = [name for name, value in (("merging_ratio", merging_ratio), ("budget", budget), ("ratio", ratio))
                 if value is not None]
        if len(given) > 1:
            raise ValueError(f"set one of merging_ratio, budget, ratio; got {', '.join(given)}")
        if not given:
            merging_ratio = 0.7
        if merging_ratio is not None and not 0 <= merging_ratio <= 1:
            raise ValueError(f"merging_ratio must be in [0, 1], got {merging_ratio!r}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budget must be a positive integer number of tokens, got {budget!r}")
        if ratio is not None and not 0 < ratio <= 1:
            raise ValueError(f"ratio must be a kept fraction in (0, 1], got {ratio!r}")
        self.merging_ratio, self.budget, self.ratio = merging_ratio, budget, ratio
        self.at_floor, self.keep_odd_last_frame = at_floor, keep_odd_last_frame

    @staticmethod
    def frame_roles(frames: int) -> tuple[int, int, bool]:
        """``(P, G, odd)``: pairs, pruned even frames, whether an odd last frame is left over."""
        return frames // 2, len(range(0, frames - 4, 4)), frames % 2 == 1

    def _count_for(self, frames: int, per_frame: int, keep: int) -> int:
        pairs, pruned_even, odd = self.frame_roles(frames)
        last = per_frame if odd and self.keep_odd_last_frame else 0
        return (pairs - pruned_even) * per_frame + (pairs + pruned_even) * keep + last

    def keep_per_pruned_frame(self, frames: int, per_frame: int) -> int:
        """Tokens a pruned frame keeps."""
        if self.merging_ratio is not None:
            return int((1 - self.merging_ratio) * per_frame)
        total = target_count(frames * per_frame, self.budget, self.ratio)
        pairs, pruned_even, _ = self.frame_roles(frames)
        floor = self._count_for(frames, per_frame, 0)
        if total < floor:
            self.floor(total, floor, f"{frames} frames of {per_frame}, no token of a pruned frame kept")
            return 0
        pruned = pairs + pruned_even
        return per_frame if pruned == 0 else min(per_frame, (total - floor) // pruned)

    def count(self, frames: int, per_frame: int) -> int:
        return self._count_for(frames, per_frame, self.keep_per_pruned_frame(frames, per_frame))

    def kept_indices(self, grid: torch.Tensor) -> torch.Tensor:
        """Flat indices into ``grid.flatten(0, 1)``, in DyCoke's output order."""
        frames, per_frame, _ = grid.shape
        keep = self.keep_per_pruned_frame(frames, per_frame)
        pairs, pruned_even, odd = self.frame_roles(frames)
        unit = F.normalize(grid.float(), dim=-1)
        # (1) odd frame 2j+1 against frame 2j; (2) even frame i+2 against frame i, i = 0, 4, ...
        odd_sims = (unit[1 : 2 * pairs : 2] * unit[0 : 2 * pairs : 2]).sum(-1)  # (P, n)
        pruned_frames = [2 * j + 1 for j in range(pairs)]
        sims = [odd_sims]
        if pruned_even:
            even = torch.arange(pruned_even, device=grid.device) * 4
            sims.append((unit[even + 2] * unit[even]).sum(-1))
            pruned_frames += (even + 2).tolist()
        local = torch.cat(sims).topk(keep, dim=-1, largest=False).indices  # (P + G, keep)
        rows = {frame: local[i] for i, frame in enumerate(pruned_frames)}
        whole = torch.arange(per_frame, device=grid.device)
        used = 2 * pairs + (1 if odd and self.keep_odd_last_frame else 0)
        return torch.cat([rows.get(f, whole) + f * per_frame for f in range(used)])

    def reduce_video(self, grid: torch.Tensor) -> torch.Tensor:
        return grid.flatten(0, 1)[self.kept_indices(grid)]


class DyCokeKV(TokenReducer):
    """DyCoke's second stage, dynamic KV-cache selection while decoding (stage ``decode``).

    Public code: ``KD-TAO/DyCoke`` ``llava/model/language_model/modeling_qwen2.py`` (``PrunableDynamicCache``).
    At every decoding step, the new token's attention at layer ``layer - 1`` (averaged over heads) over the
    prompt's visual tokens is compared with the previous step's by cosine similarity (0 at the first
    step). Below ``threshold`` (0.9), layers ``>= layer`` of this step attend only to the
    ``int(M (1 - prune_ratio))`` visual tokens of highest attention, plus all text and decoded tokens. At or
    above it, the code lets layers ``>= layer`` attend to the whole cache for that step
    (``unchanged="full"``, default); ``unchanged="previous"`` keeps the last selection instead. Masking only:
    the cache keeps every position (as the original, which gathers on read). Defaults: layer 3, 0.8 pruned
    (its lmms-eval wrapper). Multiple-choice answers are read from the prompt forward, which this stage
    leaves alone.
    """

    stage = "decode"

    def __init__(self, layer: int = 3, prune_ratio: float = 0.8, threshold: float = 0.9, unchanged: str = "full"):
        super().__init__()
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
            raise ValueError(f"layer must be an integer >= 1 (it scores with layer - 1), got {layer!r}")
        if not 0 <= prune_ratio < 1:
            raise ValueError(f"prune_ratio must be in [0, 1), got {prune_ratio!r}")
        if unchanged not in ("full", "previous"):
            raise ValueError(f"unchanged must be 'full' or 'previous', got {unchanged!r}")
        self.layer, self.prune_ratio, self.threshold, self.unchanged = layer, prune_ratio, threshold, unchanged
        self.llm_layer, self.llm_attention_layer = layer, layer - 1
        self._previous: list[torch.Tensor | None] = []

    def select_in_cache(self, ctx: DecodeContext) -> list[torch.Tensor] | None:
        if ctx.step == 0:
            self._previous = [None] * ctx.visual_mask.shape[0]
        scores = ctx.attention[:, :, -1].mean(dim=1)  # (B, P + Q): the new token, averaged over heads
        kept, changed = [], False
        for row in range(scores.shape[0]):  # rows hold different visual spans
            visual = ctx.visual_mask[row].nonzero().flatten()
            current = scores[row, visual]
            previous = self._previous[row]
            similarity = 0.0 if previous is None else float(F.cosine_similarity(current, previous, dim=0))
            self._previous[row] = current
            if similarity < self.threshold:
                changed = True
                keep = current.topk(int(visual.numel() * (1 - self.prune_ratio))).indices
                kept.append(visual[keep].sort().values)
            elif self.unchanged == "full":
                kept.append(visual)
            else:
                kept.append((ctx.keep[row] & ctx.visual_mask[row]).nonzero().flatten())
        return kept if changed or self.unchanged == "full" else None
