"""``MERVProjector`` (``mm_projector_type: merv``): align every encoder to one ``(t, h, w)`` grid,
project each to the LLM width, and mix them.

Per encoder ``e`` (MERV's ``AveragePooling3DProjector`` with the ``linear`` head, ``merv/util/nn_utils.py``):
its features ``(t_e, h_e, w_e, D_e)`` per item are 3D-adaptive-average-pooled to ``(t, h, w)``
(``config.merv_config.grid``; MERV: 16 x 8 x 8), flattened in ``(t, h, w)`` order, and mapped by
``projectors.<e>`` (Linear ``D_e -> d``). The mixer (:mod:`merv_plugin.mixer`) fuses the encoders; with
the default ``cross_attention_avg_lq`` the output has ``t*h*w`` tokens for any number of encoders, and
no projector follows it.

The pooling runs on the whole micro-batch: a 2D adaptive pool over every frame at once, then one matrix
product that averages each item's temporal windows (items of different lengths alike). Adaptive
average pooling is separable, so this equals ``adaptive_avg_pool3d`` per item.

With a tower that has no ``encoders`` (the stock SigLIP tower) the projector treats ``features`` as its
one encoder: MERV's single-encoder baselines.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llava.model.multimodal_projector.base import StructuredProjector, VisualBatch
from llava.model.multimodal_projector.builder import register_projector
from llava.model.visual import EncoderFeatures

from .config import merv_config_from
from .mixer import MIXERS

SINGLE = "features"  # the encoder name of a tower without ``encoders``


def temporal_pool_matrix(frames: list[int], slots: list[int], device=None, dtype=None) -> torch.Tensor:
    """``(sum slots, sum frames)``: row ``j`` of item ``i`` averages frames ``floor(j T_i / t_i)`` to
    ``ceil((j + 1) T_i / t_i) - 1`` of that item (adaptive average pooling's windows)."""
    frames_t = torch.tensor(frames, device=device)
    slots_t = torch.tensor(slots, device=device)
    item = torch.repeat_interleave(torch.arange(len(frames), device=device), slots_t)
    slot_start = torch.cumsum(slots_t, 0) - slots_t
    frame_start = torch.cumsum(frames_t, 0) - frames_t
    j = torch.arange(int(slots_t.sum()), device=device) - slot_start[item]
    length, count = frames_t[item], slots_t[item]
    first = torch.div(j * length, count, rounding_mode="floor")
    end = torch.div((j + 1) * length + count - 1, count, rounding_mode="floor")
    col = torch.arange(int(frames_t.sum()), device=device)[None, :] - frame_start[item][:, None]
    inside = (col >= first[:, None]) & (col < end[:, None])
    return inside.to(dtype or torch.float32) / (end - first).to(dtype or torch.float32)[:, None]


def pool_to_grid(enc: EncoderFeatures, slots: list[int], size: tuple[int, int]) -> torch.Tensor:
    """One encoder's ``(sum T_i, h_e, w_e, D)`` -> ``(sum_i slots_i * h * w, D)``, each item pooled to
    ``(slots_i, h, w)`` and flattened in ``(t, h, w)`` order."""
    feats = enc.features
    spatial = F.adaptive_avg_pool2d(feats.permute(0, 3, 1, 2), size)  # (sum T, D, h, w)
    matrix = temporal_pool_matrix(enc.frames_per_item, slots, feats.device, spatial.dtype)
    pooled = (matrix @ spatial.flatten(1)).view(-1, *spatial.shape[1:])  # (sum slots, D, h, w)
    return pooled.permute(0, 2, 3, 1).reshape(-1, feats.shape[-1])


def encoder_widths(config) -> dict[str, int]:
    """``{encoder: D_e}`` in the tower's order, from the tower config saved in the LLaVA config."""
    tower = getattr(config, "mm_vision_tower_config", None) or {}
    if tower.get("model_type") == "merv_tower":
        return {e["name"]: int(e["config"]["hidden_size"]) for e in tower["encoders"]}
    return {SINGLE: int(config.mm_hidden_size)}


class MERVProjector(StructuredProjector):
    """Per-encoder 3D pooling + Linear, then the mixer (module docstring). Parameters:
    ``projectors.<i>.*`` (encoder ``i`` of the tower, in order) and ``mixer.*``."""

    def __init__(self, config, vision_cfg=None, delay_load: bool = False, **kwargs):
        super().__init__()
        self.merv = merv_config_from(config)
        widths = encoder_widths(config)
        self.encoder_names = list(widths)
        self.projectors = nn.ModuleList([nn.Linear(width, config.hidden_size) for width in widths.values()])
        self.mixer = MIXERS[self.merv.fusion](len(widths), config.hidden_size, self.merv.query_dim)

    def num_output_tokens(self, t: int, h: int, w: int, modality: str = "video") -> int:
        return self.merv.num_tokens(t, modality, len(self.encoder_names))

    def tunable_parts(self) -> dict[str, list[nn.Parameter]]:
        """``merv_mixer``: the mixer's parameters (its own LR with ``--merv_mixer_lr``)."""
        return {"merv_mixer": list(self.mixer.parameters())}

    def _encoders(self, batch: VisualBatch) -> list[EncoderFeatures]:
        if batch.encoders is None:
            if self.encoder_names != [SINGLE]:
                raise ValueError(f"the MERV projector was built for encoders {self.encoder_names}, but the tower gave "
                                 f"one feature map (VisualBatch.encoders is empty); use the MERV tower")
            return [EncoderFeatures(batch.features, batch.frames_per_item)]
        if list(batch.encoders) != self.encoder_names:
            raise ValueError(f"the MERV projector was built for encoders {self.encoder_names}, the tower gave "
                             f"{list(batch.encoders)}")
        return list(batch.encoders.values())

    def encoder_tokens(self, batch: VisualBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Every encoder's aligned, projected tokens ``(E, N, d)`` (items packed along ``N``) and the
        item of each token ``(N,)``."""
        slots = [self.merv.slots(t, m) for t, m in zip(batch.frames_per_item, batch.modalities)]
        size = self.merv.grid[1:]
        x = torch.stack([proj(pool_to_grid(enc, slots, size).to(proj.weight.dtype))
                         for proj, enc in zip(self.projectors, self._encoders(batch))])
        counts = torch.tensor(slots, device=x.device) * (size[0] * size[1])
        return x, torch.repeat_interleave(torch.arange(batch.num_items, device=x.device), counts)

    def mixer_weights(self, batch: VisualBatch) -> torch.Tensor | None:
        """``(B, E)`` encoder weights per item (``None`` for fusions without weights)."""
        x, item_index = self.encoder_tokens(batch)
        return self.mixer(x, item_index, batch.num_items)[2]

    def forward(self, batch: VisualBatch) -> list[torch.Tensor]:
        x, item_index = self.encoder_tokens(batch)
        tokens, token_items, _ = self.mixer(x, item_index, batch.num_items)
        return list(tokens.split(torch.bincount(token_items, minlength=batch.num_items).tolist()))


def register() -> None:
    """Registers ``merv`` with the contract test's examples (the MERV tower over one SigLIP folder,
    fixed and per-frame grids)."""
    register_projector("merv", examples=(
        {"mm_projector_type": "merv", "mm_vision_tower_type": "merv",
         "merv_config": {"grid": [2, 3, 3], "fusion": "cross_attention_avg_lq", "query_dim": 16}},
    ))(MERVProjector)
