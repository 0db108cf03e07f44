"""The LLaVA architecture, language-model agnostic: vision tower -> projector -> spliced embeddings.

The visual items of a micro-batch (images, videos, the dummy image of a text-only sample) follow one
line, function by function:

    pixels --tower.encode_batch--> VisualBatch (sum T, H, W, D_v) --projector--> tokens (L_i, D)
           --splice_visual_tokens--> inputs_embeds --LLM

Which projector path runs is decided once, when the modules are built: token-wise projectors
(``mlp2x_gelu``...) get OneVision's per-frame 2x2 pooling and newline tokens afterwards; structured
projectors (:class:`~llava.model.multimodal_projector.base.StructuredProjector`) see the whole batch
with its (T,H,W) layout, an instruction and plugin fields per item, and return final tokens and,
optionally, auxiliary losses that the model adds to the LM loss with ``config.aux_loss_weights``.
A training-free token reducer (``config.mm_token_reducer``, :mod:`llava.model.token_reduction`) acts
on the tower's features, on the projected tokens, or, during ``generate``, inside the LLM.
Runtime-mutable config keys (``mm_spatial_pool_*``, ``mm_newline_position``, ``tokenizer_*``) are
read from ``self.config`` at every call, as lmms-eval changes them between calls.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import IGNORE_INDEX
from .instructions import recover_instructions
from .multimodal_encoder.builder import build_vision_tower
from .multimodal_projector.base import StructuredProjector
from .multimodal_projector.builder import build_vision_projector, projector_wants_dense_embeds
from .splicing import SplicedBatch, splice_visual_tokens
from .token_reduction import TokenReducer, build_token_reducer, llm_reduction
from .visual import ProjectorOutput, VisualBatch
from .weights import read_tensor_file, readable_weight_files

logger = logging.getLogger(__name__)


class LlavaMetaModel:
    """Mixin placed before the HF base model (``LlavaQwenModel(LlavaMetaModel, Qwen2Model)``)."""

    def __init__(self, config):
        super().__init__(config)
        if getattr(config, "mm_vision_tower", None):
            # Weights come from the checkpoint; the tower folder is only read if they are missing.
            self._build_vision_modules(config, delay_load=True)

    def _build_vision_modules(self, config, delay_load: bool) -> None:
        keep_head = projector_wants_dense_embeds(config)
        self.vision_tower = build_vision_tower(config, delay_load=delay_load, keep_head=keep_head)
        config.mm_vision_tower_config = self.vision_tower.full_config
        config.mm_hidden_size = self.vision_tower.hidden_size
        self.vision_resampler = nn.Identity()  # upstream name; no resampler runs in the forward path
        self.mm_projector = build_vision_projector(config, delay_load=delay_load, vision_cfg=self.vision_tower.config)
        # the one choice of visual path: whole-batch (structured) or token-wise projection
        self.structured_projector = isinstance(self.mm_projector, StructuredProjector)
        self.set_token_reducer(getattr(config, "mm_token_reducer", None), getattr(config, "mm_token_reducer_config", None))
        if "unpad" in getattr(config, "mm_patch_merge_type", "flat"):
            self.image_newline = nn.Parameter(torch.zeros(config.hidden_size))

    def get_vision_tower(self):
        tower = getattr(self, "vision_tower", None)
        return tower[0] if isinstance(tower, list) else tower

    def set_token_reducer(self, name: str | None, options: dict | None = None) -> TokenReducer | None:
        """Selects a registered token reducer (``None``/``"none"``: none) for every later call, and
        records it in the config (``mm_token_reducer``, ``mm_token_reducer_config``). A reducer has no
        weights: it lives outside the module tree, so checkpoints and parameter groups ignore it."""
        reducer = build_token_reducer(name, options)
        if reducer is not None:
            reducer.attach(self)
        previous = self.get_token_reducer()
        if previous is not None:
            previous.detach()
        self.__dict__["token_reducer"] = reducer
        for key, value in (("mm_token_reducer", name), ("mm_token_reducer_config", reducer and reducer.options())):
            if reducer is not None:
                setattr(self.config, key, value)
            elif key in vars(self.config):
                delattr(self.config, key)
        return reducer

    def get_token_reducer(self) -> TokenReducer | None:
        return self.__dict__.get("token_reducer")

    def initialize_vision_modules(self, model_args, fsdp=None) -> None:
        """Train-time: attaches tower and projector to an LLM (or re-enables them) per ``model_args``."""
        config = self.config
        config.mm_vision_tower = model_args.vision_tower
        config.vision_tower_pretrained = getattr(model_args, "vision_tower_pretrained", None)
        config.use_mm_proj = True
        config.mm_projector_type = getattr(model_args, "mm_projector_type", "linear")
        config.mm_vision_select_layer = getattr(model_args, "mm_vision_select_layer", -2)
        config.mm_vision_select_feature = getattr(model_args, "mm_vision_select_feature", "patch")
        config.mm_patch_merge_type = getattr(model_args, "mm_patch_merge_type", "flat")
        if self.get_vision_tower() is None:
            self._build_vision_modules(config, delay_load=False)
            if hasattr(self, "image_newline"):
                std = 1 / math.sqrt(config.hidden_size)
                self.image_newline.data = torch.randn(config.hidden_size, dtype=self.image_newline.dtype) * std
        else:
            tower = self.get_vision_tower()
            if not tower.is_loaded:
                tower.load_model()
            config.mm_hidden_size = tower.hidden_size
            self.mm_projector.requires_grad_(True)

        adapter = getattr(model_args, "pretrain_mm_mlp_adapter", None)
        if adapter:
            load_projector_weights(self.mm_projector, adapter)


def load_projector_weights(projector: nn.Module, path: str, strict: bool = True):
    """Loads ``mm_projector.bin`` (full key names, e.g. ``model.mm_projector.0.weight``) safely.

    Returns the ``(missing, unexpected)`` key lists; with ``strict`` a mismatch raises naming the keys.
    """
    state = read_tensor_file(path)
    marker = "mm_projector."
    picked = {k.split(marker, 1)[1]: v for k, v in state.items() if marker in k}
    if not picked and projector.state_dict():  # a parameter-free projector's adapter file is empty
        raise KeyError(f"{path}: no key contains {marker!r} (found e.g. {sorted(state)[:3]})")
    own = projector.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in picked.items()
                  if k in own and v.shape != own[k].shape]
    if mismatched:
        raise ValueError(f"{path}: projector shape mismatch for {mismatched}")
    result = projector.load_state_dict(picked, strict=False)
    missing = [k for k in result.missing_keys if not _loads_itself(projector, k)]
    unexpected = list(result.unexpected_keys)
    if missing and not unexpected and hasattr(projector, "adapter_keys_may_be_missing"):
        if projector.adapter_keys_may_be_missing(missing):
            logger.warning("%s: the adapter has no weights for %s; they keep their fresh initialisation", path, missing)
            return missing, unexpected
    if strict and (missing or unexpected):
        raise KeyError(f"{path}: projector keys do not match; missing {missing}, unexpected {unexpected}")
    if missing or unexpected:
        logger.warning("%s: missing projector keys %s, unexpected %s", path, missing, unexpected)
    return missing, unexpected


def _loads_itself(root: nn.Module, key: str) -> bool:
    """Whether ``key`` lives under a submodule that reads its own weights (``load_model``), such as a
    text tower loaded from its checkpoint folder; adapter files leave those out."""
    module, parts = root, key.split(".")[:-1]
    for part in parts:
        module = getattr(module, part, None)
        if module is None:
            return False
        if hasattr(module, "load_model") and hasattr(module, "is_loaded"):
            return True
    return False


def spatial_pool(image_feature: torch.Tensor, stride: int, mode: str) -> torch.Tensor:
    """OneVision's per-frame pooling: ``(T, H*W, C)`` -> ``(T, h*w, C)`` with ``mode`` (``mm_spatial_pool_mode``:
    average, max or bilinear) and ``stride``; also pools per-patch maps (scores, keys) the same way."""
    frames, tokens, dim = image_feature.shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"get_2dPool needs a square patch grid, got {tokens} tokens per frame")
    grid = image_feature.view(frames, side, side, dim).permute(0, 3, 1, 2)
    if mode == "average":
        grid = F.avg_pool2d(grid, stride)
    elif mode == "max":
        grid = F.max_pool2d(grid, stride)
    elif mode == "bilinear":
        size = math.ceil(side / stride)
        grid = F.interpolate(grid, size=(size, size), mode="bilinear")
    else:
        raise ValueError(f"mm_spatial_pool_mode {mode!r} is not one of average, max, bilinear")
    return grid.permute(0, 2, 3, 1).reshape(frames, -1, dim)


def pool_stride(config) -> int:
    """``config.mm_spatial_pool_stride`` (2 when unset)."""
    stride = getattr(config, "mm_spatial_pool_stride", None)
    return int(stride) if stride else 2


def _as_item_list(images, modalities) -> tuple[list[torch.Tensor], list[str]]:
    """Normalises ``images`` to a list of ``(T,3,S,S)`` tensors with one modality each.

    Accepted: a list of ``(3,S,S)`` / ``(T,3,S,S)`` tensors (the collator, lmms-eval); a 5-D tensor
    (one item per row); a 4-D tensor, read as one video when the single modality is ``"video"`` and
    as a batch of images otherwise.
    """
    mods = _as_list(modalities) if modalities is not None else ["image"]
    if isinstance(images, torch.Tensor):
        if images.ndim == 4:
            items = [images] if mods == ["video"] else list(images.unsqueeze(1))
        elif images.ndim == 5:
            items = list(images)
        else:
            raise ValueError(f"images tensor must be 4-D or 5-D, got shape {tuple(images.shape)}")
    else:  # an item is pixels, or {encoder: pixels} for a tower with several encoders
        items = [img.unsqueeze(0) if isinstance(img, torch.Tensor) and img.ndim == 3 else img for img in images]
    if len(mods) == 1 and len(items) > 1:
        mods = mods * len(items)
    if len(mods) != len(items):
        raise ValueError(f"{len(items)} visual items but {len(mods)} modalities")
    return items, mods


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value)


class LlavaMetaForCausalLM(ABC):
    """Mixin placed before the HF CausalLM: multimodal ``forward`` and ``generate``."""

    # Per-batch mean loss over supervised tokens: the Trainer's token count would be taken before
    # visual tokens are spliced in and sequences truncated.
    accepts_loss_kwargs = False

    @abstractmethod
    def get_model(self):
        ...

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, then submodules that read side files (a text tokenizer shipped in a
        subfolder) are told the checkpoint folder (``set_checkpoint_folder``)."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        folder = Path(str(pretrained_model_name_or_path))
        if folder.is_dir():
            for module in model.modules():
                if hasattr(module, "set_checkpoint_folder"):
                    module.set_checkpoint_folder(folder)
        return loaded

    def get_vision_tower(self):
        return self.get_model().get_vision_tower()

    # ------------------------------------------------------------------ encoding

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Upstream helper: ``(N,3,S,S)`` -> token-wise projected ``(N, H*W, D)``."""
        return self.get_model().mm_projector(self.get_vision_tower()(images))

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save, with the weight files as readable as the rest of the folder."""
        super().save_pretrained(save_directory, *args, **kwargs)
        readable_weight_files(save_directory)

    def get_2dPool(self, image_feature: torch.Tensor, stride: int = 2) -> torch.Tensor:
        """``(T, H*W, D)`` -> ``(T, h*w, D)`` pooled per frame with ``config.mm_spatial_pool_mode``."""
        return spatial_pool(image_feature, stride, getattr(self.config, "mm_spatial_pool_mode", "bilinear"))

    def _pool_stride(self) -> int:
        return pool_stride(self.config)

    def _tokenwise_item(self, feats: torch.Tensor, modality: str) -> torch.Tensor:
        """Projected features of one item ``(T, H*W, D)`` -> its LLM tokens ``(L, D)``."""
        model = self.get_model()
        newline = getattr(model, "image_newline", None)
        use_newline = newline is not None and "unpad" in getattr(self.config, "mm_patch_merge_type", "flat")
        if modality != "video":
            tokens = feats.flatten(0, 1)
            return torch.cat([tokens, newline[None].to(tokens.dtype)]) if use_newline else tokens
        pooled = self.get_2dPool(feats, self._pool_stride())  # (T, h*w, D)
        position = getattr(self.config, "mm_newline_position", "one_token")
        if not use_newline or position == "no_token":
            return pooled.flatten(0, 1)
        nl = newline.to(pooled.dtype)
        if position == "grid":
            frames, tokens, dim = pooled.shape
            side = math.isqrt(tokens)
            rows = pooled.view(frames, side, side, dim)
            rows = torch.cat([rows, nl.expand(frames, side, 1, dim)], dim=2)
            return rows.reshape(-1, dim)
        if position == "frame":
            return torch.cat([pooled, nl.expand(pooled.shape[0], 1, -1)], dim=1).flatten(0, 1)
        if position == "one_token":
            return torch.cat([pooled.flatten(0, 1), nl[None]])
        raise ValueError(f"mm_newline_position {position!r} is not one of grid, frame, one_token, no_token")

    @torch.no_grad()
    def num_visual_tokens(self, num_frames: int, modality: str = "video") -> int:
        """Number of LLM tokens one visual item of ``num_frames`` frames becomes.

        A structured projector says it itself (``num_output_tokens``). For token-wise projectors the
        pooling and newline rules above run on zero features of one and of two frames: every layout
        adds the same number of tokens per frame, so two small probes give the count for any length.
        """
        model = self.get_model()
        side = self.get_vision_tower().num_patches_per_side
        count = self._num_projected_tokens(num_frames, modality)
        reducer = model.get_token_reducer()
        return reducer.num_output_tokens(count, num_frames, side, side, modality) if reducer is not None else count

    @torch.no_grad()
    def _num_projected_tokens(self, num_frames: int, modality: str) -> int:
        model = self.get_model()
        side = self.get_vision_tower().num_patches_per_side
        if model.structured_projector:
            return model.mm_projector.num_output_tokens(num_frames, side, side, modality)
        weight = self.get_input_embeddings().weight

        def probe(frames: int) -> int:
            feats = weight.new_zeros(frames, side * side, self.config.hidden_size)
            return self._tokenwise_item(feats, modality).shape[0]

        one_frame = probe(1)
        return one_frame + (probe(2) - one_frame) * (num_frames - 1)

    def encode_visual_items(
        self, items: list, modalities: list[str], instructions: list[str] | None = None,
        fields: dict[str, list] | None = None,
    ) -> list[torch.Tensor]:
        """All visual items of a micro-batch -> one ``(L_i, D)`` token tensor per item."""
        return self.encode_visual_batch(items, modalities, instructions, fields).tokens

    def encode_visual_batch(
        self, items: list, modalities: list[str], instructions: list[str] | None = None,
        fields: dict[str, list] | None = None,
    ) -> ProjectorOutput:
        """Tower (one pass over every frame of the batch), then the projector path chosen at build time.

        Args:
            items: ``(T_i,3,S,S)`` pixels per item (``{encoder: pixels}`` for multi-encoder towers).
            modalities: ``"image" | "video" | "text"`` per item.
            instructions: one per item, for instruction-conditioned projectors.
            fields: plugin per-sample fields, ``{name: [value per item]}``.
        """
        model = self.get_model()
        batch = replace(self.get_vision_tower().encode_batch(items, modalities), instructions=instructions,
                        fields=dict(fields or {}))  # checked again with what the caller added
        reducer = model.get_token_reducer()
        if reducer is not None and reducer.stage == "features":
            batch = reducer.reduce_features(batch)
        if model.structured_projector:
            out = model.mm_projector(batch)
            out = out if isinstance(out, ProjectorOutput) else ProjectorOutput(list(out))
        else:
            out = ProjectorOutput(self._project_tokenwise(batch))
        if reducer is not None and reducer.stage == "tokens":
            out.tokens = reducer.reduce_tokens(out.tokens, batch)
        return out

    def _project_tokenwise(self, batch: VisualBatch) -> list[torch.Tensor]:
        """Each frame's patches through the projector, then OneVision's per-item pooling and newlines."""
        projected = self.get_model().mm_projector(batch.features.flatten(1, 2))
        return [self._tokenwise_item(f, m) for f, m in zip(projected.split(batch.frames_per_item), batch.modalities)]

    # ------------------------------------------------------------------ instructions

    def set_instruction_tokenizer(self, tokenizer) -> None:
        """Lets the model recover instructions from ``input_ids`` when callers pass none."""
        self._instruction_tokenizer = tokenizer

    def _needs_instructions(self) -> bool:
        model = self.get_model()
        return bool(getattr(model, "structured_projector", False)) and model.mm_projector.uses_instructions

    def recover_instructions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[str]:
        """One instruction per visual item, read from the prompt (:mod:`llava.model.instructions`),
        cleaned by the projector."""
        tokenizer = getattr(self, "_instruction_tokenizer", None)
        if tokenizer is None:
            raise RuntimeError(
                "this projector is conditioned on instructions, but none were passed and no tokenizer is set "
                "to recover them from input_ids; pass instructions=[...] or call model.set_instruction_tokenizer()"
            )
        clean = getattr(self.get_model().mm_projector, "clean_instruction", str.strip)  # token-wise: as written
        return recover_instructions(input_ids, attention_mask, tokenizer, clean)

    # ------------------------------------------------------------------ splicing

    def prepare_inputs_labels_for_multimodal(
        self,
        input_ids,
        position_ids,
        attention_mask,
        past_key_values,
        labels,
        images,
        modalities=("image",),
        image_sizes=None,
        instructions=None,
        padding_side: str | None = None,
        sample_fields=None,
    ):
        """Replaces each ``IMAGE_TOKEN_INDEX`` by its item's tokens.

        Returns upstream's 6-tuple ``(None, position_ids, attention_mask, past_key_values,
        inputs_embeds, labels)``; inputs are returned unchanged when there is nothing to encode.
        Items are consumed in order: one per placeholder, and one (dropped) dummy per sample that has
        no placeholder.
        """
        prepared = self._prepare_multimodal(input_ids, attention_mask, labels, images, modalities, instructions,
                                            padding_side, sample_fields)
        if prepared is None:
            return input_ids, position_ids, attention_mask, past_key_values, None, labels
        spliced, _ = prepared
        return (
            None,
            spliced.position_ids if position_ids is not None else None,
            self._mask_like(spliced, attention_mask),
            past_key_values,
            spliced.inputs_embeds,
            spliced.labels if labels is not None else None,
        )

    @staticmethod
    def _mask_like(spliced: SplicedBatch, attention_mask):
        """The new mask in the caller's dtype; ``None`` when the caller gave none and nothing is padded."""
        if attention_mask is not None:
            return spliced.attention_mask.to(attention_mask.dtype)
        return None if bool(spliced.attention_mask.all()) else spliced.attention_mask

    def _prepare_multimodal(self, input_ids, attention_mask, labels, images, modalities, instructions,
                            padding_side, sample_fields) -> tuple[SplicedBatch, dict[str, torch.Tensor]] | None:
        """Encodes the visual items and splices them in; ``None`` when there is nothing to encode."""
        tower = self.get_vision_tower()
        if tower is None or images is None or input_ids.shape[1] == 1:
            return None
        items, mods = _as_item_list(images, modalities)
        if instructions is None and self._needs_instructions():
            instructions = self.recover_instructions(input_ids, attention_mask)
        if instructions is not None and len(instructions) != len(items):
            raise ValueError(f"{len(instructions)} instructions for {len(items)} visual items")
        encoded = self.encode_visual_batch(items, mods, instructions, sample_fields)
        spliced = splice_visual_tokens(
            input_ids, attention_mask, labels, self.get_model().embed_tokens(input_ids.clamp(min=0)), encoded.tokens,
            max_length=getattr(self.config, "tokenizer_model_max_length", None),
            padding_side=padding_side or getattr(self.config, "tokenizer_padding_side", "right"),
        )
        return spliced, encoded.losses

    def _weighted_aux_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum(weight * loss)`` with the weights of ``config.aux_loss_weights`` (written from the
        plugins' weight flags at training time); a loss without a weight is an error naming it."""
        weights = getattr(self.config, "aux_loss_weights", None) or {}
        missing = sorted(set(losses) - set(weights))
        if missing:
            raise KeyError(f"the projector returned auxiliary losses {missing} but config.aux_loss_weights has no "
                           f"weight for them ({weights}); declare them as a plugin AuxLoss")
        return sum(weights[name] * value for name, value in losses.items())

    def _supervised_forward(self, input_ids, attention_mask, position_ids, inputs_embeds, labels, kwargs):
        """The training forward: the LM's loss as its own forward computes it, with the LM head applied
        only at the positions whose next token is supervised in some sample of the batch (the answers:
        a video's hundreds of visual tokens and the prompt never are). ``logits`` holds those positions
        only. Same loss, without the head's cost (and memory) at every position."""
        from transformers.modeling_outputs import CausalLMOutputWithPast

        hidden = self.get_model()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            inputs_embeds=inputs_embeds, use_cache=False, **kwargs,
        ).last_hidden_state
        targets = labels[:, 1:]
        keep = (targets != IGNORE_INDEX).any(0).nonzero().squeeze(1)
        logits = self.lm_head(hidden[:, keep])
        loss = self.loss_function(logits=logits, labels=None, vocab_size=self.config.vocab_size,
                                  shift_labels=targets[:, keep].contiguous(), **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    # ------------------------------------------------------------------ HF entry points

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        images=None,
        image_sizes=None,
        return_dict=None,
        modalities=("image",),
        dpo_forward=False,
        cache_position=None,
        instructions=None,
        **kwargs,
    ):
        aux_losses: dict[str, torch.Tensor] = {}
        if inputs_embeds is None:
            prepared = self._prepare_multimodal(input_ids, attention_mask, labels, images, modalities, instructions,
                                                None, kwargs.pop("sample_fields", None))
            if prepared is not None:
                spliced, aux_losses = prepared
                input_ids, inputs_embeds = None, spliced.inputs_embeds
                position_ids = spliced.position_ids if position_ids is not None else None
                attention_mask = self._mask_like(spliced, attention_mask)
                labels = spliced.labels if labels is not None else None
        kwargs.pop("sample_fields", None)
        if output_attentions is not None:
            kwargs["output_attentions"] = output_attentions
        if output_hidden_states is not None:
            kwargs["output_hidden_states"] = output_hidden_states
        if past_key_values is not None:  # newer transformers name it `cache` and warn on the old name
            kwargs["past_key_values"] = past_key_values
        if dpo_forward:
            hidden = self.get_model()(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs,
            ).last_hidden_state
            return self.lm_head(hidden), labels
        if labels is not None and self.training and not use_cache and not (
                {"output_attentions", "output_hidden_states", "past_key_values"} & set(kwargs)):
            out = self._supervised_forward(input_ids, attention_mask, position_ids, inputs_embeds, labels, kwargs)
        else:
            out = super().forward(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache, **kwargs,
            )
        if aux_losses and out.loss is not None:
            out.loss = out.loss + self._weighted_aux_loss(aux_losses)
            out.aux_losses = {name: value.detach() for name, value in aux_losses.items()}
        return out

    @torch.no_grad()
    def generate(self, inputs=None, images=None, image_sizes=None, modalities=("image",), instructions=None, **kwargs):
        """Returns only the new tokens (the prompt goes in as embeddings), like upstream."""
        if "inputs_embeds" in kwargs:
            raise ValueError("pass input ids as `inputs`; inputs_embeds are built here")
        if inputs is None:
            inputs = kwargs.pop("input_ids", None)
        if inputs is None:
            raise ValueError("generate needs the prompt ids as `inputs`")
        position_ids = kwargs.pop("position_ids", None)
        attention_mask = kwargs.pop("attention_mask", None)
        prepared = None
        if images is not None:
            prepared = self._prepare_multimodal(inputs, attention_mask, None, images, modalities, instructions,
                                                "left", kwargs.pop("sample_fields", None))
        if prepared is not None:
            spliced = prepared[0]
            inputs_embeds, spans = spliced.inputs_embeds, spliced.visual_spans
            position_ids = spliced.position_ids if position_ids is not None else None
            attention_mask = self._mask_like(spliced, attention_mask)
        else:
            inputs_embeds, spans = self.get_model().embed_tokens(inputs), [[] for _ in range(inputs.shape[0])]
        _sanitize_sampling(kwargs)
        # an in-LLM reducer (stage llm / decode) prunes inside the prompt forward and the decoding steps
        with llm_reduction(self, self.get_model().get_token_reducer(), spans):
            return super().generate(
                position_ids=position_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
            )

    # ------------------------------------------------------------------ tokenizer

    def initialize_vision_tokenizer(self, model_args, tokenizer) -> None:
        """Adds ``<im_patch>`` / ``<im_start>`` / ``<im_end>`` when asked; OneVision's recipes ask for none."""
        from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN

        new_tokens = []
        if getattr(model_args, "mm_use_im_patch_token", False):
            new_tokens.append(DEFAULT_IMAGE_PATCH_TOKEN)
        if getattr(model_args, "mm_use_im_start_end", False):
            new_tokens += [DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN]
        added = tokenizer.add_tokens(new_tokens, special_tokens=True) if new_tokens else 0
        weight = self.get_input_embeddings().weight
        rows = getattr(weight, "ds_shape", weight.shape)[0]  # ZeRO-3 partitions leave shape empty
        if added and len(tokenizer) > rows:
            self.resize_token_embeddings(len(tokenizer))


def _sanitize_sampling(kwargs: dict) -> None:
    """Greedy decoding ignores sampling knobs; ``temperature=0`` means greedy."""
    if kwargs.get("do_sample") and kwargs.get("temperature") == 0:
        kwargs["do_sample"] = False
    if not kwargs.get("do_sample"):
        for key in ("temperature", "top_p", "top_k"):
            kwargs.pop(key, None)


