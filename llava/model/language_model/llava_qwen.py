"""LLaVA on Qwen2 / Qwen2.5 (the OneVision path): ``model_type: llava_qwen``."""

from __future__ import annotations

from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen2Model
from transformers.models.qwen2.modeling_qwen2 import Qwen2PreTrainedModel

from ..llava_arch import LlavaMetaForCausalLM, LlavaMetaModel
from .legacy_config import LegacyKeysMixin


class LlavaQwenConfig(LegacyKeysMixin, Qwen2Config):
    model_type = "llava_qwen"


class LlavaQwenModel(LlavaMetaModel, Qwen2Model):
    config_class = LlavaQwenConfig


class LlavaQwenForCausalLM(LlavaMetaForCausalLM, Qwen2ForCausalLM):
    config_class = LlavaQwenConfig

    def __init__(self, config):
        # Skip Qwen2ForCausalLM.__init__ so the base model is allocated once, as the LLaVA variant.
        Qwen2PreTrainedModel.__init__(self, config)
        config.model_type = "llava_qwen"  # checkpoints published as "llava" / "qwen2" re-save as ours
        self.model = LlavaQwenModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_model(self) -> LlavaQwenModel:
        return self.model


AutoConfig.register("llava_qwen", LlavaQwenConfig, exist_ok=True)
AutoModelForCausalLM.register(LlavaQwenConfig, LlavaQwenForCausalLM, exist_ok=True)
