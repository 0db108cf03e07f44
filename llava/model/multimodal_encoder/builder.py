"""``build_vision_tower(config)``: picks the tower class from the checkpoint, never from its name."""

from __future__ import annotations

from pathlib import Path

from ..weights import read_json
from .siglip_encoder import SigLipVisionTower

_SIGLIP_TYPES = {"siglip", "siglip_vision_model"}


def _tower_model_type(name: str, config) -> str | None:
    stored = getattr(config, "mm_vision_tower_config", None)
    config_file = Path(name) / "config.json"
    if config_file.is_file():
        return read_json(config_file).get("model_type")
    if stored is not None:
        return stored.get("model_type")
    return None


def build_vision_tower(vision_tower_cfg, **kwargs) -> SigLipVisionTower:
    """Builds the tower named by ``mm_vision_tower`` (or ``vision_tower``) from a local folder.

    kwargs: ``delay_load`` (structure only; weights come from the LLaVA checkpoint) and
    ``keep_head`` (keep the pooling head for dense embeddings).
    """
    name = getattr(vision_tower_cfg, "mm_vision_tower", None) or getattr(vision_tower_cfg, "vision_tower", None)
    if not name:
        raise ValueError("config has neither mm_vision_tower nor vision_tower")
    model_type = _tower_model_type(str(name), vision_tower_cfg)
    if model_type is None:
        raise FileNotFoundError(
            f"vision tower {name!r}: no such folder and no mm_vision_tower_config saved in the model config "
            f"(nothing is downloaded; put the checkpoint under playground/models/ and pass its path)"
        )
    if model_type in _SIGLIP_TYPES:
        return SigLipVisionTower(str(name), vision_tower_cfg=vision_tower_cfg, **kwargs)
    raise ValueError(f"vision tower {name!r}: unsupported model_type {model_type!r} (supported: {sorted(_SIGLIP_TYPES)})")
