"""``BVLLMProjector``: B-VLLM's text-conditioned frame selection, slot merge and spatial sampling as a
LLaVA ``mm_projector_type`` (``bvllm``), batched over every visual item of a micro-batch.

For an item of T frames with patches ``P (T, N, D)`` and the question q (public code
``bvlm_arch.py``, ``vlm_attention``; ``bvllm_plugin/README.md`` lists where we deviate):

1. descriptors ``c_t`` (mean patch, or the first token as the code's CLS) and ``P~ = LN(P)``;
2. Q-Former_T: the first ``num_slots`` queries of its bank + q, cross-attending to ``c`` ->
   ``Linear(H -> D)`` -> scores ``S = Z c^T / sqrt(D)`` ``(K, T)`` -> Gumbel-softmax over frames per slot
   ``A (K, T)`` (plain softmax at eval unless ``eval_gumbel_noise``);
3. slot features ``F_k = sum_t A_kt P~_t``; the one-hop γ slot merge leaves k′ slots (optionally in
   temporal order);
4. Q-Former_S: R queries + q, cross-attending to each kept slot -> ``(k′, R, H)``; ToMe merge of each
   slot to its token budget; ``Linear(H -> D)`` then ``Linear(D -> D_llm)``; slot-major tokens.

Items of one frame (images) keep one slot: the frame itself. Every item of a micro-batch goes through
the same modules at once (padded frames masked), so ranks run the same graph under ZeRO-3.

Parameter names under ``model.mm_projector.``: ``temporal_qformer.*``, ``temporal_queries``,
``selector_proj.*``, ``spatial_qformer.*``, ``spatial_queries``, ``ln_vision.*``, ``input_adapter.*``
(only with ``qformer_vision_width``), ``token_proj.*``, ``out_proj.*``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn
from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

from llava.model.multimodal_projector.base import StructuredProjector, VisualBatch
from llava.model.multimodal_projector.builder import register_projector

from .config import BVLLMConfig, resolve_preset
from .merge import merge_slots, multi_layer_merge, slot_merge_plan
from .tokenizer import QFormerText
from .weights import import_lavis_qformer, read_lavis_state

logger = logging.getLogger(__name__)

#: Config keys: the resolved options, the flags that resolve into them, and the two Q-Former sources.
CONFIG_KEY, PRESET_KEY, OVERRIDES_KEY = "bvllm_config", "bvllm_preset", "bvllm_overrides"
TOKENIZER_KEY, INIT_KEY = "bvllm_qformer_tokenizer", "bvllm_qformer_init"
#: The Q-Formers' vocabulary size, recorded at the first build: a saved model rebuilds before it is told
#: the folder its tokenizer sits in.
VOCAB_KEY = "bvllm_qformer_vocab_size"


def bvllm_config_from(config) -> BVLLMConfig:
    """The explicit options of a LLaVA config (``bvllm_config``), resolved once from the preset and the
    overrides and written back, so a saved model rebuilds without its flags."""
    stored = getattr(config, CONFIG_KEY, None)
    if stored:
        return BVLLMConfig.from_dict(stored)
    cfg = resolve_preset(getattr(config, PRESET_KEY, None) or "paper")
    overrides = getattr(config, OVERRIDES_KEY, None)
    if overrides:
        if not isinstance(overrides, dict):
            raise ValueError(f"{OVERRIDES_KEY} must be a dict of BVLLMConfig fields, got {overrides!r}")
        cfg = cfg.replace(**overrides)
    config.bvllm_config = cfg.to_dict()
    for key in (PRESET_KEY, OVERRIDES_KEY):
        if key in vars(config):
            delattr(config, key)
    return cfg


def _qformer(cfg: BVLLMConfig, vocab_size: int, vision_width: int) -> InstructBlipQFormerModel:
    config = InstructBlipQFormerConfig(
        vocab_size=vocab_size, hidden_size=cfg.qformer_hidden_size, num_hidden_layers=cfg.qformer_layers,
        num_attention_heads=cfg.qformer_heads, intermediate_size=cfg.qformer_intermediate_size,
        hidden_dropout_prob=cfg.qformer_dropout, attention_probs_dropout_prob=cfg.qformer_dropout,
        cross_attention_frequency=cfg.cross_attention_frequency, encoder_hidden_size=vision_width,
        max_position_embeddings=max(512, cfg.max_text_tokens))
    return InstructBlipQFormerModel(config)


def pad_items(rows: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum T_i, ...)`` -> ``(B, max T, ...)`` zero-padded, and the ``(B, max T)`` bool mask of real rows."""
    lengths = torch.tensor(counts, device=rows.device)
    mask = torch.arange(max(counts), device=rows.device)[None] < lengths[:, None]
    padded = rows.new_zeros(len(counts), max(counts), *rows.shape[1:])
    padded[mask] = rows
    return padded, mask


class BVLLMProjector(StructuredProjector):
    """B-VLLM on every visual item of a micro-batch (module docstring)."""

    uses_instructions = True

    def __init__(self, config, vision_cfg=None, delay_load: bool = False, **kwargs):
        super().__init__()
        cfg = bvllm_config_from(config)
        self.bvllm = cfg
        source = getattr(config, TOKENIZER_KEY, None)
        if not source:
            raise ValueError(f"mm_projector_type 'bvllm' needs {TOKENIZER_KEY} (--{TOKENIZER_KEY}): a BERT tokenizer "
                             f"folder such as bert-base-uncased, or 'tiny' for the in-code test tokenizer")
        self.text = QFormerText(source, cfg.max_text_tokens)
        self.tokenizer_source = str(source)
        vision = config.mm_hidden_size
        width = cfg.qformer_vision_width or vision
        hidden = cfg.qformer_hidden_size
        vocab = getattr(config, VOCAB_KEY, None) or len(self.text)
        config.bvllm_qformer_vocab_size = vocab
        self.input_adapter = nn.Linear(vision, width) if width != vision else None
        self.ln_vision = nn.LayerNorm(width)
        self.temporal_qformer = _qformer(cfg, vocab, width)
        self.spatial_qformer = _qformer(cfg, vocab, width)
        std = self.temporal_qformer.config.initializer_range
        self.temporal_queries = nn.Parameter(torch.randn(1, cfg.query_bank_size, hidden) * std)
        self.spatial_queries = nn.Parameter(torch.randn(1, cfg.query_bank_size, hidden) * std)
        self.selector_proj = nn.Linear(hidden, vision)
        self.token_proj = nn.Linear(hidden, vision)
        self.out_proj = nn.Linear(vision, config.hidden_size)
        self.register_buffer("tau_step", torch.zeros((), dtype=torch.long), persistent=False)
        #: what the last forward selected, per item (for reports and pictures); with
        #: ``keep_intermediates`` also the merged slot features and the sampled tokens (tests)
        self.last_selection: dict | None = None
        self.keep_intermediates = False
        init = getattr(config, INIT_KEY, None)
        if init and not delay_load:
            import_lavis_qformer(self, read_lavis_state(init), source=str(init))
            logger.info("B-VLLM Q-Formers, query banks and ln_vision initialised from %s", init)

    # ------------------------------------------------------------------ contract

    def num_output_tokens(self, t: int, h: int, w: int, modality: str = "video") -> int:
        """Exact for T = 1 and ``budget_mode="exact"``; the upper bound otherwise (see ``last_selection``
        for the count each item actually got)."""
        return self.bvllm.num_output_tokens(t)

    def clean_instruction(self, text: str) -> str:
        """The code's prompt: the user turn with the media tag removed, stripped, no chat template."""
        return " ".join(text.replace("<image>", " ").replace("<video>", " ").split())

    def tunable_parts(self) -> dict[str, list[nn.Parameter]]:
        """``bvllm_selector`` (Q-Former_T, its queries, the score projection), ``bvllm_sampler`` (Q-Former_S
        and its queries) and ``bvllm_linears`` (``ln_vision``, the input adapter and the output linears)."""
        linears = [*self.ln_vision.parameters(), *self.token_proj.parameters(), *self.out_proj.parameters()]
        if self.input_adapter is not None:
            linears += list(self.input_adapter.parameters())
        return {
            "bvllm_selector": [*self.temporal_qformer.parameters(), self.temporal_queries,
                               *self.selector_proj.parameters()],
            "bvllm_sampler": [*self.spatial_qformer.parameters(), self.spatial_queries],
            "bvllm_linears": linears,
        }

    def set_checkpoint_folder(self, folder: str | Path) -> None:
        """A saved model carries its tokenizer in a subfolder (``export_files``); read it from there."""
        candidate = Path(folder) / self.tokenizer_source
        if not Path(self.tokenizer_source).is_absolute() and candidate.is_dir():
            self.text.set_source(candidate)

    @property
    def tau(self) -> float:
        return self.bvllm.tau_at(int(self.tau_step))

    def gumbel_noise(self, like: torch.Tensor) -> torch.Tensor:
        """Standard Gumbel noise shaped like ``like`` (``torch.nn.functional.gumbel_softmax``'s draw)."""
        return -torch.empty_like(like).exponential_().log()

    # ------------------------------------------------------------------ forward

    def _instructions(self, batch: VisualBatch) -> list[str]:
        if batch.instructions is None:
            raise ValueError("the B-VLLM projector is conditioned on instructions, but none were given")
        vocab = self.temporal_qformer.config.vocab_size
        if len(self.text) != vocab:
            raise ValueError(f"B-VLLM Q-Former tokenizer {self.text.source} has {len(self.text)} tokens, but the "
                             f"Q-Formers were built for {vocab} ({VOCAB_KEY})")
        return list(batch.instructions)

    def select(self, feats: torch.Tensor, counts: list[int], ids: torch.Tensor, text_mask: torch.Tensor):
        """Frame selection: ``(sum T, N, D)`` features -> slot weights ``A (B, K, max T)`` (fp32, zero on
        padded frames), the ``(B, max T)`` frame mask, and the normalised patches ``(B, max T, N', D_q)``."""
        cfg = self.bvllm
        if cfg.descriptor == "mean":
            descriptors, patches = feats.mean(dim=1), feats
        else:
            descriptors, patches = feats[:, 0], feats[:, 1:]
        cross = descriptors if self.input_adapter is None else self.input_adapter(descriptors)
        patches = patches if self.input_adapter is None else self.input_adapter(patches)
        patches = self.ln_vision(patches)
        cross, frame_mask = pad_items(cross, counts)
        raw, _ = pad_items(descriptors, counts)
        b, k = len(counts), cfg.num_slots
        queries = self.temporal_queries[:, :k].expand(b, -1, -1)
        attention = torch.cat([text_mask.new_ones(b, k), text_mask], dim=1)
        out = self.temporal_qformer(input_ids=ids, attention_mask=attention, query_embeds=queries,
                                    encoder_hidden_states=cross, encoder_attention_mask=frame_mask.long())
        slots = self.selector_proj(out.last_hidden_state[:, :k])  # (B, K, D)
        # the selection in fp32 (bf16 logits would flatten a near one-hot softmax)
        scores = torch.einsum("bkc,btc->bkt", slots.float(), raw.float()) / math.sqrt(raw.shape[-1])
        if self.training or cfg.eval_gumbel_noise:
            scores = scores + self.gumbel_noise(scores)
        weights = (scores / self.tau).masked_fill(~frame_mask[:, None], float("-inf")).softmax(dim=-1)
        return weights, frame_mask, pad_items(patches, counts)[0]

    def forward(self, batch: VisualBatch) -> list[torch.Tensor]:
        cfg = self.bvllm
        counts = batch.frames_per_item
        ids, text_mask = self.text(self._instructions(batch), batch.features.device)
        feats = batch.features.flatten(1, 2)  # (sum T, N, D)
        if cfg.descriptor == "first_token" and feats.shape[1] < 2:
            raise ValueError("descriptor 'first_token' needs a CLS token plus patches; the grid has one token")
        weights, frame_mask, patches = self.select(feats, counts, ids, text_mask)
        if self.training and cfg.tau_anneal_steps:
            self.tau_step += 1

        single = torch.tensor([t == 1 for t in counts], device=feats.device)
        mixed = torch.einsum("bkt,btnc->bknc", weights.to(patches.dtype), patches)  # (B, K, N', D_q)
        if cfg.budget_mode == "exact":  # every slot kept (module docstring of config.py)
            k = cfg.num_slots
            adjacency = torch.eye(k, dtype=torch.bool, device=feats.device).expand(len(counts), k, k)
            kept = torch.ones(len(counts), k, dtype=torch.bool, device=feats.device)
            kept[single, 1:] = False
        else:
            adjacency, kept = slot_merge_plan(weights.detach(), cfg.merge_threshold, single)
        slots = merge_slots(mixed, adjacency)

        order_key = torch.arange(cfg.num_slots, device=feats.device).expand_as(kept)
        if cfg.temporal_sort:
            order_key = weights.detach().argmax(dim=-1) * cfg.num_slots + order_key
        order_key = order_key.masked_fill(~kept, torch.iinfo(order_key.dtype).max)
        order = order_key.argsort(dim=-1, stable=True)  # kept slots first, in output order
        kept_slots = kept.sum(dim=-1).tolist()
        take = torch.arange(cfg.num_slots, device=feats.device)[None] < kept.sum(dim=-1, keepdim=True)
        rows = torch.arange(len(counts), device=feats.device)[:, None].expand_as(order)
        item_of_slot, slot_index = rows[take], order[take]
        slot_feats = slots[item_of_slot, slot_index]  # (sum k′, N', D_q)

        r = cfg.spatial_queries
        queries = self.spatial_queries[:, :r].expand(slot_feats.shape[0], -1, -1)
        slot_ids, slot_text = ids[item_of_slot], text_mask[item_of_slot]
        attention = torch.cat([slot_text.new_ones(slot_feats.shape[0], r), slot_text], dim=1)
        sampled = self.spatial_qformer(input_ids=slot_ids, attention_mask=attention, query_embeds=queries,
                                       encoder_hidden_states=slot_feats).last_hidden_state[:, :r]

        per_slot = [n for k, t in zip(kept_slots, counts) for n in cfg.slot_tokens(k, t == 1)]
        merged = self._merge_to_budgets(sampled, per_slot)
        tokens = self.out_proj(self.token_proj(merged))
        per_item = [sum(cfg.slot_tokens(k, t == 1)) for k, t in zip(kept_slots, counts)]
        self.last_selection = {"weights": weights.detach(), "frame_mask": frame_mask, "kept": kept,
                               "order": order, "kept_slots": kept_slots, "token_counts": per_item}
        if self.keep_intermediates:
            self.last_selection["slots"] = slot_feats.detach().split(kept_slots)
            self.last_selection["sampled"] = merged.detach().split(per_item)
        return list(tokens.split(per_item))

    @staticmethod
    def _merge_to_budgets(sampled: torch.Tensor, targets: list[int]) -> torch.Tensor:
        """``(S, R, H)`` slots -> their tokens, each slot merged to its target count, flattened slot-major.

        Slots are grouped by target (a handful of values), each group merged in one batch."""
        r = sampled.shape[1]
        if all(t >= r for t in targets):
            return sampled.flatten(0, 1)
        target = torch.tensor(targets, device=sampled.device).clamp(max=r)
        pieces, slot_of, position = [], [], []
        for value in target.unique().tolist():
            members = (target == value).nonzero().squeeze(1)
            merged = multi_layer_merge(sampled[members], value)  # (m, value, H)
            pieces.append(merged.flatten(0, 1))
            slot_of.append(members.repeat_interleave(value))
            position.append(torch.arange(value, device=sampled.device).repeat(members.numel()))
        slot_of, position = torch.cat(slot_of), torch.cat(position)
        order = (slot_of * r + position).argsort()
        return torch.cat(pieces)[order]


def register() -> None:
    """Registers ``mm_projector_type: bvllm`` with contract examples at test size."""
    tiny = {"mm_projector_type": "bvllm", "bvllm_preset": "tiny", "bvllm_qformer_tokenizer": "tiny"}
    register_projector("bvllm", examples=(
        {**tiny, "bvllm_overrides": {"budget_mode": "exact", "budget": 20}},
        {**tiny, "bvllm_overrides": {"merge_threshold": 1.0, "descriptor": "first_token", "temporal_sort": False}},
    ))(BVLLMProjector)


__all__ = ["BVLLMProjector", "bvllm_config_from", "pad_items", "register"]
