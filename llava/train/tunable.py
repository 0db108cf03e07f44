"""Which parameters train, and with which learning rate, decided by module rather than by name.

Upstream LLaVA unfreezes and groups parameters by name substring (``"vision_tower" in name``), which
silently catches or misses plugin modules depending on what they are called. Here every part is a
set of parameters taken from a module of the model:

==================== =======================================================================
part                 parameters
==================== =======================================================================
mm_mlp_adapter       the projector (``model.mm_projector``), except its standalone parts
mm_vision_resampler  ``model.vision_resampler``
mm_vision_tower      the vision tower
vision_tower_head    the tower's attention-pooling head (when the tower keeps it)
mm_language_model    everything else: LLM layers, embeddings, ``lm_head``, ``image_newline``
<plugin parts>       ``projector.tunable_parts()``: e.g. HICom's ``guide_injector`` (inside the
                     adapter), ``text_tower`` / ``text_tower_head`` (standalone)
==================== =======================================================================
"""

from __future__ import annotations

import logging

from torch import nn

from llava.model.multimodal_projector.base import StructuredProjector

logger = logging.getLogger(__name__)

#: Learning-rate flag of each part that can have its own (``TrainingArguments`` field names). The
#: first part in this order that holds a parameter and whose flag is set decides its group.
PART_LEARNING_RATES = (
    ("guide_injector", "guide_injector_lr"),
    ("text_tower", "mm_vision_tower_lr"),
    ("text_tower_head", "mm_vision_tower_lr"),
    ("mm_vision_tower", "mm_vision_tower_lr"),
    ("mm_mlp_adapter", "mm_projector_lr"),
)
#: Parts an adapter-only save covers (stages 1-2 write just ``mm_projector.bin``).
ADAPTER_PARTS = frozenset({"mm_mlp_adapter", "guide_injector", "mm_vision_resampler"})


def _tower_head(tower: nn.Module | None) -> list[nn.Parameter]:
    if tower is None:
        return []
    for name, module in tower.named_modules():
        if name.split(".")[-1] == "head":
            return list(module.parameters())
    return []


def model_parts(model) -> dict[str, list[nn.Parameter]]:
    """Every tunable part of a LLaVA model, as parameter lists (module docstring)."""
    inner = model.get_model()
    tower = inner.get_vision_tower()
    projector = getattr(inner, "mm_projector", None)
    resampler = getattr(inner, "vision_resampler", None)
    plugin = projector.tunable_parts() if isinstance(projector, StructuredProjector) else {}
    standalone = {id(p) for name in getattr(projector, "standalone_parts", ()) for p in plugin.get(name, [])}
    visual = [m for m in (tower, projector, resampler) if m is not None]
    visual_ids = {id(p) for m in visual for p in m.parameters()}
    parts = {
        "mm_mlp_adapter": [p for p in projector.parameters() if id(p) not in standalone] if projector is not None else [],
        "mm_vision_resampler": list(resampler.parameters()) if resampler is not None else [],
        "mm_vision_tower": list(tower.parameters()) if tower is not None else [],
        "vision_tower_head": _tower_head(tower),
        "mm_language_model": [p for p in model.parameters() if id(p) not in visual_ids],
    }
    for name, params in plugin.items():
        if name in parts:
            raise ValueError(f"projector part {name!r} clashes with a LLaVA part name")
        parts[name] = list(params)
    return parts


def apply_tunable_parts(model, parts: list[str]) -> dict[str, int]:
    """Freezes everything, then unfreezes ``parts``; returns the parameter count of each part."""
    available = model_parts(model)
    unknown = [p for p in parts if p not in available]
    if unknown:
        raise ValueError(f"--mm_tunable_parts {unknown}: this model has no such part; it has {sorted(available)}")
    model.requires_grad_(False)
    counts = {}
    for part in parts:
        for param in available[part]:
            param.requires_grad_(True)
        counts[part] = sum(getattr(p, "ds_numel", p.numel()) for p in available[part])
        if not available[part]:
            logger.warning("--mm_tunable_parts %s: the part is empty in this model", part)
    return counts


def apply_legacy_flags(model, model_args, training_args) -> None:
    """Upstream's flags when ``--mm_tunable_parts`` is not given."""
    available = model_parts(model)
    if model_args.freeze_backbone:
        for param in available["mm_language_model"]:
            param.requires_grad_(False)
    if model_args.tune_mm_mlp_adapter:
        model.requires_grad_(False)
        for param in available["mm_mlp_adapter"]:
            param.requires_grad_(True)
    if getattr(training_args, "freeze_mm_mlp_adapter", False):
        for param in available["mm_mlp_adapter"]:
            param.requires_grad_(False)
    if model_args.unfreeze_mm_vision_tower:
        for param in available["mm_vision_tower"]:
            param.requires_grad_(True)


def adapter_only(model_args, training_args) -> bool:
    """Whether the run trains nothing but the adapter, so saves write only ``mm_projector.bin``."""
    if getattr(training_args, "lora_enable", False):
        return False
    parts = model_args.mm_tunable_parts
    if parts:
        return set(parts.split(",")) <= ADAPTER_PARTS
    return bool(model_args.tune_mm_mlp_adapter)


def parameter_groups(model, args, decay_names: set[str]) -> list[dict]:
    """Optimizer groups of the trainable parameters: one per (part with its own LR) x (decay or not).

    Each group carries a ``"name"`` such as ``"guide_injector/decay"`` so its LR can be read back from
    the optimizer. Parts whose LR flag is unset stay in the group of the part that contains them
    (the injector in the adapter's) or in the base group.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    parts = model_parts(model)
    owner: dict[int, tuple[str, float]] = {}
    for part, flag in PART_LEARNING_RATES:
        lr = getattr(args, flag, None)
        if lr is None:
            continue
        for param in parts.get(part, []):
            owner.setdefault(id(param), (part, lr))
    groups: dict[tuple[str, bool], dict] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        part, lr = owner.get(id(param), ("base", args.learning_rate))
        decay = names[id(param)] in decay_names
        key = (part, decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": lr, "weight_decay": args.weight_decay if decay else 0.0,
                           "name": f"{part}/{'decay' if decay else 'no_decay'}"}
        groups[key]["params"].append(param)
    for part, flag in PART_LEARNING_RATES:
        lr = getattr(args, flag, None)
        if lr is not None and not any(key[0] == part for key in groups):
            logger.warning("--%s=%g applies to no trainable parameter (part %s is empty or frozen)", flag, lr, part)
    for group in groups.values():
        logger.info("optimizer group %-28s %10d params  lr %g", group["name"],
                    sum(getattr(p, "ds_numel", p.numel()) for p in group["params"]), group["lr"])
    return list(groups.values())
