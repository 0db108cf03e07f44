"""The instruction encoder: SigLIP's text tower, read from the vision tower's folder.

``encode(texts)`` returns the pooled embedding ``C_p = head(h[:, -1])`` (SigLIP's own pooling: the
last of the 64 max-length-padded positions) and the token-level embeddings ``C_f = head(h)`` with a
mask of the real tokens (up to and including the first ``</s>``; SigLIP pads with ``</s>`` too).
Texts longer than the tower's 64 positions are truncated, as SigLIP was trained; each truncation is
logged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, SiglipTextConfig, SiglipTextModel

from llava.model.weights import config_fields, load_part_strictly, read_json

logger = logging.getLogger(__name__)

def read_siglip_text_config(folder: str | Path) -> dict:
    """The text part of a ``siglip`` folder's config.json, as a dict."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"text tower folder {folder} has no config.json")
    raw = read_json(config_file)
    if raw.get("model_type") != "siglip" or not raw.get("text_config"):
        raise ValueError(f"{config_file}: not a SigLIP checkpoint with a text tower (model_type {raw.get('model_type')!r})")
    return dict(raw["text_config"])


class SiglipTextEncoder(nn.Module):
    """Frozen-by-default SigLIP text tower with its tokenizer.

    Args:
        folder: the SigLIP checkpoint folder (the vision tower's).
        text_config: the stored text config (rebuilds without the folder; weights come from the
            LLaVA checkpoint), or ``None`` to read it from ``folder``.
        delay_load: build the structure only.
    """

    def __init__(self, folder: str, text_config: dict | None = None, delay_load: bool = False,
                 tokenizer_subfolder: str | None = None):
        super().__init__()
        self.folder = folder
        # an exported checkpoint carries the SigLIP tokenizer in a subfolder of its own folder
        self.tokenizer_subfolder = tokenizer_subfolder
        self.tokenizer_folder = folder
        self.text_config = dict(text_config) if text_config else read_siglip_text_config(folder)
        config = SiglipTextConfig(**config_fields(self.text_config))
        self.text_model = SiglipTextModel(config)
        self.text_model.requires_grad_(False)
        self.max_length = config.max_position_embeddings
        self._tokenizer = None
        self.is_loaded = False
        if not delay_load:
            self.load_model()

    @property
    def hidden_size(self) -> int:
        return self.text_model.config.hidden_size

    def load_model(self, device_map=None) -> None:
        """Loads the text tower weights from ``folder`` (every tensor must be present)."""
        if self.is_loaded:
            return
        load_part_strictly(self.text_model, self.folder, "text_model.", "text tower")
        self.text_model.requires_grad_(False)
        self.is_loaded = True

    def head_parameters(self) -> list[nn.Parameter]:
        """The output projection into the joint image-text space (what ``text_tower_head`` trains)."""
        return list(self.text_model.head.parameters())

    def set_checkpoint_folder(self, folder: str | Path) -> None:
        """Called when the model is loaded from ``folder``: use its tokenizer subfolder if it has one."""
        if self.tokenizer_subfolder and (Path(folder) / self.tokenizer_subfolder).is_dir():
            self.tokenizer_folder = str(Path(folder) / self.tokenizer_subfolder)
            self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if not Path(self.tokenizer_folder).is_dir():
                raise FileNotFoundError(
                    f"the SigLIP tokenizer is read from {self.tokenizer_folder} (the vision tower folder, or the "
                    f"checkpoint's {self.tokenizer_subfolder or 'text tokenizer'} subfolder), which does not exist"
                )
            # the text config is handed over: left to itself, AutoTokenizer reads the folder's SigLIP
            # config and transformers warns about the default text config's special-token ids
            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_folder, config=self.text_model.config)
        return self._tokenizer

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
