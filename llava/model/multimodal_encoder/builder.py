"""Vision-tower registry: ``build_vision_tower(config)`` picks the tower class from the config or the
checkpoint, never from its folder name.

A tower is chosen by ``config.mm_vision_tower_type`` (``--mm_vision_tower_type``) when set, else by the
``model_type`` of the tower folder's ``config.json`` (or of the ``mm_vision_tower_config`` a LLaVA
checkpoint saved). SigLIP is built in; plugins register theirs through the ``llava.vision_towers``
entry-point group (:mod:`llava.registry`).

A tower is an ``nn.Module`` with:

* ``encode_batch(items, modalities) -> VisualBatch``: every visual item of a micro-batch (an item is
  ``(T,3,S,S)`` pixels, or a ``{encoder: pixels}`` dict for towers with several encoders) in one call;
  a multi-encoder tower fills ``VisualBatch.encoders`` and puts its primary encoder in ``features``;
* ``__call__(frames (N,3,S,S)) -> (N, H*W, D)`` for token-wise projectors (upstream's path);
* ``image_processor`` (what the data pipeline runs on decoded frames), ``hidden_size``,
  ``num_patches_per_side``, ``config``, ``full_config`` (saved as ``mm_vision_tower_config``),
  ``device``, ``dtype``, ``is_loaded`` / ``load_model()``, ``keep_head``;
* optionally ``tunable_parts()`` (plugin parameter groups, :mod:`llava.plugin`).

The builder is called as ``builder(name, vision_tower_cfg=config, delay_load=..., keep_head=...)``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from llava.registry import Registry

from ..weights import read_json
from .siglip_encoder import SigLipVisionTower

VISION_TOWERS = Registry("vision tower", "mm_vision_tower_type")
#: checkpoint ``model_type`` -> registered tower name
_MODEL_TYPES: dict[str, str] = {}


def register_vision_tower(name: str, *, model_types: tuple[str, ...] = (), overwrite: bool = False):
    """Decorator registering a tower class (or builder) under ``name``; checkpoints whose ``config.json``
    has one of ``model_types`` pick it without ``mm_vision_tower_type``."""

    def decorator(builder):
        VISION_TOWERS.register(name, overwrite=overwrite)(builder)
        for model_type in model_types:
            owner = _MODEL_TYPES.get(model_type)
            if owner is not None and owner != name and not overwrite:
                raise ValueError(f"vision tower {name!r}: model_type {model_type!r} is already claimed by {owner!r}")
            _MODEL_TYPES[model_type] = name
        return builder

    return decorator


def list_vision_towers() -> list[str]:
    return VISION_TOWERS.names()


register_vision_tower("siglip", model_types=("siglip", "siglip_vision_model"))(SigLipVisionTower)


def _tower_model_type(name: str, config) -> str | None:
    stored = getattr(config, "mm_vision_tower_config", None)
    config_file = Path(name) / "config.json"
    if config_file.is_file():
        return read_json(config_file).get("model_type")
    if stored is not None:
        return stored.get("model_type")
    return None


def build_vision_tower(vision_tower_cfg, **kwargs) -> nn.Module:
    """Builds the tower named by ``mm_vision_tower`` (or ``vision_tower``) from a local folder.

    kwargs: ``delay_load`` (structure only; weights come from the LLaVA checkpoint) and
    ``keep_head`` (keep the pooling head for dense embeddings).
    """
    name = getattr(vision_tower_cfg, "mm_vision_tower", None) or getattr(vision_tower_cfg, "vision_tower", None)
    if not name:
        raise ValueError("config has neither mm_vision_tower nor vision_tower")
    kind = getattr(vision_tower_cfg, "mm_vision_tower_type", None)
    if not kind:
        model_type = _tower_model_type(str(name), vision_tower_cfg)
        if model_type is None:
            raise FileNotFoundError(
                f"vision tower {name!r}: no such folder and no mm_vision_tower_config saved in the model config "
                f"(nothing is downloaded; put the checkpoint under playground/models/ and pass its path)"
            )
        VISION_TOWERS.names()  # plugins may claim model types
        kind = _MODEL_TYPES.get(model_type)
        if kind is None:
            raise ValueError(f"vision tower {name!r}: unsupported model_type {model_type!r} (supported: "
                             f"{sorted(_MODEL_TYPES)}; or pass --mm_vision_tower_type, one of {list_vision_towers()})")
    return VISION_TOWERS.get(kind)(str(name), vision_tower_cfg=vision_tower_cfg, **kwargs)
