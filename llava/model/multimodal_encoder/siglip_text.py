"""SigLIP's text tower, read from a SigLIP checkpoint folder (the vision tower's), with its tokenizer.

Projectors that read text (an instruction, a caption's phrases) build on :class:`SiglipTextTower`: it is
frozen when built, loads ``text_model.*`` strictly from the folder, rebuilds from a stored
``text_config`` without the folder (the weights then come from the LLaVA checkpoint), and reads its
tokenizer from the folder, or from a subfolder an exported checkpoint ships it in.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import AutoTokenizer, SiglipTextConfig, SiglipTextModel

from ..weights import config_fields, load_part_strictly, read_json


def read_siglip_text_config(folder: str | Path) -> dict:
    """The ``text_config`` of a ``siglip`` folder's config.json; errors name the folder and the reason."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"text tower folder {folder} has no config.json")
    raw = read_json(config_file)
    if raw.get("model_type") != "siglip" or not raw.get("text_config"):
        raise ValueError(f"{config_file}: not a SigLIP checkpoint with a text tower (model_type {raw.get('model_type')!r})")
    return dict(raw["text_config"])


class SiglipTextTower(nn.Module):
    """SigLIP's text model (``self.text_model``, frozen when built) and its tokenizer.

    Args:
        folder: the SigLIP checkpoint folder.
        text_config: the stored text config, or ``None`` to read it from ``folder``.
        delay_load: build the structure only (the weights come from elsewhere).
        tokenizer_subfolder: where an exported checkpoint keeps the tokenizer
            (:meth:`set_checkpoint_folder` switches to it).
    """

    def __init__(self, folder: str | None, text_config: dict | None = None, delay_load: bool = False,
                 tokenizer_subfolder: str | None = None):
        super().__init__()
        self.folder = folder
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

    def set_checkpoint_folder(self, folder: str | Path) -> None:
        """Called when the model is loaded from ``folder``: use its tokenizer subfolder if it has one."""
        if self.tokenizer_subfolder and (Path(folder) / self.tokenizer_subfolder).is_dir():
            self.tokenizer_folder = str(Path(folder) / self.tokenizer_subfolder)
            self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if not self.tokenizer_folder or not Path(self.tokenizer_folder).is_dir():
                raise FileNotFoundError(
                    f"the SigLIP tokenizer is read from {self.tokenizer_folder} (the vision tower folder, or the "
                    f"checkpoint's {self.tokenizer_subfolder or 'tokenizer'} subfolder), which does not exist")
            # the text config is handed over: left to itself, AutoTokenizer reads the folder's SigLIP
            # config and transformers warns about the default text config's special-token ids
            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_folder, config=self.text_model.config)
        return self._tokenizer


__all__ = ["SiglipTextTower", "read_siglip_text_config"]
