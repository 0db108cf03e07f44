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
<plugin groups>      ``tunable_parts()`` of the projector or tower, each declared by a plugin
                     (:class:`llava.plugin.ParamGroup`): inside the adapter, or standalone
==================== =======================================================================
"""

from __future__ import annotations

import logging

from torch import nn

from llava.plugin import param_groups

logger = logging.getLogger(__name__)

#: Learning-rate flag of each core part that can have its own (``TrainingArguments`` field names).
CORE_LEARNING_RATES = (("mm_vision_tower", "mm_vision_tower_lr"), ("mm_mlp_adapter", "mm_projector_lr"))
#: Core parts an adapter-only save covers (stages 1-2 write just ``mm_projector.bin``).
CORE_ADAPTER_PARTS = frozenset({"mm_mlp_adapter", "mm_vision_resampler"})


def part_learning_rates() -> tuple[tuple[str, str], ...]:
    """``(part, LR flag)`` pairs: plugin groups first (in declaration order), then the core's. The first
    part in this order that holds a parameter and whose flag is set decides its group."""
    plugin = tuple((g.name, g.lr_flag) for g in param_groups().values() if g.lr_flag)
    return plugin + CORE_LEARNING_RATES


def adapter_parts() -> frozenset[str]:
    return CORE_ADAPTER_PARTS | {g.name for g in param_groups().values() if g.adapter}


def plugin_parts(module: nn.Module | None) -> dict[str, list[nn.Parameter]]:
    """``module.tunable_parts()`` (projectors and towers may define it), checked against the declared
    groups: a part no plugin declares is an error naming it."""
    if module is None or not hasattr(module, "tunable_parts"):
        return {}
    parts = module.tunable_parts()
    declared = param_groups()
    unknown = sorted(set(parts) - set(declared))
    if unknown:
        raise ValueError(f"{type(module).__name__}.tunable_parts() returns {unknown}, which no plugin declares as "
                         f"a ParamGroup (declared: {sorted(declared)})")
    return {name: list(params) for name, params in parts.items()}


def standalone_parameter_ids(module: nn.Module | None) -> set[int]:
    """Ids of the parameters of ``module``'s standalone parts (``ParamGroup(adapter=False)``)."""
    declared = param_groups()
    return {id(p) for name, params in plugin_parts(module).items() if not declared[name].adapter for p in params}


def _tower_head(tower: nn.Module | None) -> list[nn.Parameter]:
    if tower is None:
        return []
    for name, module in tower.named_modules():
        if name.split(".")[-1] == "head":
            return list(module.parameters())
    return []


def model_parts(model) -> dict[str, list[nn.Parameter]]:
    """Every tunable part of a LLaVA model, as parameter lists (module docstring); a plain LLM (text-only
    training, no vision tower) is all ``mm_language_model``."""
    if not hasattr(model, "get_model"):
        return {"mm_mlp_adapter": [], "mm_vision_resampler": [], "mm_vision_tower": [], "vision_tower_head": [],
                "mm_language_model": list(model.parameters())}
    inner = model.get_model()
    tower = inner.get_vision_tower()
    projector = getattr(inner, "mm_projector", None)
    resampler = getattr(inner, "vision_resampler", None)
    plugin = {**plugin_parts(tower), **plugin_parts(projector)}
    standalone = standalone_parameter_ids(projector)
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
            raise ValueError(f"plugin part {name!r} clashes with a LLaVA part name")
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
        return set(parts.split(",")) <= adapter_parts()
    return bool(model_args.tune_mm_mlp_adapter)


def parameter_groups(model, args, decay_names: set[str]) -> list[dict]:
    """Optimizer groups of the trainable parameters: one per (part with its own LR) x (decay or not).

    Each group carries a ``"name"`` such as ``"mm_mlp_adapter/decay"`` so its LR can be read back from
    the optimizer. Parts whose LR flag is unset stay in the group of the part that contains them
    (a plugin part inside the projector in the adapter's) or in the base group.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    parts = model_parts(model)
    owner: dict[int, tuple[str, float]] = {}
    learning_rates = part_learning_rates()
    for part, flag in learning_rates:
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
    trained = {key[0] for key in groups}
    for flag in dict.fromkeys(flag for _, flag in learning_rates):  # a flag may set several parts' LR
        lr = getattr(args, flag, None)
        flag_parts = [part for part, f in learning_rates if f == flag]
        if lr is not None and not trained.intersection(flag_parts):
            logger.warning("--%s=%g applies to no trainable parameter (parts %s are empty or frozen)", flag, lr,
                           ", ".join(flag_parts))
    for group in groups.values():
        logger.info("optimizer group %-28s %10d params  lr %g", group["name"],
                    sum(getattr(p, "ds_numel", p.numel()) for p in group["params"]), group["lr"])
    return list(groups.values())
