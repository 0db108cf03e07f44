"""SigLIP vision tower, loaded from a local HF folder (never from the hub).

The tower keeps only the encoder layers it needs: ``mm_vision_select_layer=-2`` on the 27-layer
so400m keeps 26 layers (upstream LLaVA-OneVision's truncation, so its checkpoint keys
``model.vision_tower.vision_tower.vision_model.encoder.layers.0..25`` load unchanged). A projector
that asks for dense embeddings (``keep_head=True``) keeps every layer plus the attention-pooling head,
whose MLP maps each patch of the last layer into the joint image-text space.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from ..visual import VisualBatch
from ..weights import config_fields, load_part_strictly, read_json
from .siglip_processor import SigLipImageProcessor

logger = logging.getLogger(__name__)


def dense_patch_embeddings(vision_model: SiglipVisionModel, last_hidden: torch.Tensor) -> torch.Tensor:
    """Per-patch joint-space embeddings ``x + head.mlp(head.layernorm(x))`` of the post-layernormed last
    layer ``x``: the pooling head's MLP applied to every patch, its attention probe skipped."""
    head = vision_model.head
    return last_hidden + head.mlp(head.layernorm(last_hidden))


class _SigLipTrunk(nn.Module):
    """Holds the HF model under ``vision_model`` so parameter names match upstream checkpoints."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.vision_model = SiglipVisionModel(config)


def read_siglip_vision_config(path: str | Path) -> dict:
    """The vision part of a ``siglip`` or ``siglip_vision_model`` folder's config.json, as a dict."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"vision tower folder {path!s} has no config.json (weights are never downloaded: place a "
            f"SigLIP checkpoint there, e.g. under playground/models/)"
        )
    raw = read_json(config_file)
    model_type = raw.get("model_type")
    if model_type == "siglip":
        vision = dict(raw.get("vision_config") or {})
    elif model_type == "siglip_vision_model":
        vision = raw
    else:
        raise ValueError(f"{config_file}: model_type {model_type!r} is not a SigLIP checkpoint")
    vision["model_type"] = "siglip_vision_model"
    return vision


def _vision_config(full: dict) -> SiglipVisionConfig:
    return SiglipVisionConfig(**config_fields(full))


def resolve_layer_index(select_layer: int, num_layers: int) -> int:
    """Index into ``hidden_states`` (length ``num_layers + 1``, entry 0 = embeddings)."""
    index = select_layer if select_layer >= 0 else num_layers + 1 + select_layer
    if not 1 <= index <= num_layers:
        raise ValueError(
            f"mm_vision_select_layer={select_layer} is out of range for a tower with {num_layers} layers"
        )
    return index


class SigLipVisionTower(nn.Module):
    """``forward(images (N,3,S,S)) -> (N, H*W, D)`` patch features of the selected layer.

    Args:
        vision_tower: local folder of a SigLIP checkpoint (``siglip`` or ``siglip_vision_model``).
        vision_tower_cfg: the LLaVA config (reads ``mm_vision_select_layer`` and, when the folder is
            not at hand, ``mm_vision_tower_config`` — the tower's config saved with the model).
        delay_load: build the structure without loading weights (they come from a LLaVA checkpoint).
        keep_head: keep all layers and the pooling head, for :meth:`forward_with_dense`.
    """

    def __init__(self, vision_tower: str, vision_tower_cfg=None, delay_load: bool = False, keep_head: bool = False):
        super().__init__()
        self.vision_tower_name = vision_tower
        self.select_layer = getattr(vision_tower_cfg, "mm_vision_select_layer", -2)
        self.select_feature = getattr(vision_tower_cfg, "mm_vision_select_feature", "patch")
        if self.select_feature != "patch":
            raise ValueError(f"SigLIP has no CLS token: mm_vision_select_feature must be 'patch', got {self.select_feature!r}")
        self.keep_head = keep_head
        stored = getattr(vision_tower_cfg, "mm_vision_tower_config", None)
        folder = Path(vision_tower)
        if stored is None or (not delay_load and folder.is_dir()):
            full = read_siglip_vision_config(folder)
        else:
            full = dict(stored)
        self.full_config = full  # saved into the LLaVA config so checkpoints rebuild without the folder
        self.vision_tower = _SigLipTrunk(self._truncated_config(full))
        self.vision_tower.requires_grad_(False)
        self.image_processor = self._make_processor(folder, full)
        self.is_loaded = False
        if not delay_load:
            self.load_model()

    def _truncated_config(self, full: dict) -> SiglipVisionConfig:
        config = _vision_config(full)
        self.layer_index = resolve_layer_index(self.select_layer, config.num_hidden_layers)
        if not self.keep_head:
            config.num_hidden_layers = self.layer_index
            config.vision_use_head = False
        else:
            config.vision_use_head = True
        return config

    @staticmethod
    def _make_processor(folder: Path, full: dict) -> SigLipImageProcessor:
        if (folder / "preprocessor_config.json").is_file():
            return SigLipImageProcessor.from_pretrained(folder)
        size = full.get("image_size", 384)
        return SigLipImageProcessor(size={"height": size, "width": size})

    def load_model(self, device_map=None) -> None:
        """Loads the tower weights from its folder (strictly: every kept tensor must be there)."""
        if self.is_loaded:
            logger.debug("%s is already loaded; skipping", self.vision_tower_name)
            return
        folder = Path(self.vision_tower_name)
        if not folder.is_dir():
            raise FileNotFoundError(f"vision tower folder {folder} does not exist")
        load_part_strictly(self.vision_tower.vision_model, folder, "vision_model.", "vision tower")
        self.vision_tower.requires_grad_(False)
        self.is_loaded = True

    @property
    def vision_model(self) -> SiglipVisionModel:
        return self.vision_tower.vision_model

    def _selected_and_last(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.vision_model(pixel_values=images.to(self.dtype), output_hidden_states=True)
        return out.hidden_states[self.layer_index], out.last_hidden_state

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images (N,3,S,S)`` -> ``(N, H*W, D)`` features of ``mm_vision_select_layer``."""
        return self._selected_and_last(images)[0]

    def forward_with_dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Selected-layer features and dense joint-space embeddings, both ``(N, H*W, D)``.

        The dense embeddings are :func:`dense_patch_embeddings` of the last layer.
        """
        if not self.keep_head:
            raise RuntimeError("dense embeddings need the tower built with keep_head=True")
        selected, last = self._selected_and_last(images)
        return selected, dense_patch_embeddings(self.vision_model, last)

    def encode_batch(self, items: list[torch.Tensor], modalities: list[str]) -> VisualBatch:
        """Every item of a micro-batch (``(T_i,3,S,S)`` each) in one tower pass -> ``VisualBatch`` with
        ``(sum T_i, H, W, D)`` features (and dense embeddings when the tower keeps its head)."""
        frames = torch.cat(items).to(device=self.device, dtype=self.dtype)
        if self.keep_head:
            feats, dense = self.forward_with_dense(frames)
        else:
            feats, dense = self(frames), None
        side = self.num_patches_per_side
        grid = lambda x: None if x is None else x.view(x.shape[0], side, side, x.shape[-1])  # noqa: E731
        return VisualBatch(grid(feats), [item.shape[0] for item in items], list(modalities), grid(dense))

    @property
    def config(self) -> SiglipVisionConfig:
        return self.vision_model.config

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_model.embeddings.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_model.embeddings.patch_embedding.weight.device

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def num_patches_per_side(self) -> int:
        return self.config.image_size // self.config.patch_size

    @property
    def num_patches(self) -> int:
        return self.num_patches_per_side**2

    @property
    def dummy_feature(self) -> torch.Tensor:
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)
