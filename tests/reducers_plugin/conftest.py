"""A tiny random Qwen2 for the in-LLM reducers' tests (SDPA and eager share the weights)."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

LM_LAYERS, LM_WIDTH = 4, 32


def tiny_qwen2(impl: str) -> Qwen2ForCausalLM:
    config = Qwen2Config(vocab_size=64, hidden_size=LM_WIDTH, intermediate_size=64, num_hidden_layers=LM_LAYERS,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         initializer_range=0.2, tie_word_embeddings=False)
    config._attn_implementation = impl
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def models() -> tuple[Qwen2ForCausalLM, Qwen2ForCausalLM]:
    """``(sdpa, eager)`` tiny Qwen2 models with the same weights."""
    return tiny_qwen2("sdpa"), tiny_qwen2("eager")
