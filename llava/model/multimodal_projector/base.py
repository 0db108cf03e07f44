"""The contract between the LLaVA architecture and a vision projector.

Two kinds of projector exist:

* **Token-wise projectors** (``linear``, ``mlp2x_gelu``, ``identity``): plain ``nn.Module`` s whose
  ``forward(features)`` maps ``(..., D_vision) -> (..., D_llm)`` token by token. They keep upstream
  LLaVA's checkpoint keys (``model.mm_projector.0.weight`` ...). For videos, the architecture pools
  the projected frames 2x2 afterwards (OneVision), reading the stride and mode from the config at
  every call.

* **Structured projectors** (subclasses of :class:`StructuredProjector`, e.g. the HICom plugin):
  they see every visual item of the micro-batch at once, with its (T, H, W) layout and, optionally,
  an instruction per item, and return the final LLM tokens of each item. The architecture then
  splices those tokens as they are (no pooling, no newline tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MODALITIES = ("image", "video", "text")


@dataclass
class VisualBatch:
    """Vision-tower output of all visual items of a micro-batch, packed along the frame axis.

    Attributes:
        features: ``(sum_i T_i, H, W, D_vision)`` patch features of the selected tower layer; item i
            owns rows ``offsets[i]:offsets[i+1]``.
        frames_per_item: ``T_i`` for each item (1 for images and text-only dummies).
        modalities: ``"image" | "video" | "text"`` per item. ``"text"`` marks the dummy image a
            text-only sample carries so every rank runs the same graph; its tokens are dropped.
        dense_embeds: ``(sum_i T_i, H, W, D_vision)`` patch embeddings in the tower's joint
            image-text space (SigLIP: last layer + head MLP), or ``None`` unless the projector asks
            for them through ``wants_dense_embeds``.
        instructions: one instruction string per item, or ``None`` when the caller gave none.
    """

    features: torch.Tensor
    frames_per_item: list[int]
    modalities: list[str]
    dense_embeds: torch.Tensor | None = None
    instructions: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.frames_per_item) != len(self.modalities):
            raise ValueError(
                f"VisualBatch: {len(self.frames_per_item)} items but {len(self.modalities)} modalities"
            )
        if sum(self.frames_per_item) != self.features.shape[0]:
            raise ValueError(
                f"VisualBatch: frames_per_item sums to {sum(self.frames_per_item)} but features hold "
                f"{self.features.shape[0]} frames"
            )
        bad = sorted({m for m in self.modalities if m not in MODALITIES})
        if bad:
            raise ValueError(f"VisualBatch: unknown modalities {bad}; expected one of {MODALITIES}")
        if self.instructions is not None and len(self.instructions) != len(self.modalities):
            raise ValueError(
                f"VisualBatch: {len(self.instructions)} instructions for {len(self.modalities)} items"
            )

    @property
    def num_items(self) -> int:
        return len(self.frames_per_item)

    @property
    def grid(self) -> tuple[int, int]:
        """``(H, W)`` of the patch grid."""
        return self.features.shape[1], self.features.shape[2]


class StructuredProjector(nn.Module):
    """Base class for projectors that compress whole visual items, optionally conditioned on text.

    Subclasses set the two class attributes below and implement :meth:`forward` and
    :meth:`num_output_tokens`, and override :meth:`wants_dense_embeds` if they need the tower's
    dense embeddings. They are built by ``build_vision_projector(config, vision_cfg=...)``
    through the projector registry like any other projector.
    """

    #: The projector uses ``VisualBatch.instructions``; the architecture recovers them from the
    #: prompt when the caller passes none (e.g. lmms-eval, which only passes ``input_ids``).
    uses_instructions: bool = False

    @classmethod
    def wants_dense_embeds(cls, config) -> bool:
        """Whether, for this model config, the projector reads ``VisualBatch.dense_embeds``.

        Asked before the vision tower is built (the tower then keeps its last layers and head).
        """
        return False

    def forward(self, batch: VisualBatch) -> list[torch.Tensor]:
        """Returns one ``(L_i, D_llm)`` tensor per item, in item order."""
        raise NotImplementedError

    def num_output_tokens(self, t: int, h: int, w: int, modality: str = "video") -> int:
        """Number of LLM tokens produced for one item of ``t`` frames on an ``h x w`` grid."""
        raise NotImplementedError

    #: Names of :meth:`tunable_parts` that are not part of the adapter (``mm_mlp_adapter``): they stay
    #: frozen unless named in ``--mm_tunable_parts`` and are left out of ``mm_projector.bin`` while
    #: frozen (e.g. a text tower that loads its weights from its own folder).
    standalone_parts: tuple[str, ...] = ()

    def tunable_parts(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter subsets that ``--mm_tunable_parts`` can unfreeze and the trainer can give
        their own learning rate (``guide_injector`` -> ``--guide_injector_lr``; ``text_tower`` ->
        ``--mm_vision_tower_lr``). The default has none."""
        return {}

    def adapter_keys_may_be_missing(self, missing: list[str]) -> bool:
        """Whether an adapter file (``--pretrain_mm_mlp_adapter``) lacking ``missing`` (keys relative to
        this module) may still be loaded, those parameters keeping their fresh initialisation; e.g. a
        stage-1 adapter trained without the modules a later stage adds. The default says no."""
        return False

    def clean_instruction(self, text: str) -> str:
        """Turns a user turn recovered from a prompt into the instruction the projector sees.

        The default keeps the text as it is; plugins strip benchmark boilerplate here.
        """
        return text.strip()
