"""FastVID (Shen et al., NeurIPS 2025): dynamic segmentation, salient tokens, density-based temporal merging.

Public code: ``LunarShen/FastVID``, ``fastvid_llavaonevision/LLaVA-NeXT/llava/model/language_model/
modeling_qwen2.py`` (the block run before layer 0) and its ``SigLipVisionAbstract``. On one video's
projected, pooled tokens ``(T, n, D)``:

* frame signals from SigLIP's attention-pooling (MAP) head applied to the tower's features after the
  post-layernorm: the probe's head-averaged attention ``(T, H*W)``, pooled per frame like the tokens, and the
  pooled output ``(T, D_v)`` (the head is read from the tower folder, as the original re-loads it: LLaVA
  checkpoints drop it; it was trained on the 27th layer but sees the selected one, as in the original);
* DySeg: cosine similarity of consecutive frame descriptors; cut at its ``segments - 1`` smallest values
  and wherever it is below ``tau``;
* per frame ``retain = int(n r)`` tokens: ``salient = retain - int(retain * context_ratio)`` by MAP attention
  (ATS), the rest as context;
* density score of each non-salient token in its frame: DPC-kNN (k = 4) on the tokens, distance
  ``|x - y| / sqrt(D)``, density ``exp(-mean of the 4 smallest squared distances)`` plus a ``1e-6`` uniform
  noise (seeded here by ``seed``), times the distance to the nearest denser token;
* anchors: a segment of length l gets ``context * l`` anchors, spread over every ``anchor_stride``-th frame
  counted back from its end; each anchor frame takes its highest-score tokens; every non-salient token of
  the segment (of the frame alone for a one-frame segment) joins its most cosine-similar anchor of that frame,
  and the anchor becomes ``w anchor + (1 - w) mean(members)``, ``w = max(1 / (members + 1), merge_weight)``;
* the tokens are sorted by original index.

Deviations (named): ``exact_budget=True`` (default; adapted) gives a segment's anchor frames
``context * l`` anchors in total (split as evenly as possible) where the original's floor loses up to one
per anchor frame, so every video keeps exactly ``T * retain`` tokens; ``False`` is the original.
The LLM sees the kept tokens with compact positions (the core's token stage), where the original keeps
their original RoPE positions. Defaults are the paper's OneVision script: r = 0.10, 8 segments,
tau = 0.9, context_ratio = 0.4, anchor_stride = 4, merge_weight = 0.6. ``budget`` N gives ``retain = N // T``.
"""

from __future__ import annotations

import math
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

from llava.model.llava_arch import pool_stride, spatial_pool
from llava.model.weights import load_part_strictly

from .base import VideoReducer
from .layout import target_count
from .pooling import per_frame_counts

DENSITY_NEIGHBOURS = 4
DENSITY_NOISE = 1e-6


def dyseg(descriptors: torch.Tensor, segments: int, tau: float) -> list[int]:
    """``(T, D_v)`` frame descriptors -> segment lengths (summing to T)."""
    frames = descriptors.shape[0]
    unit = descriptors / descriptors.norm(dim=1, keepdim=True)
    similarity = (unit[:-1] * unit[1:]).sum(dim=1)
    smallest = similarity.topk(min(segments - 1, similarity.numel()), largest=False).indices
    cuts = torch.cat([smallest, (similarity < tau).nonzero().flatten()]).unique()  # sorted
    bounds = torch.cat([cuts.new_tensor([-1]), cuts, cuts.new_tensor([frames - 1])])
    return bounds.diff().tolist()


def density_scores(tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """DPC-kNN score ``density * distance to the nearest denser token`` per frame: ``(T, m, D)`` -> ``(T, m)``."""
    x = tokens.float()
    dist = torch.cdist(x, x) / math.sqrt(x.shape[-1])
    nearest = dist.topk(min(DENSITY_NEIGHBOURS, x.shape[1]), dim=-1, largest=False).values
    density = (-(nearest**2).mean(dim=-1)).exp()
    density = density + torch.rand(density.shape, generator=generator).to(density.device) * DENSITY_NOISE
    denser = density[:, None, :] > density[:, :, None]  # [t, i, j]: j is denser than i
    far = dist.flatten(1).max(dim=-1).values[:, None, None]
    return torch.where(denser, dist, far).min(dim=-1).values * density


def merge_into_anchors(anchors: torch.Tensor, members: torch.Tensor, merge_weight: float) -> torch.Tensor:
    """``anchors (G, k, D)`` absorb ``members (G, m, D)`` (each joins its most cosine-similar anchor):
    ``w anchor + (1 - w) mean``, ``w = max(1 / (count + 1), merge_weight)``."""
    unit = F.normalize(members.float(), dim=-1)
    similarity = unit @ F.normalize(anchors.float(), dim=-1).transpose(1, 2)  # (G, m, k)
    assign = F.one_hot(similarity.argmax(dim=2), anchors.shape[1]).to(members.dtype)
    count = assign.sum(dim=1)[..., None]
    weight = (1 / (count + 1)).clamp(min=merge_weight)
    mean = assign.transpose(1, 2) @ members / count.clamp(min=1)
    return weight * anchors + (1 - weight) * mean


def map_head_signals(head: SiglipMultiheadAttentionPoolingHead, post_layernorm: torch.nn.Module,
                     features: torch.Tensor, stride: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, H, W, D_v)`` tower features -> the MAP probe's head-averaged attention pooled like the tokens
    ``(N, h*w)`` and the pooled descriptors ``(N, D_v)``, float32."""
    x = post_layernorm(features.flatten(1, 2)).to(head.probe.dtype)
    pooled, attention = head.attention(head.probe.expand(x.shape[0], -1, -1), x, x)  # attention: (N, 1, H*W)
    pooled = pooled + head.mlp(head.layernorm(pooled))
    return spatial_pool(attention.transpose(1, 2).float(), stride, mode)[..., 0], pooled[:, 0].float()


class FastVID(VideoReducer):
    """Options: ``ratio`` (r) or ``budget``; ``segments``, ``tau``, ``context_ratio``, ``anchor_stride``,
    ``merge_weight``, ``seed``, ``exact_budget``, ``at_floor`` (floor: one token per frame)."""

    def __init__(self, ratio: float | None = None, budget: int | None = None, segments: int = 8, tau: float = 0.9,
                 context_ratio: float = 0.4, anchor_stride: int = 4, merge_weight: float = 0.6, seed: int = 0,
                 exact_budget: bool = True, at_floor: bool = True):
        super().__init__()
        if ratio is not None and budget is not None:
            raise ValueError(f"set ratio or budget, not both (got {ratio!r} and {budget!r})")
        if ratio is None and budget is None:
            ratio = 0.10
        if ratio is not None and not 0 < ratio <= 1:
            raise ValueError(f"ratio must be a kept fraction in (0, 1], got {ratio!r}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budget must be a positive integer number of tokens, got {budget!r}")
        if segments < 1 or anchor_stride < 1 or not 0 <= context_ratio < 1:
            raise ValueError(f"need segments >= 1, anchor_stride >= 1, 0 <= context_ratio < 1; got {segments}, "
                             f"{anchor_stride}, {context_ratio}")
        self.ratio, self.budget, self.segments, self.tau = ratio, budget, segments, tau
        self.context_ratio, self.anchor_stride, self.merge_weight = context_ratio, anchor_stride, merge_weight
        self.seed, self.exact_budget, self.at_floor = seed, exact_budget, at_floor
        self._model = None
        self._head: SiglipMultiheadAttentionPoolingHead | None = None

    # ------------------------------------------------------------------ budget

    def retain(self, frames: int, per_frame: int) -> int:
        """Tokens kept per frame: ``int(n r)`` (the original), or ``N // T`` for a budget."""
        if self.budget is not None:
            keep = target_count(frames * per_frame, self.budget, None) // frames
        else:
            keep = int(per_frame * self.ratio)
        return keep if keep >= 1 else self.floor(keep * frames, frames, f"one per frame, {frames} frames") // frames

    def split(self, frames: int, per_frame: int) -> tuple[int, int]:
        """``(salient, context)`` tokens per frame."""
        keep = self.retain(frames, per_frame)
        salient = keep - int(keep * self.context_ratio)
        return salient, keep - salient

    def count(self, frames: int, per_frame: int) -> int:
        if not self.exact_budget:
            raise ValueError("fastvid with exact_budget=False keeps a data-dependent count (anchor floors lose a few "
                             "tokens per segment), which cannot be announced before the video is seen")
        return frames * self.retain(frames, per_frame)

    def anchor_quotas(self, lengths: list[int], context: int) -> torch.Tensor:
        """``(T,)`` anchors each frame takes (0: not an anchor frame)."""
        quotas = torch.zeros(sum(lengths), dtype=torch.long)
        offset = 0
        for length in lengths:
            anchor_frames = [offset + j for j in range(length) if (length - 1 - j) % self.anchor_stride == 0]
            total = context * length
            if self.exact_budget:
                quotas[anchor_frames] = per_frame_counts(total, len(anchor_frames))
            else:
                quotas[anchor_frames] = total // len(anchor_frames)
            offset += length
        return quotas

    # ------------------------------------------------------------------ the tower's head

    def attach(self, model) -> None:
        tower = model.get_vision_tower() if hasattr(model, "get_vision_tower") else None
        vision = getattr(tower, "vision_model", None)
        if vision is None or not hasattr(vision, "post_layernorm") or not hasattr(tower, "vision_tower_name"):
            raise ValueError(f"fastvid needs a SigLIP vision tower with its attention-pooling head; the tower "
                             f"{type(tower).__name__} cannot give its attention maps")
        if not isinstance(getattr(vision, "head", None), SiglipMultiheadAttentionPoolingHead):
            _check_head_in_folder(Path(tower.vision_tower_name))
        self._model = weakref.ref(model)
        self._head = None

    def detach(self) -> None:
        self._model = self._head = None

    def _pooling_head(self, tower) -> SiglipMultiheadAttentionPoolingHead:
        """SigLIP's MAP head: the tower's own if it kept it, else read from the tower folder (once)."""
        own = getattr(tower.vision_model, "head", None)
        if isinstance(own, SiglipMultiheadAttentionPoolingHead):
            return own
        if self._head is None:
            head = SiglipMultiheadAttentionPoolingHead(tower.config)
            try:
                load_part_strictly(head, tower.vision_tower_name, "vision_model.head.",
                                   "fastvid's attention-pooling head")
            except (FileNotFoundError, KeyError) as err:
                raise ValueError(f"fastvid needs SigLIP's attention-pooling head, which LLaVA checkpoints do not "
                                 f"carry; it is read from the vision tower folder (config mm_vision_tower): "
                                 f"{err}") from err
            self._head = head.eval()
        return self._head

    def frame_signals(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, H, W, D_v)`` tower features -> MAP attention ``(N, H*W)`` and pooled descriptors ``(N, D_v)``."""
        model = self._model() if self._model is not None else None
        if model is None:
            raise RuntimeError("fastvid: not attached to a model (select it with set_token_reducer)")
        tower = model.get_vision_tower()
        head = self._pooling_head(tower)
        if head is self._head:  # ours: follow the features' device (the tower's own is already there)
            head.to(device=features.device)
        mode = getattr(model.config, "mm_spatial_pool_mode", "bilinear")
        return map_head_signals(head, tower.vision_model.post_layernorm, features, pool_stride(model.config), mode)

    # ------------------------------------------------------------------ the method

    def kept_and_merged(self, grid: torch.Tensor, attention: torch.Tensor,
                        descriptors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``grid (T, n, D)``, pooled MAP ``attention (T, n)``, ``descriptors (T, D_v)`` -> the kept tokens
        ``(K, D)`` and their original flat indices ``(K,)``, sorted by index."""
        frames, per_frame, dim = grid.shape
        salient, context = self.split(frames, per_frame)
        lengths = dyseg(descriptors.float(), self.segments, self.tau)
        quotas = self.anchor_quotas(lengths, context)
        flat = torch.arange(frames * per_frame, device=grid.device).view(frames, per_frame)
        top = attention.topk(salient, dim=1).indices
        rest_mask = torch.ones(frames, per_frame, dtype=torch.bool, device=grid.device)
        rest_mask.scatter_(1, top, False)
        rest_index = flat[rest_mask].view(frames, -1)  # raster order
        rest = grid.flatten(0, 1)[rest_index]  # (T, m, D)
        tokens, index = [grid.flatten(0, 1)[flat.gather(1, top)].flatten(0, 1)], [flat.gather(1, top).flatten()]
        if context == 0 or rest.shape[1] == 0:
            return _sorted(tokens, index)
        score = density_scores(rest, torch.Generator().manual_seed(self.seed))

        def anchor(chosen: torch.Tensor, k: int, members: torch.Tensor) -> None:
            """Frames ``chosen (G,)`` take k anchors each and absorb ``members (G, m', D)``."""
            picks = score[chosen].topk(min(k, rest.shape[1]), dim=1).indices  # (G, k)
            tokens.append(merge_into_anchors(rest[chosen[:, None], picks], members, self.merge_weight).flatten(0, 1))
            index.append(rest_index[chosen[:, None], picks].flatten())

        # one-frame segments together (each frame merges within itself), then each longer segment
        starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
        single = starts[torch.tensor(lengths) == 1].to(grid.device)
        if single.numel():
            anchor(single, context, rest[single])
        for start, length in zip(starts.tolist(), lengths):
            if length == 1:
                continue
            seg = slice(start, start + length)
            for k in quotas[seg].unique().tolist():  # anchor frames with k anchors (one or two values)
                if k:
                    chosen = (quotas[seg] == k).nonzero().flatten().to(grid.device) + start
                    anchor(chosen, k, rest[seg].flatten(0, 1).expand(chosen.numel(), -1, -1))
        return _sorted(tokens, index)

    def batch_signals(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frame_signals(batch.features)

    def reduce_video(self, grid: torch.Tensor, attention: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
        return self.kept_and_merged(grid, attention, descriptors)[0]


def _check_head_in_folder(folder: Path) -> None:
    """Fails now, when the reducer is selected, if the tower folder cannot give the head (keys only, no tensors
    read; a ``.bin`` checkpoint is checked when the head is loaded)."""
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files and not any(folder.glob("*.bin")):
        raise ValueError(f"fastvid needs SigLIP's attention-pooling head, which LLaVA checkpoints do not carry; it is "
                         f"read from the vision tower folder (config mm_vision_tower), and {folder} has no weights")
    if files and not any("vision_model.head.probe" in safe_open(f, "pt").keys() for f in files):
        raise ValueError(f"fastvid needs SigLIP's attention-pooling head, which LLaVA checkpoints do not carry; the "
                         f"vision tower folder {folder} (config mm_vision_tower) has no vision_model.head weights")


def _sorted(tokens: list[torch.Tensor], index: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    index_all = torch.cat(index)
    order = index_all.argsort()
    return torch.cat([t.to(tokens[0].dtype) for t in tokens])[order], index_all[order]
