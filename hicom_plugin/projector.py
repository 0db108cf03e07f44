"""``HIComProjector``: the HICom compressor as a LLaVA ``mm_projector_type``.

Registered through the ``llava.projectors`` entry point (``register`` below) under two names:

* ``hicom``: options come from ``config.hicom_config`` (explicit fields, as saved) or, when absent,
  from the preset named by ``config.hicom_preset`` (default ``paper``);
* the release grammar (``local43_global32``, ``local43_adaptkv_global32guidecoarse``, ... with
  ``config.use_guide``): parsed once, here at the edge, into ``config.hicom_config``; the config's
  ``mm_projector_type`` becomes ``hicom`` and the original string is kept in
  ``hicom_release_projector_type``.

Module layout (parameter names under ``model.mm_projector.``): ``compressor.local_compressor.*``,
``compressor.global_compressor.*`` and, when the branches are conditioned, ``text_encoder.text_model.*``
(SigLIP's text tower, frozen by default; read from ``config.mm_text_tower`` — ``--text_tower`` in
training — else from the vision tower's folder).
"""

from __future__ import annotations

import logging

import torch

from llava.model.multimodal_projector.base import StructuredProjector, VisualBatch
from llava.model.multimodal_projector.builder import register_projector

from .compressor import HIComCompressor
from .config import HIComConfig, parse_release_projector_type, resolve_hicom_config
from .instruction import clean_instruction
from .text_encoder import SiglipTextEncoder, read_siglip_text_config

logger = logging.getLogger(__name__)

RELEASE_GRAMMAR = r"(local\d+|global\d+).*"


def hicom_config_from(config) -> HIComConfig:
    """The explicit HICom options of a LLaVA config; parses a release string once and records it."""
    stored = getattr(config, "hicom_config", None)
    if stored:
        return HIComConfig.from_dict(stored)
    projector_type = getattr(config, "mm_projector_type", "hicom")
    use_guide = getattr(config, "use_guide", None)
    if projector_type == "hicom":
        cfg = resolve_hicom_config(getattr(config, "hicom_preset", None) or "paper")
        if use_guide in ("off", "none"):  # e.g. stage-1 alignment of a conditioned preset
            cfg = cfg.replace(local_injection="none", global_injection="none")
        elif use_guide is not None:
            raise ValueError(f"use_guide={use_guide!r} with mm_projector_type 'hicom': presets set their own "
                             f"injection (use_guide 'off' disables it; other values apply to release strings)")
    else:
        cfg = parse_release_projector_type(projector_type, use_guide)
        config.hicom_release_projector_type = projector_type
        config.mm_projector_type = "hicom"
    overrides = getattr(config, "hicom_overrides", None)
    if overrides:
        if not isinstance(overrides, dict):
            raise ValueError(f"hicom_overrides must be a dict of HIComConfig fields, got {overrides!r}")
        cfg = cfg.replace(**overrides)
    config.hicom_config = cfg.to_dict()
    # resolved: the flags would do nothing more in config.json (``plugin_flags`` keeps them as given)
    for key in ("hicom_preset", "use_guide", "hicom_overrides"):
        if key in vars(config):
            delattr(config, key)
    return cfg


class HIComProjector(StructuredProjector):
    """Local + global instruction-conditioned compression of every visual item of a micro-batch."""

    def __init__(self, config, vision_cfg=None, delay_load: bool = False, **kwargs):
        super().__init__()
        cfg = hicom_config_from(config)
        self.hicom = cfg
        self.uses_instructions = cfg.uses_text
        self.text_encoder = None
        text_dim = config.mm_hidden_size
        if cfg.uses_text:
            folder = getattr(config, "mm_text_tower", None) or getattr(config, "mm_vision_tower", None)
            stored = getattr(config, "hicom_text_config", None)
            self.text_encoder = SiglipTextEncoder(folder, text_config=stored, delay_load=delay_load,
                                                  tokenizer_subfolder=getattr(config, "hicom_text_tokenizer", None))
            config.hicom_text_config = self.text_encoder.text_config
            text_dim = self.text_encoder.hidden_size
        self.compressor = HIComCompressor(cfg, vision_dim=config.mm_hidden_size, text_dim=text_dim,
                                          llm_dim=config.hidden_size)

    @classmethod
    def wants_dense_embeds(cls, config) -> bool:
        return hicom_config_from(config).needs_dense_embeds

    def num_output_tokens(self, t: int, h: int, w: int, modality: str = "video") -> int:
        return self.compressor.num_output_tokens(t, h, w, modality)

    def clean_instruction(self, text: str) -> str:
        return clean_instruction(text)

    def injector_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters of the instruction injectors (stage 2 gives them ``guide_injector_lr``).

        Empty for the release's parameter-free direct injection; that is said in a warning, since a
        ``guide_injector_lr`` then applies to nothing.
        """
        params = self.compressor.injector_parameters()
        if self.uses_instructions and not params:
            logger.warning(
                "HICom injection %s/%s has no trainable injector parameters (direct injection without an "
                "MLP): a guide_injector_lr applies to an empty group",
                self.hicom.local_injection, self.hicom.global_injection,
            )
        return params

    def tunable_parts(self) -> dict[str, list[torch.nn.Parameter]]:
        """``guide_injector`` (the injection MLPs; stage 2's ``guide_injector_lr``), ``text_tower`` (the
        whole SigLIP text model) and ``text_tower_head`` (its output projection)."""
        parts = {"guide_injector": self.compressor.injector_parameters()}
        if self.text_encoder is not None:
            parts["text_tower"] = list(self.text_encoder.parameters())
            parts["text_tower_head"] = list(self.text_encoder.head_parameters())
        return parts

    def adapter_keys_may_be_missing(self, missing: list[str]) -> bool:
        """A stage-1 adapter (trained unconditioned) lacks exactly the injector weights stage 2 adds."""
        names = {id(p): n for n, p in self.named_parameters()}
        injector = {names[id(p)] for p in self.compressor.injector_parameters()}
        return bool(missing) and set(missing) <= injector

    def _encode_instructions(self, batch: VisualBatch):
        if self.text_encoder is None:
            return None, None, None
        if batch.instructions is None:
            raise ValueError("the HICom projector is conditioned on instructions, but none were given")
        texts = []
        for index, (text, modality) in enumerate(zip(batch.instructions, batch.modalities)):
            if modality != "text" and not text.strip():
                raise ValueError(
                    f"visual item {index} ({modality}) has an empty instruction; HICom conditions every "
                    f"image/video on the question asked about it"
                )
            texts.append(text)
        return self.text_encoder.encode(texts)

    def forward(self, batch: VisualBatch) -> list[torch.Tensor]:
        pooled, tokens, mask = self._encode_instructions(batch)
        dtype = batch.features.dtype
        cast = lambda x: None if x is None else x.to(dtype)  # noqa: E731
        return self.compressor(
            batch.features,
            batch.frames_per_item,
            batch.modalities,
            dense_embeds=batch.dense_embeds,
            text_pooled=cast(pooled) if self.hicom.needs_text_pooled else None,
            text_tokens=cast(tokens) if self.hicom.needs_text_tokens else None,
            text_mask=mask if self.hicom.needs_text_tokens else None,
        )


def register() -> None:
    """Entry point of the ``llava.projectors`` group; also teaches ``load_pretrained_model`` to answer a
    release-layout folder (``model_type: hicom_qwen2``) with the conversion command."""
    register_projector("hicom", examples=(
        {"mm_projector_type": "hicom", "hicom_preset": "paper"},
        {"mm_projector_type": "hicom", "hicom_preset": "release"},
        {"mm_projector_type": "hicom", "hicom_preset": "paper", "use_guide": "off"},
    ))(HIComProjector)
    register_projector("hicom_release_grammar", pattern=RELEASE_GRAMMAR, examples=(
        {"mm_projector_type": "local43_global32", "use_guide": "direct"},
    ))(HIComProjector)
    from .tools.release import register_release_layout

    register_release_layout()


__all__ = ["HIComProjector", "hicom_config_from", "read_siglip_text_config", "register"]
