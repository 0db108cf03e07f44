"""Entry point of this plugin package (``llava.plugins``): everything MERV contributes to the core.

* the vision tower ``merv`` (:class:`merv_plugin.tower.MERVVisionTower`; a tower folder with
  ``model_type: merv_tower`` selects it by itself);
* the projector ``merv`` (:class:`merv_plugin.projector.MERVProjector`);
* flags: ``--merv_grid t,h,w`` (``t`` may be ``frame``), ``--merv_fusion``, ``--merv_query_dim`` (model)
  and ``--merv_mixer_lr`` (training);
* the parameter group ``merv_mixer`` (inside the adapter) and the model card's MERV section, which lists
  every encoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from llava.model.multimodal_encoder.builder import register_vision_tower
from llava.plugin import ParamGroup, Plugin, register_plugin

from .config import FUSIONS, MERVConfig, parse_grid
from .toy import ROWS as TOY_ROWS


@dataclass
class MERVModelArguments:
    merv_grid: str | None = field(default=None, metadata={"help": "t,h,w of the alignment grid (t may be 'frame'); "
                                                                   "default 16,8,8"})
    merv_fusion: str | None = field(default=None, metadata={"help": f"one of {', '.join(FUSIONS)}"})
    merv_query_dim: int | None = field(default=None, metadata={"help": "width of the mixer query (default 3072)"})


@dataclass
class MERVTrainingArguments:
    merv_mixer_lr: float | None = field(default=None, metadata={"help": "LR of the MERV mixer"})


def config_from_args(model_args, data_args, training_args) -> dict:
    """``merv_config`` when any MERV flag is given (the projector fills in the defaults otherwise)."""
    given = {"grid": model_args.merv_grid, "fusion": model_args.merv_fusion, "query_dim": model_args.merv_query_dim}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return {}
    if "grid" in given:
        given["grid"] = parse_grid(given["grid"])
    return {"merv_config": MERVConfig(**{**MERVConfig().to_dict(), **given}).to_dict()}


def model_card(config) -> list[str]:
    merv = getattr(config, "merv_config", None)
    if not merv:
        return []
    lines = [f"Method: MERV (`mm_projector_type: merv`), fusion `{merv['fusion']}`, grid (t, h, w) = "
             f"{tuple(merv['grid'])}.", "", "Encoders (frozen; `config.json` → `mm_vision_tower_config`):", "",
             "| # | name | kind | HF class | width | input | frames per LLM frame |", "|---|---|---|---|---|---|---|"]
    tower = getattr(config, "mm_vision_tower_config", None) or {}
    from .encoders import KINDS

    for index, enc in enumerate(tower.get("encoders", [])):
        kind = KINDS[enc["kind"]]
        size = enc.get("image_size") or enc["config"].get("image_size")
        lines.append(f"| {index} | {enc['name']} | {enc['kind']} | {kind.model_class.__name__} | "
                     f"{enc['config']['hidden_size']} | {size} px | {enc.get('frame_rate', 1)} |")
    lines += ["", "MERV options (`config.json` → `merv_config`):", "", "```json", json.dumps(merv), "```", ""]
    return lines


PLUGIN = Plugin(
    name="merv",
    model_args=MERVModelArguments,
    training_args=MERVTrainingArguments,
    param_groups=(ParamGroup("merv_mixer", lr_flag="merv_mixer_lr"),),
    config_from_args=config_from_args,
    model_card=model_card,
    toy_rows=TOY_ROWS,
)


def register() -> None:
    """Registers the plugin, the ``merv`` tower and the ``merv`` projector."""
    from .projector import register as register_projector
    from .tower import MODEL_TYPE, MERVVisionTower

    register_plugin(PLUGIN)
    register_vision_tower("merv", model_types=(MODEL_TYPE,))(MERVVisionTower)
    register_projector()
