"""The importer of MERV's released layout, on a state dict built here from the documented names
(``merv.py`` ``from_pretrained``; ``nn.MultiheadAttention``'s parameter names with ``kdim != embed_dim``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from merv_plugin.checkpoint import convert_merv_state_dict, load_merv_checkpoint


def release_state(model, seed: int = 0) -> tuple[dict, nn.MultiheadAttention, dict]:
    """``{"model": {...}}`` as MERV saves it, with fresh random projector/mixer weights and the model's
    LLM; also the fusion's attention module and the projector tensors, for the reference forward."""
    torch.manual_seed(seed)
    projector = model.get_model().mm_projector
    query_dim, dim = projector.mixer.k_proj.weight.shape
    attention = nn.MultiheadAttention(query_dim, 1, dropout=0.0, batch_first=True, kdim=dim, vdim=dim)
    with torch.no_grad():
        attention.in_proj_bias.normal_()
    fusion = {"Q": torch.randn(1, query_dim), **{f"attention.{k}": v for k, v in attention.state_dict().items()}}
    projectors = {f"{e}.projector.projector.{p}": torch.randn_like(t)
                  for e, linear in enumerate(projector.projectors) for p, t in linear.state_dict().items()}
    llm = {f"llm.{k}": v.clone() for k, v in model.state_dict().items()
           if not k.startswith(("model.mm_projector.", "model.vision_tower."))}
    return {"model": {"projectors": projectors, "feature_fusion": fusion, "llm_backbone": llm},
            "optimizer": {}}, attention, projectors


def test_release_layout_imports_and_matches_the_reference_forward(merv_llava, tmp_path):
    _, _, model, processor = merv_llava
    original = {k: v.clone() for k, v in model.state_dict().items()}
    raw, attention, projectors = release_state(model)
    path = tmp_path / "latest-checkpoint.pt"
    torch.save(raw, path)
    try:
        load_merv_checkpoint(path, model)
        mixer = model.get_model().mm_projector.mixer
        torch.testing.assert_close(mixer.query, raw["model"]["feature_fusion"]["Q"], atol=0, rtol=0)
        video = processor.process_clip(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
        with torch.no_grad():
            batch = model.get_vision_tower().encode_batch([video], ["video"])
            tokens = model.get_model().mm_projector(batch)[0]
            # the reference: MERV's modules with the file's tensors
            pooled = []
            for e, enc in enumerate(batch.encoders.values()):
                x = nn.AdaptiveAvgPool3d((2, 2, 2))(enc.features.permute(3, 0, 1, 2)[None]).flatten(2).transpose(1, 2)
                weight, bias = (projectors[f"{e}.projector.projector.{p}"] for p in ("weight", "bias"))
                pooled.append(x @ weight.T + bias)
            values = torch.stack(pooled, 1)
            keys = values.mean(2)
            _, weights = attention(query=raw["model"]["feature_fusion"]["Q"][None], key=keys, value=keys)
            expected = torch.bmm(weights, values.flatten(2)).reshape(-1, values.shape[-1])
        torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=0)
    finally:
        model.load_state_dict(original)


def test_every_missing_or_unexpected_tensor_is_named(merv_llava):
    _, _, model, _ = merv_llava
    raw, _, _ = release_state(model)
    target = model.state_dict()
    state = raw["model"]
    del state["projectors"]["2.projector.projector.bias"]
    state["feature_fusion"]["attention.bias_k"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"missing \['model.mm_projector.projectors.2.bias'\], unexpected "
                                       r"\['feature_fusion.attention.bias_k'\]"):
        convert_merv_state_dict(state, target)
    raw, _, _ = release_state(model)
    raw["model"]["video_backbone"] = {"featurizer.x": torch.zeros(1)}
    with pytest.raises(KeyError, match=r"unexpected \['video_backbone.featurizer.x'\]"):
        convert_merv_state_dict(raw["model"], target)
    raw, _, _ = release_state(model)
    raw["model"]["feature_fusion"]["Q"] = torch.zeros(1, 5)
    with pytest.raises(ValueError, match=r"model.mm_projector.mixer.query \(1, 5\) vs \(1, 24\)"):
        convert_merv_state_dict(raw["model"], target)


def test_padded_vocabulary_rows_are_trimmed_only_when_asked(merv_llava):
    _, _, model, _ = merv_llava
    raw, _, _ = release_state(model)
    embed = raw["model"]["llm_backbone"]["llm.model.embed_tokens.weight"]
    raw["model"]["llm_backbone"]["llm.model.embed_tokens.weight"] = torch.cat([embed, torch.zeros(7, embed.shape[1])])
    with pytest.raises(ValueError, match="embed_tokens.weight"):
        convert_merv_state_dict(raw["model"], model.state_dict())
    state = convert_merv_state_dict(raw["model"], model.state_dict(), trim_vocab=True)
    torch.testing.assert_close(state["model.embed_tokens.weight"], embed, atol=0, rtol=0)
