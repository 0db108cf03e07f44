"""Visual tokens spliced into the text embeddings at their ``<image>`` placeholders.

Each ``IMAGE_TOKEN_INDEX`` of a row is replaced by the tokens of the next visual item; a row without
placeholder consumes one (dummy) item and contributes none of its tokens, so every rank runs the same
modules. Rows are truncated to the model's maximum length and padded to one batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

logger = logging.getLogger(__name__)


@dataclass
class SplicedBatch:
    """The LLM's inputs after splicing.

    Attributes:
        inputs_embeds: ``(B, L, D)``.
        labels: ``(B, L)``, ``IGNORE_INDEX`` at visual tokens and padding.
        attention_mask: ``(B, L)`` bool.
        position_ids: ``(B, L)``, counting from 0 at each row's first real token.
        visual_spans: per row, ``(start, end)`` half-open positions of each item's tokens in ``inputs_embeds``.
    """

    inputs_embeds: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    visual_spans: list[list[tuple[int, int]]]


def splice_visual_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
    text_embeds: torch.Tensor,
    features: list[torch.Tensor],
    max_length: int | None = None,
    padding_side: str = "right",
) -> SplicedBatch:
    """Replaces each placeholder by its item's ``(L_i, D)`` tokens (module docstring).

    Args:
        input_ids: ``(B, L)`` with ``IMAGE_TOKEN_INDEX`` placeholders.
        attention_mask: ``(B, L)`` or ``None`` (all real).
        labels: ``(B, L)`` or ``None``.
        text_embeds: ``(B, L, D)`` embeddings of ``input_ids`` (placeholders embedded as anything).
        features: one ``(L_i, D)`` tensor per visual item, in placeholder order.
        max_length: rows longer after splicing are truncated (a warning counts the supervised tokens lost).
        padding_side: ``"right"`` (training) or ``"left"`` (generation).
    """
    keep = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    embeds_rows, label_rows, span_rows = [], [], []
    item = 0
    for row in range(input_ids.shape[0]):
        ids = input_ids[row][keep[row]]
        emb = text_embeds[row][keep[row]]
        lab = labels[row][keep[row]] if labels is not None else torch.full_like(ids, IGNORE_INDEX)
        where = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
        if not where:
            if item >= len(features):
                raise ValueError(f"sample {row} has no <image> but no visual item is left for its dummy")
            embeds_rows.append(torch.cat([emb, features[item][:0].to(emb.dtype)]))
            item += 1
            label_rows.append(lab)
            span_rows.append([])
            continue
        pieces_e, pieces_l, spans, prev, length = [], [], [], 0, 0
        for pos in where:
            if item >= len(features):
                raise ValueError(f"sample {row}: more <image> placeholders than visual items ({len(features)})")
            feat = features[item].to(emb.dtype)
            item += 1
            pieces_e += [emb[prev:pos], feat]
            pieces_l += [lab[prev:pos], lab.new_full((feat.shape[0],), IGNORE_INDEX)]
            length += pos - prev
            spans.append((length, length + feat.shape[0]))
            length += feat.shape[0]
            prev = pos + 1
        pieces_e.append(emb[prev:])
        pieces_l.append(lab[prev:])
        embeds_rows.append(torch.cat(pieces_e))
        label_rows.append(torch.cat(pieces_l))
        span_rows.append(spans)
    if item != len(features):
        raise ValueError(f"{len(features)} visual items given but the prompts consumed {item}")

    if max_length is not None:
        for row, lab in enumerate(label_rows):
            if len(lab) > max_length:
                cut = int((lab[max_length:] != IGNORE_INDEX).sum())
                logger.warning(
                    "sample %d: %d tokens after splicing exceed tokenizer_model_max_length=%d; "
                    "truncating drops %d supervised tokens", row, len(lab), max_length, cut,
                )
                embeds_rows[row], label_rows[row] = embeds_rows[row][:max_length], lab[:max_length]
                span_rows[row] = [(s, min(e, max_length)) for s, e in span_rows[row] if s < max_length]

    inputs_embeds, new_labels, mask, positions = pad_rows(embeds_rows, label_rows, padding_side)
    if padding_side == "left":
        longest = inputs_embeds.shape[1]
        span_rows = [[(s + longest - len(lab), e + longest - len(lab)) for s, e in spans]
                     for spans, lab in zip(span_rows, label_rows)]
    return SplicedBatch(inputs_embeds, new_labels, mask, positions, span_rows)


def pad_rows(embeds: list[torch.Tensor], labels: list[torch.Tensor], side: str):
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
