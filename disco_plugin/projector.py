"""``DiscoProjector``: the DisCo resampler as ``mm_projector_type: disco``, with VCD and TFC as
auxiliary losses.

Options come from ``config.disco_config`` (explicit fields, as saved) or, when absent, from the preset
``config.disco_preset`` (default ``prototype``) plus ``config.disco_overrides``.

Module layout (under ``model.mm_projector.``): ``resampler.*`` (queries, bridge, readout),
``heads.{v_proj,t_proj,vcd_temperature,tfc_temperature}`` (VCD/TFC heads, used in training only) and,
with VCD, ``instance_encoder.text_model.*`` (SigLIP's text tower, frozen; read from
``config.mm_text_tower`` — ``--text_tower`` — else from the vision tower's folder).

The losses run in training when their weight (``config.aux_loss_weights``, from
``--disco_vcd_weight`` / ``--disco_tfc_weight``) is not zero; they are then returned for every
micro-batch, zero when no item names instances. Evaluation and generation need neither instances nor
the text tower.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from llava.model.multimodal_projector.base import ProjectorOutput, StructuredProjector, VisualBatch
from llava.model.multimodal_projector.builder import register_projector

from .config import DiscoConfig, resolve_disco_config
from .instances import InstanceEncoder, set_instance_limit
from .losses import tfc_loss, vcd_loss
from .matching import match_instances
from .resampler import DiscoResampler, ResamplerOutput, init_weights

logger = logging.getLogger(__name__)

VCD, TFC = "disco_vcd", "disco_tfc"


def disco_config_from(config) -> DiscoConfig:
    """The explicit DisCo options of a LLaVA config; resolves the preset and overrides once."""
    stored = getattr(config, "disco_config", None)
    if stored:
        return DiscoConfig.from_dict(stored)
    overrides = getattr(config, "disco_overrides", None) or {}
    if not isinstance(overrides, dict):
        raise ValueError(f"disco_overrides must be a dict of DiscoConfig fields, got {overrides!r}")
    cfg = resolve_disco_config(getattr(config, "disco_preset", None), **overrides)
    config.disco_config = cfg.to_dict()
    for key in ("disco_preset", "disco_overrides"):  # resolved (``plugin_flags`` keeps them as given)
        if key in vars(config):
            delattr(config, key)
    return cfg


class DiscoHeads(nn.Module):
    """``v_proj`` (bridge width -> E), ``t_proj`` (text width -> E) and the two learnable temperatures
    (shape ``(1,)``: ZeRO-3 cannot partition a 0-d parameter)."""

    def __init__(self, cfg: DiscoConfig, text_dim: int | None) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.vcd:
            self.v_proj = nn.Linear(cfg.hidden_size, cfg.embed_dim)
            self.t_proj = nn.Linear(text_dim, cfg.embed_dim)
            self.vcd_temperature = nn.Parameter(torch.full((1,), float(cfg.vcd_temperature)))
        if cfg.tfc:
            self.tfc_temperature = nn.Parameter(torch.full((1,), float(cfg.tfc_temperature)))
        self.apply(init_weights)

    def forward(self, out: ResamplerOutput, phrases: torch.Tensor | None, instance_mask: torch.Tensor,
                item_mask: torch.Tensor, wanted: set[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Losses named in ``wanted`` and the VCD assignment ``(B, M)`` (``None`` without VCD).

        ``phrases (B, M, D_text)`` padded instance embeddings, ``instance_mask (B, M)`` real slots,
        ``item_mask (B,)`` items that take part in the losses.
        """
        cfg, losses, assignment = self.cfg, {}, None
        b = out.states.shape[0]
        if VCD in wanted or (TFC in wanted and cfg.tfc_tokens == "matched"):
            groups = out.states[:, : cfg.num_local].unflatten(1, (cfg.num_groups, cfg.group_size)).mean(2)
            u = F.normalize(self.v_proj(groups), dim=-1)  # (B, G, E)
            e = F.normalize(self.t_proj(phrases.to(u.dtype)), dim=-1)  # (B, M, E)
            assignment = match_instances(u @ e.transpose(1, 2), instance_mask)
            if VCD in wanted:
                losses[VCD] = vcd_loss(u, e, assignment, instance_mask, self.vcd_temperature, cfg.vcd_negatives)
        if TFC in wanted:
            if cfg.tfc_tokens == "all":
                tokens = item_mask[:, None].expand(b, cfg.num_queries)
            else:  # the tokens of every matched group
                matched = torch.zeros(b, cfg.num_groups, dtype=torch.bool, device=item_mask.device)
                matched.scatter_(1, assignment, instance_mask)
                tokens = torch.zeros(b, cfg.num_queries, dtype=torch.bool, device=item_mask.device)
                tokens[:, : cfg.num_local] = matched.repeat_interleave(cfg.group_size, 1)
            losses[TFC] = tfc_loss(out.focus_features(), out.frame_valid, tokens, self.tfc_temperature)
        return losses, assignment


class DiscoProjector(StructuredProjector):
    """K-query resampler over every visual item of a micro-batch; VCD/TFC losses while training."""

    sample_fields = ("instances",)
    aux_losses = (VCD, TFC)

    def __init__(self, config, vision_cfg=None, delay_load: bool = False, **kwargs):
        super().__init__()
        cfg = disco_config_from(config)
        self.disco = cfg
        self._config = config  # read at every forward for the loss weights (written when training starts)
        self.instance_encoder = None
        text_dim = None
        if cfg.vcd:
            folder = getattr(config, "mm_text_tower", None) or getattr(config, "mm_vision_tower", None)
            self.instance_encoder = InstanceEncoder(folder, getattr(config, "disco_text_config", None), delay_load)
            config.disco_text_config = self.instance_encoder.text_config
            text_dim = self.instance_encoder.hidden_size
        self.resampler = DiscoResampler(cfg, config.mm_hidden_size, config.hidden_size)
        self.heads = DiscoHeads(cfg, text_dim)
        set_instance_limit(None if cfg.truncate_instances else cfg.max_instances)
        self.counts: Counter = Counter()  # items seen in training: with_instances, without_instances, truncated
        self.keep_focus = False  # keep the last focus maps and assignment (figures)
        self.last: dict[str, torch.Tensor] | None = None

    def num_output_tokens(self, t: int, h: int, w: int, modality: str = "video") -> int:
        return self.disco.num_queries

    def tunable_parts(self) -> dict[str, list[nn.Parameter]]:
        """``disco_heads`` (VCD/TFC heads, in the adapter) and ``disco_text_tower`` (the frozen instance
        encoder, standalone: never part of ``mm_mlp_adapter``)."""
        parts = {"disco_heads": list(self.heads.parameters())}
        if self.instance_encoder is not None:
            parts["disco_text_tower"] = list(self.instance_encoder.parameters())
        return parts

    def wanted_losses(self) -> set[str]:
        """The losses this forward computes: in training, enabled in the config, with a non-zero weight."""
        if not self.training:
            return set()
        weights = getattr(self._config, "aux_loss_weights", None) or {}
        enabled = {VCD: self.disco.vcd, TFC: self.disco.tfc}
        return {name for name, on in enabled.items() if on and weights.get(name, 0.0) != 0.0}

    def instance_lists(self, batch: VisualBatch) -> list[list[str]]:
        """Each item's instances as the losses use them (filled, truncated); ``[]`` for text dummies."""
        cfg = self.disco
        given = batch.fields.get("instances") or [None] * batch.num_items
        lists = []
        for index, (value, modality) in enumerate(zip(given, batch.modalities)):
            phrases = list(value or []) if modality != "text" else []
            if len(phrases) == 1 and cfg.fill_single_instance:
                phrases += [p for p in cfg.fill_single_instance if p != phrases[0]]
            if len(phrases) > cfg.max_instances:
                if not cfg.truncate_instances:
                    raise ValueError(f"visual item {index} names {len(phrases)} instances, more than the "
                                     f"{cfg.max_instances} token groups (records are checked when read: was "
                                     "the field parsed by another plugin?)")
                self.counts["truncated"] += 1
                phrases = phrases[: cfg.max_instances]
            if modality != "text":
                key = "with_instances" if phrases else "without_instances"
                if key == "without_instances" and not self.counts[key]:
                    logger.info("a visual item names no instances: it trains with the LM loss only "
                                "(such items are counted in the projector's counts)")
                self.counts[key] += 1
            lists.append(phrases)
        return lists

    def _encode_instances(self, lists: list[list[str]], device) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded embeddings ``(B, M, D_text)`` and mask ``(B, M)``; one text-tower pass for the batch
        (on one placeholder phrase when no item names any, so every rank runs the same modules)."""
        flat = [p for phrases in lists for p in phrases]
        counts = torch.tensor([len(p) for p in lists], device=device)
        width = max(1, int(counts.max()))
        mask = torch.arange(width, device=device)[None, :] < counts[:, None]
        embeds = self.instance_encoder(flat or [self.disco.fill_single_instance[0] if self.disco.fill_single_instance
                                                else "background"])
        padded = embeds.new_zeros(len(lists), width, embeds.shape[-1])
        if flat:
            padded[mask] = embeds
        return padded, mask

    def forward(self, batch: VisualBatch) -> ProjectorOutput:
        out = self.resampler(batch.features, batch.frames_per_item)
        tokens = list(out.tokens.unbind(0))
        wanted = self.wanted_losses()
        losses, assignment = {}, None
        if wanted:
            lists = self.instance_lists(batch)
            device = out.states.device
            if VCD in wanted or self.disco.tfc_tokens == "matched":
                phrases, instance_mask = self._encode_instances(lists, device)
            else:
                phrases, instance_mask = None, torch.zeros(len(lists), 1, dtype=torch.bool, device=device)
            item_mask = torch.tensor([bool(p) for p in lists], device=device)
            losses, assignment = self.heads(out, phrases, instance_mask, item_mask, wanted)
        if self.keep_focus:
            self.last = {"focus": out.focus.detach(), "frame_valid": out.frame_valid,
                         "assignment": None if assignment is None else assignment.detach()}
        return ProjectorOutput(tokens, losses)


def register() -> None:
    register_projector("disco", examples=({"mm_projector_type": "disco", "disco_preset": "tiny"},))(DiscoProjector)


__all__ = ["DiscoHeads", "DiscoProjector", "disco_config_from", "register"]
