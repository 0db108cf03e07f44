"""What HICom contributes to the core besides its projector (entry point ``llava.plugins``).

* flags: ``--hicom_preset``, ``--use_guide``, ``--hicom_overrides`` (model) and ``--guide_injector_lr``
  (training), the release's names;
* parameter groups: ``guide_injector`` (the injection MLPs, inside the adapter, LR ``--guide_injector_lr``),
  ``text_tower`` / ``text_tower_head`` (SigLIP's text model / its head: standalone, LR
  ``--mm_vision_tower_lr``); the release's ``guide_encoder`` is an alias of ``text_tower``;
* the model card's HICom section and the text tokenizer exported next to the weights;
* ``--prompt-style hicom`` for the evaluation scripts (:func:`hicom_plugin.eval.register_eval`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llava.plugin import ParamGroup, Plugin, json_flag, register_plugin
from .toy import ROWS as TOY_ROWS

#: Subfolder of an exported model holding the instruction tokenizer (``config.hicom_text_tokenizer``).
TEXT_TOKENIZER_DIR = "text_tokenizer"


@dataclass
class HIComModelArguments:
    hicom_preset: str | None = field(default=None, metadata={"help": "paper | release (mm_projector_type hicom)"})
    use_guide: str | None = field(
        default=None, metadata={"help": "off | direct | coarse | fine (release strings); off also for presets"})
    hicom_overrides: str | None = field(
        default=None, metadata={"help": 'JSON of HIComConfig fields, e.g. {"local_kernel": [4, 3, 3]}'})


@dataclass
class HIComTrainingArguments:
    guide_injector_lr: float | None = field(default=None, metadata={"help": "LR of HICom's instruction injectors"})


def config_from_args(model_args, data_args, training_args) -> dict:
    """The keys ``hicom_config_from`` resolves when the projector is built."""
    values = {"hicom_preset": model_args.hicom_preset, "use_guide": model_args.use_guide}
    if model_args.hicom_overrides:
        values["hicom_overrides"] = json_flag(model_args.hicom_overrides, "hicom_overrides")
    return values


def model_card(config) -> list[str]:
    hicom = getattr(config, "hicom_config", None)
    if not hicom:
        return []
    flags = (getattr(config, "plugin_flags", None) or {}).get("hicom")
    release = getattr(config, "hicom_release_projector_type", None)
    given = f"`{release}`" if release else (f"`{flags}`" if flags else "none recorded")
    return [f"Method: HICom (`mm_projector_type: hicom`; given as {given}).", "",
            "HICom options (`config.json` → `hicom_config`):", "", "```json", json.dumps(hicom, indent=1), "```", ""]


def export_files(model, folder: Path) -> None:
    """Ships the instruction tokenizer, so the exported folder needs no other folder."""
    text_encoder = getattr(model.get_model().mm_projector, "text_encoder", None)
    if text_encoder is not None:
        text_encoder.tokenizer.save_pretrained(Path(folder) / TEXT_TOKENIZER_DIR)
        model.config.hicom_text_tokenizer = TEXT_TOKENIZER_DIR


PLUGIN = Plugin(
    name="hicom",
    model_args=HIComModelArguments,
    training_args=HIComTrainingArguments,
    param_groups=(
        ParamGroup("guide_injector", lr_flag="guide_injector_lr"),
        ParamGroup("text_tower", lr_flag="mm_vision_tower_lr", adapter=False),
        ParamGroup("text_tower_head", lr_flag="mm_vision_tower_lr", adapter=False),
    ),
    part_aliases={"guide_encoder": "text_tower"},
    config_from_args=config_from_args,
    model_card=model_card,
    export_files=export_files,
    toy_rows=TOY_ROWS,
)


def register() -> None:
    """Entry point of the ``llava.plugins`` group."""
    from .eval import register_eval

    register_plugin(PLUGIN)
    register_eval()
