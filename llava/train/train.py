"""LLaVA training entry point (``train_mem.py`` calls :func:`train`); one function per stage of setup.

Run as upstream: ``deepspeed llava/train/train_mem.py --deepspeed scripts/zero3.json
--model_name_or_path ... --vision_tower ... --mm_projector_type ... --data_path ...``
(or ``torchrun``, or plain ``python`` for one process). A rerun of the same command in an
``--output_dir`` holding ``checkpoint-*`` resumes from the newest complete one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from llava.model.builder import (
    MODEL_TYPES,
    _check_loading,
    config_from_folder,
    model_family,
    read_model_config,
    resolve_attn_implementation,
)
from llava.plugin import aux_losses, declared_for, plugins, sample_fields
from llava.registry import load_plugins

from .arguments import DataArguments, ModelArguments, TrainingArguments, parse_args
from .data import DATA_REPORT_NAME, DataReport, UnusableDataError, make_supervised_data_module
from .llava_trainer import LLaVATrainer, find_resume_checkpoint
from .tunable import adapter_only, apply_legacy_flags, apply_tunable_parts

logger = logging.getLogger(__name__)

#: LLM ``model_type`` -> the LLaVA type built on it when a vision tower is attached.
LLAVA_TYPE_OF_LLM = {"qwen2": "llava_qwen", "llama": "llava_llama"}


def _dtype(training_args: TrainingArguments) -> torch.dtype:
    if training_args.bf16:
        return torch.bfloat16
    if training_args.fp16:
        return torch.float16
    return torch.float32


def get_model(model_args: ModelArguments, training_args: TrainingArguments, attn_implementation: str):
    """The model to train, its class chosen from ``config.json`` (never from the folder name)."""
    path = model_args.model_name_or_path
    raw = read_model_config(path)
    family = model_family(raw, path)
    if family is None and model_args.vision_tower:
        llava_type = LLAVA_TYPE_OF_LLM.get(raw["model_type"])
        if llava_type is None:
            raise ValueError(f"{path}: no LLaVA class for an LLM of model_type {raw['model_type']!r}; "
                             f"supported: {sorted(LLAVA_TYPE_OF_LLM)}")
        family = MODEL_TYPES[llava_type]
    kwargs = dict(dtype=_dtype(training_args), attn_implementation=attn_implementation)
    if family is None:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    config = config_from_folder(family.config_class, path)
    if model_args.rope_scaling_factor and model_args.rope_scaling_type:
        config.rope_parameters = {**(getattr(config, "rope_parameters", None) or {}),
                                  "rope_type": model_args.rope_scaling_type, "factor": model_args.rope_scaling_factor}
    model, info = family.model_class.from_pretrained(path, config=config, output_loading_info=True, **kwargs)
    _check_loading(info, model, path)
    return model


def _numel(param) -> int:
    return getattr(param, "ds_numel", param.numel())  # ZeRO-3 partitions report 0 elements


def plugin_argument_values(model_args, data_args, training_args) -> dict[str, dict]:
    """``{plugin: {flag: value}}`` of every plugin-contributed argument given a value other than its default."""
    values = {}
    for plugin in plugins():
        given = {}
        for cls in (plugin.model_args, plugin.data_args, plugin.training_args):
            for f in fields(cls) if cls else ():
                value = next((getattr(a, f.name) for a in (model_args, data_args, training_args)
                              if hasattr(a, f.name)), None)
                if value is not None and value != f.default:
                    given[f.name] = value
        if given:
            values[plugin.name] = given
    return values


def _write_model_config(config, model_args: ModelArguments, data_args: DataArguments, training_args) -> None:
    """Config keys the modules read when they are built, and the run-time keys LLaVA's forward reads.

    Plugins add theirs (``Plugin.config_from_args``); ``plugin_flags`` keeps the plugin flags as given,
    for provenance (the plugin's modules resolve them into their own config keys).
    """
    values = {
        "mm_spatial_pool_mode": model_args.mm_spatial_pool_mode,
        "mm_spatial_pool_stride": model_args.mm_spatial_pool_stride,
        "mm_newline_position": model_args.mm_newline_position,
        "image_aspect_ratio": data_args.image_aspect_ratio,
        "image_grid_pinpoints": data_args.image_grid_pinpoints,
        "tokenizer_padding_side": "right",
        "tokenizer_model_max_length": training_args.model_max_length,
        "add_time_instruction": data_args.add_time_instruction,
        "force_sample": data_args.force_sample,
        "num_frames": data_args.num_frames,
        "mm_text_tower": model_args.text_tower,
        "mm_vision_tower_type": model_args.mm_vision_tower_type,
    }
    for plugin in plugins():
        if plugin.config_from_args is not None:
            values.update(plugin.config_from_args(model_args, data_args, training_args))
    values["plugin_flags"] = {name: " ".join(f"--{k} {json.dumps(v) if not isinstance(v, str) else v}"
                                             for k, v in given.items())
                              for name, given in plugin_argument_values(model_args, data_args, training_args).items()
                              } or None
    for key, value in values.items():
        if value is not None or key in ("mm_spatial_pool_stride", "image_grid_pinpoints", "num_frames"):
            setattr(config, key, value)


def build_training_model(model_args, data_args, training_args, attn_implementation=None):
    """Model (with tower and projector attached and parts frozen per the flags) and tokenizer."""
    load_plugins()
    attn = resolve_attn_implementation(attn_implementation or training_args.attn_implementation)
    model = get_model(model_args, training_args, attn)
    model.config.use_cache = False
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, model_max_length=training_args.model_max_length, padding_side="right"
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if model_args.vision_tower:
        _write_model_config(model.config, model_args, data_args, training_args)
        # new modules start from the same weights however the run is launched (loading under
        # ZeRO-3 consumes the RNG differently)
        transformers.set_seed(training_args.seed)
        model.get_model().initialize_vision_modules(model_args)
        tower = model.get_vision_tower()
        tower.to(dtype=_dtype(training_args))
        data_args.image_processor = tower.image_processor
        data_args.is_multimodal = True
        model.config.mm_use_im_start_end = model_args.mm_use_im_start_end
        model.config.mm_use_im_patch_token = model_args.mm_use_im_patch_token
        model.initialize_vision_tokenizer(model_args, tokenizer)
    if model_args.mm_tunable_parts:
        counts = apply_tunable_parts(model, model_args.mm_tunable_parts.split(","))
        logger.info("tunable parts: %s", ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))
    else:
        apply_legacy_flags(model, model_args, training_args)
    for key in ("mm_tunable_parts",):
        setattr(model.config, key, getattr(model_args, key))
    if model_args.vision_tower:
        _write_aux_loss_weights(model, training_args)
    for key in ("mm_projector_lr", "mm_vision_tower_lr"):
        setattr(model.config, key, getattr(training_args, key))
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(_numel(p) for p in model.parameters())
    logger.info("trainable parameters: %.2fM of %.2fM", trainable / 1e6, total / 1e6)
    if training_args.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    return model, tokenizer


def _write_aux_loss_weights(model, training_args) -> None:
    """``config.aux_loss_weights``: the weight flag of each loss the projector returns (its ``aux_losses``),
    each declared by a plugin as an ``AuxLoss``."""
    losses = declared_for(model.get_model().mm_projector, "aux_losses", aux_losses(), "auxiliary losses")
    if losses:
        model.config.aux_loss_weights = {loss.name: float(getattr(training_args, loss.weight_flag)) for loss in losses}


def _deepspeed_on_cpu(argv: list[str]) -> list[str]:
    """accelerate starts DeepSpeed only on accelerators: on a CPU-only machine under the DeepSpeed
    launcher (or torchrun) it would run every rank as a separate single process. There, the process
    group is set up over gloo here and the shared state is marked as DeepSpeed, and the Trainer is
    told to use it (``use_configured_state``)."""
    if "--deepspeed" not in argv or torch.cuda.is_available() or os.environ.get("LOCAL_RANK") is None:
        return argv
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    import deepspeed

    state = PartialState(cpu=True)  # gloo process group over the launcher's ranks
    state.distributed_type = DistributedType.DEEPSPEED
    deepspeed.init_distributed(dist_backend="gloo")  # wraps the existing group
    if "--accelerator_config" in argv:
        raise ValueError("DeepSpeed on CPU sets --accelerator_config itself; remove it from the command")
    return [*argv, "--accelerator_config", json.dumps({"use_configured_state": True})]


def build_data_module(model, tokenizer, model_args, data_args, training_args) -> dict:
    """The training set and collator for ``model``: the dataset hands out instructions when the
    projector conditions on them, cleaned the projector's way, and the plugin fields it reads."""
    projector = getattr(model.get_model(), "mm_projector", None) if model_args.vision_tower else None
    data_args.needs_instructions = bool(model_args.vision_tower) and model._needs_instructions()
    data_args.version = model_args.version
    data_args.seed = training_args.seed
    fields = declared_for(projector, "sample_fields", sample_fields(), "sample fields")
    return make_supervised_data_module(tokenizer, data_args, getattr(projector, "clean_instruction", None), fields)


def train(attn_implementation: str | None = None, argv: list[str] | None = None,
          callbacks: list | None = None) -> LLaVATrainer:
    """Trains one stage from command-line flags (``argv``, default ``sys.argv[1:]``); ``callbacks``
    (``transformers.TrainerCallback``) are handed to the trainer, e.g. to report progress."""
    argv = list(sys.argv[1:] if argv is None else argv)
    model_args, data_args, training_args = parse_args(_deepspeed_on_cpu(argv))
    logging.basicConfig(level=logging.INFO if training_args.process_index == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    transformers.set_seed(training_args.seed)
    model, tokenizer = build_training_model(model_args, data_args, training_args, attn_implementation)

    data_module = build_data_module(model, tokenizer, model_args, data_args, training_args)
    dataset = data_module["train_dataset"]
    try:
        dataset.check_media_roots()
    except UnusableDataError:
        _write_data_report(training_args, dataset.load_report)
        raise
    if data_args.needs_instructions and training_args.ddp_find_unused_parameters is None:
        # some conditioned projectors leave parameters without gradient for a batch
        training_args.ddp_find_unused_parameters = True

    trainer = LLaVATrainer(model=model, args=training_args, processing_class=tokenizer,
                           adapter_only=adapter_only(model_args, training_args), callbacks=callbacks,
                           **data_module)
    resume = training_args.resume_from_checkpoint or find_resume_checkpoint(training_args.output_dir)
    if resume:
        logger.info("resuming from %s", resume)
        trainer.load_data_report(resume)
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except UnusableDataError as err:  # this rank's counts so far, and the run of bad samples that ended it
        report = trainer.data_report
        report.merge(dataset.load_report)
        report.add(("skip", "unusable_data", str(err).splitlines()[0]))
        _write_data_report(training_args, report, every_rank=True)
        raise
    trainer.save_state()
    model.config.use_cache = True
    save_trained_model(trainer, model, tokenizer, training_args.output_dir)

    report = trainer.gathered_data_report()
    report.merge(dataset.load_report)
    if training_args.should_save:
        _write_data_report(training_args, report)
        write_training_record(trainer, model_args, data_args, training_args, len(dataset))
    return trainer


TRAINING_RECORD_NAME = "training_record.json"


def _write_data_report(training_args, report: DataReport, every_rank: bool = False) -> None:
    """``data_report.json`` in the output folder (rank 0's; with ``every_rank``, a rank other than 0
    that stops the run writes ``data_report.rank<N>.json`` beside it) and its summary in the log."""
    if not (training_args.should_save or every_rank):
        return
    rank = training_args.process_index
    name = DATA_REPORT_NAME if rank == 0 else DATA_REPORT_NAME.replace(".json", f".rank{rank}.json")
    Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
    Path(training_args.output_dir, name).write_text(json.dumps(report.to_dict(), indent=1))
    logger.log(logging.WARNING if report.skipped else logging.INFO, "%s", report.summary())


def write_training_record(trainer, model_args, data_args, training_args, num_samples: int) -> None:
    """``training_record.json``: what this stage trained on and how (read by the model card). The data
    mixture is copied in when it is a YAML file, so the record survives the data folder."""
    data_path = data_args.data_path or ""
    mixture = None
    if data_path.endswith((".yaml", ".yml")) and Path(data_path).is_file():
        import yaml

        mixture = yaml.safe_load(Path(data_path).read_text())
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    record = {
        "stage_output": str(training_args.output_dir),
        "model_name_or_path": model_args.model_name_or_path,
        "vision_tower": model_args.vision_tower,
        "mm_projector_type": model_args.mm_projector_type,
        "pretrain_mm_mlp_adapter": model_args.pretrain_mm_mlp_adapter,
        "mm_tunable_parts": model_args.mm_tunable_parts,
        "version": model_args.version,
        "data_path": data_path,
        "data_mixture": mixture,
        "num_samples": num_samples,
        "num_frames": data_args.num_frames,
        "learning_rate": training_args.learning_rate,
        "mm_projector_lr": training_args.mm_projector_lr,
        "mm_vision_tower_lr": training_args.mm_vision_tower_lr,
        "plugin_args": plugin_argument_values(model_args, data_args, training_args),
        "global_batch_size": training_args.per_device_train_batch_size * training_args.world_size
        * training_args.gradient_accumulation_steps,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "deepspeed": training_args.deepspeed if isinstance(training_args.deepspeed, str) else bool(training_args.deepspeed),
        "world_size": training_args.world_size,
    }
    Path(training_args.output_dir, TRAINING_RECORD_NAME).write_text(json.dumps(record, indent=1))


def save_trained_model(trainer: LLaVATrainer, model, tokenizer, output_dir: str) -> None:
    """Adapter-only runs: ``config.json`` + ``mm_projector.bin``; others: the whole HF model with its
    tokenizer and image processor (ZeRO-3 gathers 16-bit weights, ``zero3.json`` enables it)."""
    trainer.save_model(output_dir)
    if trainer.adapter_only or not trainer.args.should_save:
        return
    tokenizer.save_pretrained(output_dir)
    tower = model.get_vision_tower() if hasattr(model, "get_vision_tower") else None
    if tower is not None:
        tower.image_processor.save_pretrained(output_dir)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        train(argv=argv if argv is not None else sys.argv[1:])
    except UnusableDataError as err:
        print(f"error: {str(err).splitlines()[0]} (counts in {DATA_REPORT_NAME})", file=sys.stderr)
        return 2
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Ranks leave together and tear the group down before the interpreter exits; left to exit-time
    destructors, a CPU (gloo) group's threads can abort the process after a successful run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
