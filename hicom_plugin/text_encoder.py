"""The instruction encoder: SigLIP's text tower, read from the vision tower's folder.

``encode(texts)`` returns the pooled embedding ``C_p = head(h[:, -1])`` (SigLIP's own pooling: the
last of the 64 max-length-padded positions) and the token-level embeddings ``C_f = head(h)`` with a
mask of the real tokens (up to and including the first ``</s>``; SigLIP pads with ``</s>`` too).
Texts longer than the tower's 64 positions are truncated, as SigLIP was trained; each truncation is
logged.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from llava.model.multimodal_encoder.siglip_text import SiglipTextTower, read_siglip_text_config

logger = logging.getLogger(__name__)

__all__ = ["SiglipTextEncoder", "read_siglip_text_config"]


class SiglipTextEncoder(SiglipTextTower):
    """The SigLIP text tower (frozen by default) as HICom's instruction encoder: ids -> pooled, token-level
    embeddings and mask. Construction, loading and the tokenizer: :class:`SiglipTextTower`."""

    def head_parameters(self) -> list[nn.Parameter]:
        """The output projection into the joint image-text space (what ``text_tower_head`` trains)."""
        return list(self.text_model.head.parameters())

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """``(B, max_length)`` ids, max-length padded and truncated like SigLIP training."""
        tok = self.tokenizer
        unpadded = tok(texts, truncation=False, padding=False)["input_ids"]
        long = [i for i, ids in enumerate(unpadded) if len(ids) > self.max_length]
        if long:
            logger.warning("%d instruction(s) exceed %d SigLIP tokens and are truncated (items %s)",
                           len(long), self.max_length, long[:8])
        ids = tok(texts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
        return ids["input_ids"]

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``input_ids (B, L)`` -> pooled ``(B, D)``, tokens ``(B, L, D)``, mask ``(B, L)`` bool."""
        out = self.text_model(input_ids=input_ids.to(self.text_model.device))
        tokens = self.text_model.head(out.last_hidden_state)
        eos = self.tokenizer.eos_token_id
        is_eos = input_ids == eos
        first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(input_ids[:, 0], input_ids.shape[1] - 1))
        mask = torch.arange(input_ids.shape[1], device=input_ids.device)[None] <= first_eos[:, None]
        return out.pooler_output, tokens, mask.to(tokens.device)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self(self.tokenize(texts))
