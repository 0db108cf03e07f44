"""LLaVA models. Importing this registers ``llava_qwen`` and ``llava_llama`` with the Auto* classes."""

from .language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from .language_model.llava_qwen import LlavaQwenConfig, LlavaQwenForCausalLM

__all__ = ["LlavaConfig", "LlavaLlamaForCausalLM", "LlavaQwenConfig", "LlavaQwenForCausalLM"]
