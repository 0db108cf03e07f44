"""LLaVA on LLaMA-family LLMs: ``model_type: llava_llama`` (lmms-eval imports ``LlavaConfig`` here)."""

from __future__ import annotations

from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel

from ..llava_arch import LlavaMetaForCausalLM, LlavaMetaModel
from .legacy_config import LegacyKeysMixin


class LlavaConfig(LegacyKeysMixin, LlamaConfig):
    model_type = "llava_llama"


class LlavaLlamaModel(LlavaMetaModel, LlamaModel):
    config_class = LlavaConfig


class LlavaLlamaForCausalLM(LlavaMetaForCausalLM, LlamaForCausalLM):
    config_class = LlavaConfig

    def __init__(self, config):
        LlamaPreTrainedModel.__init__(self, config)
        config.model_type = "llava_llama"
        self.model = LlavaLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_model(self) -> LlavaLlamaModel:
        return self.model


AutoConfig.register("llava_llama", LlavaConfig, exist_ok=True)
AutoModelForCausalLM.register(LlavaConfig, LlavaLlamaForCausalLM, exist_ok=True)
