"""The LLaVA architecture, language-model agnostic: vision tower -> projector -> spliced embeddings.

A visual item (one image, one video, or the dummy image of a text-only sample) follows one line:

    pixels (T,3,S,S) --tower--> features (T,H*W,D_v) --projector--> tokens (L,D) --splice--> LLM

Token-wise projectors (``mlp2x_gelu``...) get OneVision's per-frame 2x2 pooling and newline tokens
afterwards; structured projectors (:class:`~llava.model.multimodal_projector.base.StructuredProjector`)
see the whole batch of items with their (T,H,W) layout and an instruction per item, and return final
tokens. Runtime-mutable config keys (``mm_spatial_pool_*``, ``mm_newline_position``,
``tokenizer_*``) are read from ``self.config`` at every call, as lmms-eval changes them between calls.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

from .multimodal_encoder.builder import build_vision_tower
from .multimodal_projector.base import StructuredProjector, VisualBatch
from .multimodal_projector.builder import build_vision_projector, projector_wants_dense_embeds
from .weights import read_tensor_file

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
        if "unpad" in getattr(config, "mm_patch_merge_type", "flat"):
            self.image_newline = nn.Parameter(torch.zeros(config.hidden_size))

    def get_vision_tower(self):
        tower = getattr(self, "vision_tower", None)
        return tower[0] if isinstance(tower, list) else tower

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
    if not picked:
        raise KeyError(f"{path}: no key contains {marker!r} (found e.g. {sorted(state)[:3]})")
    own = projector.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in picked.items()
                  if k in own and v.shape != own[k].shape]
    if mismatched:
        raise ValueError(f"{path}: projector shape mismatch for {mismatched}")
    result = projector.load_state_dict(picked, strict=False)
    missing = [k for k in result.missing_keys if not _loads_itself(projector, k)]
    unexpected = list(result.unexpected_keys)
    if missing and not unexpected and isinstance(projector, StructuredProjector):
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
    else:
        items = [img.unsqueeze(0) if img.ndim == 3 else img for img in images]
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

    def get_2dPool(self, image_feature: torch.Tensor, stride: int = 2) -> torch.Tensor:
        """``(T, H*W, D)`` -> ``(T, h*w, D)`` pooled per frame with ``config.mm_spatial_pool_mode``."""
        frames, tokens, dim = image_feature.shape
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"get_2dPool needs a square patch grid, got {tokens} tokens per frame")
        grid = image_feature.view(frames, side, side, dim).permute(0, 3, 1, 2)
        mode = getattr(self.config, "mm_spatial_pool_mode", "bilinear")
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

    def _pool_stride(self) -> int:
        stride = getattr(self.config, "mm_spatial_pool_stride", None)
        return int(stride) if stride else 2

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
        projector = self.get_model().mm_projector
        side = self.get_vision_tower().num_patches_per_side
        if isinstance(projector, StructuredProjector):
            return projector.num_output_tokens(num_frames, side, side, modality)
        weight = self.get_input_embeddings().weight

        def probe(frames: int) -> int:
            feats = weight.new_zeros(frames, side * side, self.config.hidden_size)
            return self._tokenwise_item(feats, modality).shape[0]

        one_frame = probe(1)
        return one_frame + (probe(2) - one_frame) * (num_frames - 1)

    def encode_visual_items(
        self, items: list[torch.Tensor], modalities: list[str], instructions: list[str] | None = None
    ) -> list[torch.Tensor]:
        """All visual items of a micro-batch -> one ``(L_i, D)`` token tensor per item.

        The tower runs once over every frame of the batch.
        """
        model = self.get_model()
        tower = self.get_vision_tower()
        projector = model.mm_projector
        frames = torch.cat(items).to(device=tower.device, dtype=tower.dtype)
        frames_per_item = [item.shape[0] for item in items]
        if isinstance(projector, StructuredProjector):
            if tower.keep_head:
                feats, dense = tower.forward_with_dense(frames)
            else:
                feats, dense = tower(frames), None
            side = tower.num_patches_per_side
            grid = lambda x: None if x is None else x.view(x.shape[0], side, side, x.shape[-1])  # noqa: E731
            batch = VisualBatch(grid(feats), frames_per_item, modalities, grid(dense), instructions)
            return projector(batch)
        projected = projector(tower(frames))
        return [self._tokenwise_item(f, m) for f, m in zip(projected.split(frames_per_item), modalities)]

    # ------------------------------------------------------------------ instructions

    def set_instruction_tokenizer(self, tokenizer) -> None:
        """Lets the model recover instructions from ``input_ids`` when callers pass none."""
        self._instruction_tokenizer = tokenizer

    def _needs_instructions(self) -> bool:
        projector = getattr(self.get_model(), "mm_projector", None)
        return isinstance(projector, StructuredProjector) and projector.uses_instructions

    def recover_instructions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[str]:
        """One instruction per visual item, read from the prompt: the text of the user turn after each
        ``<image>`` placeholder, up to the end of that turn; ``""`` for text-only samples."""
        tokenizer = getattr(self, "_instruction_tokenizer", None)
        if tokenizer is None:
            raise RuntimeError(
                "this projector is conditioned on instructions, but none were passed and no tokenizer is set "
                "to recover them from input_ids; pass instructions=[...] or call model.set_instruction_tokenizer()"
            )
        end_ids = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>",) if t in tokenizer.get_vocab()}
        if tokenizer.eos_token_id is not None:
            end_ids.add(tokenizer.eos_token_id)
        projector = self.get_model().mm_projector
        instructions: list[str] = []
        for row, ids in enumerate(input_ids):
            if attention_mask is not None:
                ids = ids[attention_mask[row].bool()]
            ids = ids.tolist()
            starts = [i for i, tok in enumerate(ids) if tok == IMAGE_TOKEN_INDEX]
            if not starts:
                instructions.append("")
                continue
            for start in starts:
                end = start + 1
                while end < len(ids) and ids[end] not in end_ids and ids[end] != IMAGE_TOKEN_INDEX:
                    end += 1
                text = tokenizer.decode(ids[start + 1 : end], skip_special_tokens=True)
                instructions.append(projector.clean_instruction(text))
        return instructions

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
    ):
        """Replaces each ``IMAGE_TOKEN_INDEX`` by its item's tokens.

        Returns upstream's 6-tuple ``(None, position_ids, attention_mask, past_key_values,
        inputs_embeds, labels)``; inputs are returned unchanged when there is nothing to encode.
        Items are consumed in order: one per placeholder, and one (dropped) dummy per sample that has
        no placeholder.
        """
        tower = self.get_vision_tower()
        if tower is None or images is None or input_ids.shape[1] == 1:
            return input_ids, position_ids, attention_mask, past_key_values, None, labels

        items, mods = _as_item_list(images, modalities)
        if instructions is None and self._needs_instructions():
            instructions = self.recover_instructions(input_ids, attention_mask)
        if instructions is not None and len(instructions) != len(items):
            raise ValueError(f"{len(instructions)} instructions for {len(items)} visual items")
        features = self.encode_visual_items(items, mods, instructions)

        keep = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        text_embeds = self.get_model().embed_tokens(input_ids.clamp(min=0))
        embeds_rows, label_rows = [], []
        item = 0
        for row in range(input_ids.shape[0]):
            ids = input_ids[row][keep[row]]
            emb = text_embeds[row][keep[row]]
            lab = labels[row][keep[row]] if labels is not None else torch.full_like(ids, IGNORE_INDEX)
            where = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
            if not where:
                if item >= len(features):
                    raise ValueError(f"sample {row} has no <image> but no visual item is left for its dummy")
                # the dummy keeps every rank's graph identical; it contributes zero tokens
                emb = torch.cat([emb, features[item][:0].to(emb.dtype)])
                item += 1
                embeds_rows.append(emb)
                label_rows.append(lab)
                continue
            pieces_e, pieces_l, prev = [], [], 0
            for pos in where:
                if item >= len(features):
                    raise ValueError(f"sample {row}: more <image> placeholders than visual items ({len(features)})")
                feat = features[item].to(emb.dtype)
                item += 1
                pieces_e += [emb[prev:pos], feat]
                pieces_l += [lab[prev:pos], lab.new_full((feat.shape[0],), IGNORE_INDEX)]
                prev = pos + 1
            pieces_e.append(emb[prev:])
            pieces_l.append(lab[prev:])
            embeds_rows.append(torch.cat(pieces_e))
            label_rows.append(torch.cat(pieces_l))
        if item != len(features):
            raise ValueError(f"{len(features)} visual items given but the prompts consumed {item}")

        max_len = getattr(self.config, "tokenizer_model_max_length", None)
        if max_len is not None:
            for row, lab in enumerate(label_rows):
                if len(lab) > max_len:
                    cut = int((lab[max_len:] != IGNORE_INDEX).sum())
                    logger.warning(
                        "sample %d: %d tokens after splicing exceed tokenizer_model_max_length=%d; "
                        "truncating drops %d supervised tokens", row, len(lab), max_len, cut,
                    )
                    embeds_rows[row], label_rows[row] = embeds_rows[row][:max_len], lab[:max_len]

        side = padding_side or getattr(self.config, "tokenizer_padding_side", "right")
        inputs_embeds, new_labels, new_mask, new_positions = _pad_rows(embeds_rows, label_rows, side)
        needs_mask = attention_mask is not None or not bool(new_mask.all())
        return (
            None,
            new_positions if position_ids is not None else None,
            new_mask.to(attention_mask.dtype) if attention_mask is not None else (new_mask if needs_mask else None),
            past_key_values,
            inputs_embeds,
            new_labels if labels is not None else None,
        )

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
        if inputs_embeds is None:
            (input_ids, position_ids, attention_mask, past_key_values, inputs_embeds, labels) = (
                self.prepare_inputs_labels_for_multimodal(
                    input_ids, position_ids, attention_mask, past_key_values, labels, images, modalities,
                    image_sizes, instructions,
                )
            )
        if output_attentions is not None:
            kwargs["output_attentions"] = output_attentions
        if output_hidden_states is not None:
            kwargs["output_hidden_states"] = output_hidden_states
        if dpo_forward:
            hidden = self.get_model()(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs,
            ).last_hidden_state
            return self.lm_head(hidden), labels
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache,
            **kwargs,
        )

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
        if images is not None:
            _, position_ids, attention_mask, _, inputs_embeds, _ = self.prepare_inputs_labels_for_multimodal(
                inputs, position_ids, attention_mask, None, None, images, modalities, image_sizes, instructions,
                padding_side="left",
            )
        else:
            inputs_embeds = self.get_model().embed_tokens(inputs)
        _sanitize_sampling(kwargs)
        return super().generate(
            position_ids=position_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
        )

    # ------------------------------------------------------------------ tokenizer

    def initialize_vision_tokenizer(self, model_args, tokenizer) -> None:
        """Adds ``<im_patch>`` / ``<im_start>`` / ``<im_end>`` when asked; OneVision and HICom ask for none."""
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


def _pad_rows(embeds: list[torch.Tensor], labels: list[torch.Tensor], side: str):
    """Pads variable-length rows to one batch; returns ``(embeds, labels, mask, position_ids)``."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    batch, longest = len(embeds), max(e.shape[0] for e in embeds)
    dim = embeds[0].shape[-1]
    ref = embeds[0]
    out = ref.new_zeros(batch, longest, dim)
    out_labels = labels[0].new_full((batch, longest), IGNORE_INDEX)
    mask = torch.zeros(batch, longest, dtype=torch.bool, device=ref.device)
    positions = torch.zeros(batch, longest, dtype=torch.long, device=ref.device)
    for row, (emb, lab) in enumerate(zip(embeds, labels)):
        n = emb.shape[0]
        span = slice(longest - n, longest) if side == "left" else slice(0, n)
        out[row, span] = emb
        out_labels[row, span] = lab
        mask[row, span] = True
        positions[row, span] = torch.arange(n, device=ref.device)
    return out, out_labels, mask, positions
