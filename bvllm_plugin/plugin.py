"""Entry point of this plugin package (``llava.plugins``): B-VLLM's flags, parameter groups, side files
and its projector (``mm_projector_type: bvllm``).

* flags: ``--bvllm_preset`` (paper | tiny), ``--bvllm_overrides`` (JSON of ``BVLLMConfig`` fields),
  ``--bvllm_qformer_tokenizer`` (a BERT tokenizer folder, or ``tiny``), ``--bvllm_qformer_init`` (LAVIS
  InstructBLIP checkpoint, file or folder) and ``--bvllm_qformer_lr``;
* parameter groups (all inside the adapter): ``bvllm_selector`` (Q-Former_T, its queries, the score
  projection), ``bvllm_sampler`` (Q-Former_S and its queries), ``bvllm_linears`` (LayerNorm, input adapter,
  output linears); both Q-Former groups take ``--bvllm_qformer_lr`` when it is given;
* the model card's B-VLLM section and the Q-Former tokenizer exported next to the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llava.plugin import ParamGroup, Plugin, json_flag, register_plugin
from .toy import ROWS as TOY_ROWS

#: Subfolder of an exported model holding the Q-Former tokenizer.
QFORMER_TOKENIZER_DIR = "qformer_tokenizer"


@dataclass
class BVLLMModelArguments:
    bvllm_preset: str | None = field(default=None, metadata={"help": "paper | tiny (mm_projector_type bvllm)"})
    bvllm_overrides: str | None = field(
        default=None, metadata={"help": 'JSON of BVLLMConfig fields, e.g. {"budget_mode": "exact", "budget": 680}'})
    bvllm_qformer_tokenizer: str | None = field(
        default=None, metadata={"help": "BERT tokenizer folder of the Q-Formers (bert-base-uncased), or 'tiny'"})
    bvllm_qformer_init: str | None = field(
        default=None, metadata={"help": "LAVIS InstructBLIP Q-Former checkpoint (file or folder); random init if unset"})


@dataclass
class BVLLMTrainingArguments:
    bvllm_qformer_lr: float | None = field(default=None, metadata={"help": "LR of both B-VLLM Q-Formers"})


def config_from_args(model_args, data_args, training_args) -> dict:
    values = {"bvllm_preset": model_args.bvllm_preset, "bvllm_qformer_tokenizer": model_args.bvllm_qformer_tokenizer,
              "bvllm_qformer_init": model_args.bvllm_qformer_init}
    if model_args.bvllm_overrides:
        values["bvllm_overrides"] = json_flag(model_args.bvllm_overrides, "bvllm_overrides")
    return values


def model_card(config) -> list[str]:
    options = getattr(config, "bvllm_config", None)
    if not options:
        return []
    from .config import BVLLMConfig

    cfg = BVLLMConfig.from_dict(options)
    low, high = cfg.token_count_range(32)
    count = f"exactly {high}" if low == high else f"{low} to {high} (content-dependent)"
    return ["Method: B-VLLM (`mm_projector_type: bvllm`); a 32-frame video becomes " + count + " tokens.", "",
            "B-VLLM options (`config.json` → `bvllm_config`):", "", "```json", json.dumps(options, indent=1), "```", ""]


def export_files(model, folder: Path) -> None:
    """Ships the Q-Former tokenizer, so the exported folder needs no other folder."""
    projector = model.get_model().mm_projector
    if getattr(projector, "text", None) is None or not hasattr(projector, "bvllm"):
        return
    projector.text.tokenizer.save_pretrained(Path(folder) / QFORMER_TOKENIZER_DIR)
    model.config.bvllm_qformer_tokenizer = QFORMER_TOKENIZER_DIR
    if hasattr(model.config, "bvllm_qformer_init"):
        delattr(model.config, "bvllm_qformer_init")  # the weights are in the checkpoint now


PLUGIN = Plugin(
    name="bvllm",
    model_args=BVLLMModelArguments,
    training_args=BVLLMTrainingArguments,
    param_groups=(
        ParamGroup("bvllm_selector", lr_flag="bvllm_qformer_lr"),
        ParamGroup("bvllm_sampler", lr_flag="bvllm_qformer_lr"),
        ParamGroup("bvllm_linears"),
    ),
    config_from_args=config_from_args,
    model_card=model_card,
    export_files=export_files,
    toy_rows=TOY_ROWS,
)


def register() -> None:
    """Entry point of the ``llava.plugins`` group: the plugin and its projector."""
    from .projector import register as register_projector

    register_plugin(PLUGIN)
    register_projector()
