"""Fixtures of the MERV tests: the tiny four-encoder tower folder and a tiny LLaVA-Qwen built on it."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_MERV = {"grid": [2, 2, 2], "fusion": "cross_attention_avg_lq", "query_dim": 24}


@pytest.fixture(scope="session")
def merv_tower_dir(tmp_path_factory) -> Path:
    """``merv_plugin.tiny``'s tower: languagebind (CLIP), dinov2, vivit, siglip; 4 LLM frames per clip."""
    from merv_plugin.tiny import make_tiny_merv_tower

    return make_tiny_merv_tower(tmp_path_factory.mktemp("merv-tower"), seed=0)


@pytest.fixture(scope="session")
def merv_llava(tiny_dir, merv_tower_dir, tmp_path_factory):
    """``(folder, tokenizer, model, processor)``: the tiny Qwen2 with the MERV tower and projector, fp32, CPU."""
    from llava.model.builder import assemble_llava_qwen, load_pretrained_model

    out = tmp_path_factory.mktemp("merv-llava")
    assemble_llava_qwen(tiny_dir / "qwen2-tiny", merv_tower_dir, out, mm_projector_type="merv", seed=0,
                        merv_config=dict(TINY_MERV))
    tokenizer, model, processor, _ = load_pretrained_model(str(out), None, "x", device_map="cpu", torch_dtype="float32")
    return out, tokenizer, model, processor
