"""LLaVA-OneVision-compatible core on transformers 5.

Importing the package registers our model types (``llava_qwen``, ``llava_llama``) with transformers'
Auto* classes, as upstream does, so ``AutoModelForCausalLM.from_pretrained`` finds them.
"""

import os

import torch

if not torch.cuda.is_available():
    # DeepSpeed (imported by transformers' integrations) warns on every import that it falls back to the
    # CPU when it detects no accelerator; on a machine without CUDA that is the known answer
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

from .model import LlavaConfig  # noqa: E402, LlavaLlamaForCausalLM, LlavaQwenConfig, LlavaQwenForCausalLM

__all__ = ["LlavaConfig", "LlavaLlamaForCausalLM", "LlavaQwenConfig", "LlavaQwenForCausalLM"]
