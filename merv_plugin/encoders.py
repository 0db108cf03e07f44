"""MERV's encoder kinds: which HF class reads a folder, what it is fed, which layer is read.

Each encoder of the tower is an :class:`EncoderSpec` (one entry of the tower folder's ``encoders``
list). Its ``kind`` names a :class:`EncoderKind`, which fixes the HF model class, the ``model_type`` a
folder must declare, the prefix tokens to drop (CLS, registers) and the defaults of its preprocessing
(MERV's, ``merv/models/backbones/video/*.py``):

===============  ================================  ==========================  ============  ===============
kind             HF class                          pixels (per frame)          layer         dropped
===============  ================================  ==========================  ============  ===============
``clip_frames``  ``CLIPVisionModel``, per frame    CLIP mean/std, short side   ``-2``        CLS
                 (stands for LanguageBind-Video)   + centre crop, bilinear
``dinov2``       ``Dinov2WithRegistersModel``      ImageNet mean/std, squash,  ``-2``        CLS, registers
                                                   bicubic
``vivit``        ``VivitModel`` (tubelets)         0.5/0.5, squash, bilinear   ``"last"``    CLS
``siglip``       ``SiglipVisionModel``             0.5/0.5, squash, bicubic    ``-2``        none
===============  ================================  ==========================  ============  ===============

``layer``: an index into ``hidden_states`` (negative from the end; ``-2`` is the penultimate block's
output, before any final norm: timm's ``get_intermediate_layers(n={L-2})`` in MERV) or ``"last"`` for
``last_hidden_state`` (after the final LayerNorm: ViViT in MERV). Layers past the one read are dropped
when the model is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    VivitConfig,
    VivitModel,
)

from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightRenaming, rename_source_key

from llava.model.weights import config_fields, read_json, read_state_dict

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

RESIZES = ("squash", "short_side_crop")
INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class EncoderKind:
    """What one kind of encoder needs (module docstring's table)."""

    model_class: type
    config_class: type
    #: ``model_type`` values a folder may declare; the first is the vision model's own
    model_types: tuple[str, ...]
    #: ``(config) -> number of prefix tokens`` to drop from each sequence
    prefix_tokens: Callable[[Any], int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str
    interpolation: str
    layer: int | str
    #: ``(config) -> kwargs`` for the model class (e.g. no pooler)
    model_kwargs: Callable[[Any], dict] = lambda config: {}
    #: the key under which a joint (image-text) config nests the vision part
    nested_key: str | None = None
    tubelet: bool = False


KINDS: dict[str, EncoderKind] = {
    "clip_frames": EncoderKind(CLIPVisionModel, CLIPVisionConfig, ("clip_vision_model", "clip"), lambda c: 1,
                               CLIP_MEAN, CLIP_STD, "short_side_crop", "bilinear", -2, nested_key="vision_config"),
    "dinov2": EncoderKind(Dinov2WithRegistersModel, Dinov2WithRegistersConfig, ("dinov2_with_registers",),
                          lambda c: 1 + c.num_register_tokens, IMAGENET_MEAN, IMAGENET_STD, "squash", "bicubic", -2),
    "vivit": EncoderKind(VivitModel, VivitConfig, ("vivit",), lambda c: 1, HALF, HALF, "squash", "bilinear", "last",
                         model_kwargs=lambda c: {"add_pooling_layer": False}, tubelet=True),
    "siglip": EncoderKind(SiglipVisionModel, SiglipVisionConfig, ("siglip_vision_model", "siglip"), lambda c: 0,
                          HALF, HALF, "squash", "bicubic", -2, nested_key="vision_config"),
}


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder of the tower, as listed in the tower folder's ``config.json``.

    Attributes:
        name: unique name (``VisualBatch.encoders`` key, log and error messages).
        kind: one of :data:`KINDS`.
        path: the encoder's HF folder, relative to the tower folder or absolute.
        image_size: side of the square input; ``None``: the model config's ``image_size``.
        frame_rate: frames the encoder takes per LLM frame (ViViT: 2, its tubelet depth).
        layer, mean, std, resize, interpolation: ``None`` takes the kind's default.
    """

    name: str
    kind: str
    path: str
    image_size: int | None = None
    frame_rate: int = 1
    layer: int | str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: str | None = None
    interpolation: str | None = None
    #: the HF vision config (filled from the folder; saved with a LLaVA checkpoint)
    config: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"MERV encoder {self.name!r}: kind {self.kind!r} is not one of {sorted(KINDS)}")
        if not isinstance(self.frame_rate, int) or self.frame_rate < 1:
            raise ValueError(f"MERV encoder {self.name!r}: frame_rate must be an integer >= 1, got {self.frame_rate!r}")
        if self.resize is not None and self.resize not in RESIZES:
            raise ValueError(f"MERV encoder {self.name!r}: resize {self.resize!r} is not one of {RESIZES}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"MERV encoder {self.name!r}: interpolation {self.interpolation!r} is not one of "
                             f"{INTERPOLATIONS}")

    @classmethod
    def from_dict(cls, raw: dict, where: str) -> EncoderSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown or "name" not in raw or "kind" not in raw or "path" not in raw:
            raise ValueError(f"{where}: an encoder entry needs name, kind and path and takes only {sorted(known)}; "
                             f"got {sorted(raw)}")
        values = dict(raw)
        for key in ("mean", "std"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("mean", "std"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @property
    def info(self) -> EncoderKind:
        return KINDS[self.kind]

    def hf_config(self):
        return self.info.config_class(**config_fields(self.config))

    def resolved(self) -> EncoderSpec:
        """Every ``None`` option replaced by the kind's default (the image size by the model's)."""
        kind, config = self.info, self.hf_config()
        return replace(self, image_size=self.image_size or _side(config.image_size), layer=self.layer or kind.layer,
                       mean=self.mean or kind.mean, std=self.std or kind.std, resize=self.resize or kind.resize,
                       interpolation=self.interpolation or kind.interpolation)


def _side(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def read_encoder_config(spec: EncoderSpec, folder: Path) -> dict:
    """The vision config of ``folder/config.json``; a missing folder or another model class is an error
    naming the encoder and the file."""
    config_file = folder / "config.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"MERV encoder {spec.name!r} ({spec.kind}): folder {folder} does not exist")
    if not config_file.is_file():
        raise FileNotFoundError(f"MERV encoder {spec.name!r} ({spec.kind}): {config_file} does not exist")
    raw = read_json(config_file)
    kind = spec.info
    model_type = raw.get("model_type")
    if model_type not in kind.model_types:
        raise ValueError(f"MERV encoder {spec.name!r}: {config_file} has model_type {model_type!r}, but kind "
                         f"{spec.kind!r} reads {kind.model_class.__name__} checkpoints (model_type one of "
                         f"{list(kind.model_types)})")
    if model_type != kind.model_types[0]:  # a joint (image-text) checkpoint: its vision part
        raw = dict(raw.get(kind.nested_key) or {})
    raw["model_type"] = kind.model_types[0]
    return raw


class EncoderTrunk(nn.Module):
    """One frozen encoder: the HF model, cut after the layer read, with its feature read-out.

    ``forward(pixels)``: ``(N, 3, S, S)`` frames, or ``(N, F, 3, S, S)`` clips of ``F`` frames for a
    tubelet encoder -> ``(N * t, h, w, D)`` patch features (``t`` = temporal slots per input: 1 per
    frame, ``F / tubelet`` per clip).
    """

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec.resolved()
        kind = spec.info
        config = spec.hf_config()
        num_layers = config.num_hidden_layers
        layer = self.spec.layer
        if layer == "last":
            self.read_index = None
        else:
            index = layer if layer >= 0 else num_layers + 1 + layer
            if not 1 <= index <= num_layers:
                raise ValueError(f"MERV encoder {spec.name!r}: layer {layer} is out of range for {num_layers} layers")
            config.num_hidden_layers = index  # later blocks never run
            self.read_index = index
        if kind.model_class is SiglipVisionModel:
            config.vision_use_head = False
        self.model = kind.model_class(config, **kind.model_kwargs(config))
        self.model.requires_grad_(False)
        self.num_prefix = kind.prefix_tokens(config)
        self.patch = config.tubelet_size[1] if kind.tubelet else config.patch_size
        self.grid = self.spec.image_size // self.patch
        if self.grid * self.patch != self.spec.image_size:
            raise ValueError(f"MERV encoder {spec.name!r}: image_size {self.spec.image_size} is not a multiple of the "
                             f"patch size {self.patch}")
        # another input side than the checkpoint's: position tables are resampled (DINOv2 always does)
        self.resample_positions = kind.nested_key is not None and self.spec.image_size != _side(config.image_size)
        self.window = config.num_frames if kind.tubelet else 1
        self.tubelet = config.tubelet_size[0] if kind.tubelet else 1
        if kind.tubelet and self.spec.image_size != _side(config.image_size):
            raise ValueError(f"MERV encoder {spec.name!r}: ViViT's position table fixes image_size "
                             f"{_side(config.image_size)}, got {self.spec.image_size}")
        if spec.frame_rate != self.tubelet:
            raise ValueError(f"MERV encoder {spec.name!r}: frame_rate {spec.frame_rate} gives {spec.frame_rate}/"
                             f"{self.tubelet} temporal slots per LLM frame; every encoder must give exactly 1 "
                             f"(frame_rate = tubelet depth) so that all encoders agree on t")

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def load(self, folder: Path) -> None:
        """Reads every tensor of the (truncated) model from ``folder``, strictly. Checkpoint names go
        through transformers' own renaming for the class (a saved Dinov2 ``attention.attention.query``
        is today's ``attention.q_proj``; a task model's ``vivit.`` prefix is dropped)."""
        wanted = self.model.state_dict()
        transforms = get_model_conversion_mapping(self.model)
        renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
        converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
        state = {}
        for key, value in read_state_dict(folder).items():
            name, converted = rename_source_key(key, renamings, converters, self.model.base_model_prefix, wanted)
            if converted is not None:
                raise ValueError(f"MERV encoder {self.spec.name!r}: {folder} holds {key!r}, which needs a weight "
                                 f"conversion this loader does not run")
            if name in wanted:
                state[name] = value
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise KeyError(f"MERV encoder {self.spec.name!r}: {folder} lacks {len(missing)} tensors of "
                           f"{type(self.model).__name__}, e.g. {missing[:5]}")
        mismatched = [f"{k} {tuple(v.shape)} vs {tuple(wanted[k].shape)}" for k, v in state.items()
                      if v.shape != wanted[k].shape]
        if mismatched:
            raise ValueError(f"MERV encoder {self.spec.name!r}: {folder} shape mismatch for {mismatched[:5]}")
        self.model.load_state_dict(state)
        self.model.requires_grad_(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self.resample_positions else {}
        out = self.model(pixel_values=pixels, output_hidden_states=self.read_index is not None, **kwargs)
        hidden = out.last_hidden_state if self.read_index is None else out.hidden_states[-1]
        patches = hidden[:, self.num_prefix:]
        slots = (pixels.shape[1] // self.tubelet) if self.spec.info.tubelet else 1
        return patches.reshape(pixels.shape[0] * slots, self.grid, self.grid, patches.shape[-1])
