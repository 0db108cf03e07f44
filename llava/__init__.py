"""LLaVA-OneVision-compatible core on transformers 5.

Importing the package registers our model types (``llava_qwen``, ``llava_llama``) with transformers'
Auto* classes, as upstream does, so ``AutoModelForCausalLM.from_pretrained`` finds them.
"""

from .model import LlavaConfig, LlavaLlamaForCausalLM, LlavaQwenConfig, LlavaQwenForCausalLM

__all__ = ["LlavaConfig", "LlavaLlamaForCausalLM", "LlavaQwenConfig", "LlavaQwenForCausalLM"]
