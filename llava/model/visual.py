"""What flows from the vision tower to the projector, and from the projector to the splice.

A micro-batch's visual items (images, videos, the dummy image of a text-only sample) travel together
as one :class:`VisualBatch`, packed along the frame axis. A tower with several encoders (each with its
own frame count, grid and width) fills ``encoders``; ``features`` is then its primary encoder's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MODALITIES = ("image", "video", "text")


@dataclass
class EncoderFeatures:
    """One encoder's output for every item of a micro-batch.

    Attributes:
        features: ``(sum_i T_i, H, W, D)``; item i owns rows ``offsets[i]:offsets[i+1]`` of its ``T_i``.
        frames_per_item: ``T_i`` per item for this encoder (encoders may sample different frame counts).
    """

    features: torch.Tensor
    frames_per_item: list[int]

    def __post_init__(self) -> None:
        if sum(self.frames_per_item) != self.features.shape[0]:
            raise ValueError(f"EncoderFeatures: frames_per_item sums to {sum(self.frames_per_item)} but features "
                             f"hold {self.features.shape[0]} frames")

    def per_item(self) -> list[torch.Tensor]:
        """``(T_i, H, W, D)`` per item."""
        return list(self.features.split(self.frames_per_item))


@dataclass
class VisualBatch:
    """Vision-tower output of all visual items of a micro-batch, packed along the frame axis.

    Attributes:
        features: ``(sum_i T_i, H, W, D_vision)`` patch features of the (primary) encoder; item i
            owns rows ``offsets[i]:offsets[i+1]``.
        frames_per_item: ``T_i`` for each item (1 for images and text-only dummies).
        modalities: ``"image" | "video" | "text"`` per item. ``"text"`` marks the dummy image a
            text-only sample carries so every rank runs the same graph; its tokens are dropped.
        dense_embeds: ``(sum_i T_i, H, W, D_vision)`` patch embeddings in the tower's joint
            image-text space (SigLIP: last layer + head MLP), or ``None`` unless the projector asks
            for them through ``wants_dense_embeds``.
        instructions: one instruction string per item, or ``None`` when the caller gave none.
        encoders: every encoder's features by name, for towers with several encoders (else ``None``).
        fields: plugin per-sample fields, ``{name: [value per item]}`` (empty when none were given).
    """

    features: torch.Tensor
    frames_per_item: list[int]
    modalities: list[str]
    dense_embeds: torch.Tensor | None = None
    instructions: list[str] | None = None
    encoders: dict[str, EncoderFeatures] | None = None
    fields: dict[str, list] = field(default_factory=dict)

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
        for name, values in self.fields.items():
            if len(values) != len(self.modalities):
                raise ValueError(f"VisualBatch: field {name!r} has {len(values)} values for {len(self.modalities)} items")
        for name, enc in (self.encoders or {}).items():
            if len(enc.frames_per_item) != len(self.modalities):
                raise ValueError(f"VisualBatch: encoder {name!r} has {len(enc.frames_per_item)} items, "
                                 f"expected {len(self.modalities)}")

    @property
    def num_items(self) -> int:
        return len(self.frames_per_item)

    @property
    def grid(self) -> tuple[int, int]:
        """``(H, W)`` of the patch grid."""
        return self.features.shape[1], self.features.shape[2]


@dataclass
class ProjectorOutput:
    """A projector's result: one ``(L_i, D_llm)`` tensor per item, and named auxiliary losses (scalars,
    unweighted; the model weighs them with ``config.aux_loss_weights``)."""

    tokens: list[torch.Tensor]
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
