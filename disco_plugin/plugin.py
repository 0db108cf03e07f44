"""What DisCo contributes to the core (entry point ``llava.plugins``): the ``disco`` projector and

* flags: ``--disco_preset``, ``--disco_overrides`` (model) and ``--disco_vcd_weight``,
  ``--disco_tfc_weight`` (training; the weights of the two auxiliary losses, 0 turns one off);
* the per-sample field ``instances`` (:func:`disco_plugin.instances.parse_instances`);
* parameter groups: ``disco_heads`` (VCD/TFC projections and temperatures, in the adapter) and
  ``disco_text_tower`` (the frozen SigLIP text tower encoding instances, standalone);
* the model card's DisCo section and the instance tokenizer exported next to the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llava.plugin import AuxLoss, ParamGroup, Plugin, SampleField, json_flag, register_plugin

from .instances import TOKENIZER_DIR, parse_instances
from .projector import TFC, VCD
from .toy import ROWS as TOY_ROWS


@dataclass
class DiscoModelArguments:
    disco_preset: str | None = field(default=None, metadata={"help": "prototype | tiny (mm_projector_type disco)"})
    disco_overrides: str | None = field(
        default=None, metadata={"help": 'JSON of DiscoConfig fields, e.g. {"num_queries": 64, "num_groups": 8}'})


@dataclass
class DiscoTrainingArguments:
    disco_vcd_weight: float = field(default=1.0, metadata={"help": "weight of DisCo's VCD loss (0: off)"})
    disco_tfc_weight: float = field(default=1.0, metadata={"help": "weight of DisCo's TFC loss (0: off)"})


def config_from_args(model_args, data_args, training_args) -> dict:
    """The keys ``disco_config_from`` resolves when the projector is built."""
    values = {"disco_preset": model_args.disco_preset}
    if model_args.disco_overrides:
        values["disco_overrides"] = json_flag(model_args.disco_overrides, "disco_overrides")
    return values


def model_card(config) -> list[str]:
    disco = getattr(config, "disco_config", None)
    if not disco:
        return []
    return ["Method: DisCo-style visual encapsulation (`mm_projector_type: disco`), reimplemented from the "
            "authors' prototype; see disco_plugin/README.md.", "",
            "DisCo options (`config.json` → `disco_config`):", "", "```json", json.dumps(disco, indent=1), "```", ""]


def export_files(model, folder: Path) -> None:
    """Ships the instance encoder's tokenizer, so further training needs no SigLIP folder."""
    encoder = getattr(model.get_model().mm_projector, "instance_encoder", None)
    if encoder is not None:
        encoder.tokenizer.save_pretrained(Path(folder) / TOKENIZER_DIR)


PLUGIN = Plugin(
    name="disco",
    model_args=DiscoModelArguments,
    training_args=DiscoTrainingArguments,
    param_groups=(ParamGroup("disco_heads"), ParamGroup("disco_text_tower", adapter=False)),
    aux_losses=(AuxLoss(VCD, weight_flag="disco_vcd_weight"), AuxLoss(TFC, weight_flag="disco_tfc_weight")),
    sample_fields=(SampleField("instances", parse=parse_instances, default=list),),
    config_from_args=config_from_args,
    model_card=model_card,
    export_files=export_files,
    toy_rows=TOY_ROWS,
)


def register() -> None:
    """Entry point of the ``llava.plugins`` group."""
    from .projector import register as register_projector

    register_plugin(PLUGIN)
    register_projector()
