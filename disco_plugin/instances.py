"""The ``instances`` per-sample field and the frozen encoder of its phrases.

An annotation record may carry ``"instances": ["a red tile", "a blue ball", ...]``, the distinct things
its caption names (the prototype calls the key ``objects``). :func:`parse_instances` checks it when
the record is read (a ``ValueError`` drops the record, counted as ``bad_instances``, or stops the run
naming the record under ``--strict_data``); a record without the key trains with the LM loss only.

The phrases are encoded by SigLIP's text tower (the project's text encoder; the prototype used its
Q-Former's text path), pooled output, frozen and outside the gradient: :class:`InstanceEncoder`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from llava.model.multimodal_encoder.siglip_text import SiglipTextTower, read_siglip_text_config

logger = logging.getLogger(__name__)

#: Subfolder of an exported model holding the SigLIP tokenizer of the instance encoder.
TOKENIZER_DIR = "instance_tokenizer"

#: The most instances a record may name in this process (the projector's group count, set when it is
#: built, before any record is read); ``None``: no projector has set it.
_limit: dict[str, int | None] = {"max_instances": None}


def set_instance_limit(max_instances: int | None) -> None:
    """Records are refused when they name more than ``max_instances`` (``None``: no limit)."""
    _limit["max_instances"] = max_instances


def parse_instances(value: Any) -> list[str]:
    """``value`` checked: a list of non-empty, distinct strings, at most the projector's group count."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {type(value).__name__} {value!r:.80}")
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise ValueError(f"every instance must be a string, got {bad[:3]!r}")
    phrases = [v.strip() for v in value]
    if any(not p for p in phrases):
        raise ValueError(f"empty instance phrase in {value!r}")
    if len(set(phrases)) != len(phrases):
        raise ValueError(f"repeated instance phrases in {value!r}: two groups cannot both be the same concept")
    limit = _limit["max_instances"]
    if limit is not None and len(phrases) > limit:
        raise ValueError(f"{len(phrases)} instances but the DisCo projector pairs at most {limit} (one per token "
                         "group); shorten the list or set truncate_instances")
    return phrases


def read_text_config(folder: str | Path) -> dict:
    """The ``text_config`` of a SigLIP folder; an error naming the folder when it has none."""
    try:
        return read_siglip_text_config(folder)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"VCD needs SigLIP's text tower: {err} (pass --text_tower, or turn VCD off)") from None


class InstanceEncoder(SiglipTextTower):
    """SigLIP's text tower (``text_model.*``), frozen: phrases -> pooled ``(N, D_text)`` embeddings.
    Construction, loading and the tokenizer (shipped in :data:`TOKENIZER_DIR` of an export):
    :class:`SiglipTextTower`.

    Args:
        folder: the SigLIP checkpoint folder.
        text_config: the stored text config (rebuild without the folder; weights come from the LLaVA
            checkpoint), or ``None`` to read it from ``folder``.
        delay_load: build the structure only.
    """

    def __init__(self, folder: str | None, text_config: dict | None = None, delay_load: bool = False) -> None:
        if folder is None and text_config is None:
            raise ValueError("VCD needs SigLIP's text tower: no --text_tower / vision tower folder to read it from")
        super().__init__(folder, text_config or read_text_config(folder), delay_load, tokenizer_subfolder=TOKENIZER_DIR)

    @torch.no_grad()
    def forward(self, phrases: list[str]) -> torch.Tensor:
        """``N`` phrases -> ``(N, D_text)`` pooled embeddings (no gradient: the encoder stays as loaded)."""
        ids = self.tokenizer(phrases, padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")["input_ids"]
        return self.text_model(input_ids=ids.to(self.text_model.device)).pooler_output
