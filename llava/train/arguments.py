"""Command-line arguments of ``llava/train/train_mem.py``: LLaVA-NeXT's fields and defaults.

Three dataclasses parsed by ``transformers.HfArgumentParser``. Upstream's flags keep their names and
defaults; flags that transformers 5 removed but the OneVision scripts still pass
(``--evaluation_strategy``, ``--warmup_ratio``, ``--group_by_length``) are accepted and mapped onto
their transformers-5 equivalents. Plugins add their own fields (:class:`llava.plugin.Plugin`:
``model_args``, ``data_args``, ``training_args``), merged into these three classes by :func:`parse_args`;
any ``mm_projector_type`` registered with the projector registry is accepted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

import torch
import transformers

from llava.plugin import param_groups, part_aliases, plugins

logger = logging.getLogger(__name__)

#: The core's values of ``--mm_tunable_parts``; plugins add their parameter groups' names.
TUNABLE_PARTS = ("mm_mlp_adapter", "mm_vision_resampler", "mm_vision_tower", "vision_tower_head",
                 "mm_language_model")
#: Other names of the core's parts (plugins add their own aliases).
TUNABLE_PART_ALIASES = {"mm_projector": "mm_mlp_adapter", "language_model": "mm_language_model",
                        "vision_model_head": "vision_tower_head"}


def tunable_part_names() -> tuple[str, ...]:
    """Core parts, then every plugin's parameter groups."""
    return TUNABLE_PARTS + tuple(name for name in param_groups() if name not in TUNABLE_PARTS)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default="facebook/opt-125m")
    model_class_name: str | None = field(default=None)
    mm_tunable_parts: str | None = field(
        default=None, metadata={"help": f"comma-separated subset of {', '.join(TUNABLE_PARTS)}"}
    )
    version: str | None = field(default="v0", metadata={"help": "conversation template key"})
    freeze_backbone: bool = field(default=False)
    tune_mm_mlp_adapter: bool = field(default=False)
    tune_mm_vision_resampler: bool = field(default=False)
    vision_tower: str | None = field(default=None)
    vision_tower_pretrained: str | None = field(default=None)
    unfreeze_mm_vision_tower: bool = field(default=False)
    unfreeze_language_model: bool = field(default=False)
    mm_vision_select_layer: int | None = field(default=-1)
    pretrain_mm_mlp_adapter: str | None = field(default=None)
    mm_projector_type: str | None = field(default="linear")
    mm_use_im_start_end: bool = field(default=False)
    mm_use_im_patch_token: bool = field(default=True)
    mm_patch_merge_type: str | None = field(default="flat")
    mm_vision_select_feature: str | None = field(default="patch")
    mm_resampler_type: str | None = field(default=None)
    mm_mask_drop_mode: str = field(default="fixed")
    mm_mask_drop_skip_percentage: int = field(default=0)
    mm_mask_drop_ratio: float = field(default=0.25)
    mm_mask_drop_ratio_upper: float | None = field(default=None)
    mm_mask_drop_ratio_lower: float | None = field(default=None)
    mm_spatial_pool_stride: int | None = field(default=None)
    mm_spatial_pool_mode: str = field(default="bilinear")
    mm_spatial_pool_out_channels: int | None = field(default=None)
    mm_perceiver_depth: int | None = field(default=3)
    mm_perceiver_latents: int | None = field(default=32)
    mm_perceiver_ff_mult: float | None = field(default=4)
    mm_perceiver_pretrained: str | None = field(default=None)
    mm_qformer_depth: int | None = field(default=3)
    mm_qformer_latents: int | None = field(default=32)
    mm_qformer_pretrained: str | None = field(default=None)
    rope_scaling_factor: float | None = field(default=None)
    rope_scaling_type: str | None = field(default=None)
    s2: bool | None = field(default=False)
    s2_scales: str | None = field(default="336,672,1008")
    use_pos_skipping: bool | None = field(default=False)
    pos_skipping_range: int | None = field(default=4096)
    mm_newline_position: str | None = field(default="grid")
    delay_load: bool | None = field(default=True)
    add_faster_video: bool | None = field(default=False)
    faster_token_stride: int | None = field(default=10)
    text_tower: str | None = field(
        default=None, metadata={"help": "SigLIP folder of an instruction (text) tower; default: --vision_tower"})
    mm_vision_tower_type: str | None = field(
        default=None, metadata={"help": "a registered vision tower; default: chosen by the tower folder's model_type"})

    def __post_init__(self) -> None:
        if self.mm_tunable_parts:
            parts = [p.strip() for p in self.mm_tunable_parts.split(",") if p.strip()]
            aliases = {**TUNABLE_PART_ALIASES, **part_aliases()}
            parts = list(dict.fromkeys(aliases.get(p, p) for p in parts))
            known = tunable_part_names()
            unknown = sorted(set(parts) - set(known))
            if unknown:
                raise ValueError(f"--mm_tunable_parts: unknown parts {unknown}; known: {', '.join(known)}")
            self.mm_tunable_parts = ",".join(parts)


@dataclass
class DataArguments:
    data_path: str | None = field(default=None, metadata={"help": ".json, prefix{a,b}.json, or .yaml mixture"})
    lazy_preprocess: bool = False
    is_multimodal: bool = False
    early_mix_text: bool = False
    image_folder: str | None = field(default=None)
    image_aspect_ratio: str = "square"
    image_grid_pinpoints: str | None = field(default=None)
    image_crop_resolution: int | None = field(default=None)
    image_split_resolution: int | None = field(default=None)
    video_folder: str | None = field(default=None)
    video_fps: int | None = field(default=1)
    frames_upbound: int | None = field(default=0)
    add_time_instruction: bool | None = field(default=False)
    force_sample: bool | None = field(default=False)
    num_frames: int | None = field(
        default=None, metadata={"help": "frames per video, uniform segment midpoints (overrides video_fps)"})
    video_cache_mb: int = field(default=0, metadata={
        "help": "keep up to this many MiB of decoded video frames per data process, so a video read every "
                "epoch is decoded once (0: decode at every read, LLaVA's behaviour)"})
    strict_data: bool = field(default=False, metadata={"help": "bad samples are errors instead of counted skips"})
    allow_outside_data_root: bool = field(default=False, metadata={
        "help": "read media paths that are absolute or leave their folder/data_root via '..' (refused by default)"})
    max_image_pixels: int = field(default=89_478_485, metadata={"help": "larger images are skipped (PIL's limit)"})
    label_mode: str = field(default="answer", metadata={"help": "answer | onevision (upstream marker supervision)"})


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    cache_dir: str | None = field(default=None)
    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    freeze_mm_mlp_adapter: bool = field(default=False)
    freeze_mm_vision_resampler: bool = field(default=False)
    mpt_attn_impl: str | None = field(default="triton")
    model_max_length: int = field(default=4096)
    double_quant: bool = field(default=True)
    quant_type: str = field(default="nf4")
    bits: int = field(default=16)
    lora_enable: bool = False
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_weight_path: str = ""
    lora_bias: str = "none"
    mm_projector_lr: float | None = None
    mm_vision_tower_lr: float | None = None
    group_by_varlen: bool = field(default=False)
    group_by_modality_length: bool = field(default=False)
    group_by_modality_length_auto: bool = field(default=False)
    auto_find_batch_size: bool = field(default=False)
    gradient_checkpointing: bool = field(default=True)
    verbose_logging: bool = field(default=False)
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "sdpa | flash_attention_2 (falls back to sdpa when flash-attn is absent) | eager"}
    )
    # transformers-4 flags the OneVision scripts still pass, mapped in __post_init__
    evaluation_strategy: str | None = field(default=None, metadata={"help": "alias of --eval_strategy"})
    warmup_ratio: float | None = field(default=None, metadata={"help": "alias of a fractional --warmup_steps"})
    group_by_length: bool = field(default=False, metadata={"help": "length-grouped sampler (LLaVA's)"})

    def __post_init__(self) -> None:
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            if self.warmup_steps:
                raise ValueError("pass either --warmup_ratio or --warmup_steps, not both")
            self.warmup_steps = self.warmup_ratio
        if not torch.cuda.is_available():  # pinned memory needs an accelerator; torch warns on every loader
            self.dataloader_pin_memory = False
        # upstream's --gradient_checkpointing, under the name newer transformers read (no deprecation warning)
        if getattr(self, "activation_checkpointing", False) is None and self.gradient_checkpointing is not None:
            self.activation_checkpointing, self.gradient_checkpointing = self.gradient_checkpointing, None
        super().__post_init__()


_MERGED: dict[tuple, tuple[type, type, type]] = {}


def argument_classes() -> tuple[type, type, type]:
    """The three argument classes with every registered plugin's fields merged in.

    A plugin field whose name the core or another plugin already uses is an error naming both. The
    merged classes are module attributes (``ModelArgumentsWithPlugins`` ...), so the Trainer can pickle
    its arguments into checkpoints.
    """
    registered = tuple(plugins())
    key = tuple(id(p) for p in registered)
    if key in _MERGED:
        # the module attribute names the classes of this plugin set again (another set may have been
        # merged meanwhile, e.g. while a plugin was registered for a while): pickle looks them up by name
        for cls in _MERGED[key]:
            if cls.__name__.endswith("WithPlugins"):
                globals()[cls.__name__] = cls
        return _MERGED[key]
    owners = {f.name: "the core" for cls in (ModelArguments, DataArguments, TrainingArguments) for f in fields(cls)}
    merged = []
    for base, attr in ((ModelArguments, "model_args"), (DataArguments, "data_args"),
                       (TrainingArguments, "training_args")):
        extra = []
        for plugin in registered:
            cls = getattr(plugin, attr)
            if cls is None:
                continue
            for f in fields(cls):
                if f.name in owners:
                    raise ValueError(f"plugin {plugin.name!r}: argument --{f.name} is already defined by {owners[f.name]}")
                owners[f.name] = f"plugin {plugin.name!r}"
            extra.append(cls)
        if not extra:
            merged.append(base)
            continue
        name = f"{base.__name__}WithPlugins"
        cls = dataclass(type(name, (base, *extra), {"__module__": __name__, "__qualname__": name}))
        globals()[name] = cls
        merged.append(cls)
    _MERGED[key] = tuple(merged)
    return _MERGED[key]


def __getattr__(name: str):
    """Unpickling arguments saved by a run (``training_args.bin``) rebuilds the merged classes."""
    if name.endswith("ArgumentsWithPlugins"):
        argument_classes()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parses a LLaVA training command line (``argv=None``: ``sys.argv``), plugin flags included."""
    parser = transformers.HfArgumentParser(argument_classes())
    return parser.parse_args_into_dataclasses(args=argv)
