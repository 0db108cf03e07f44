"""The SigLIP tower honours mm_vision_select_layer and computes dense head embeddings exactly."""

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import SiglipVisionModel

from llava.model.multimodal_encoder.builder import build_vision_tower


@pytest.fixture(scope="module")
def reference(tiny_dir):
    model = SiglipVisionModel.from_pretrained(tiny_dir / "siglip-tiny").eval()
    torch.manual_seed(0)
    images = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        out = model(pixel_values=images, output_hidden_states=True)
    return model, images, out


def _tower(tiny_dir, layer, **kw):
    cfg = SimpleNamespace(mm_vision_tower=str(tiny_dir / "siglip-tiny"), mm_vision_select_layer=layer)
    return build_vision_tower(cfg, **kw).eval()


@pytest.mark.parametrize("layer", [-2, -1, 1])
def test_select_layer_is_honoured(tiny_dir, reference, layer):
    _, images, out = reference
    tower = _tower(tiny_dir, layer)
    num_layers = len(out.hidden_states) - 1
    kept = layer if layer > 0 else num_layers + 1 + layer
    assert len(tower.vision_model.encoder.layers) == kept
    with torch.no_grad():
        feats = tower(images)
    torch.testing.assert_close(feats, out.hidden_states[layer])
    assert feats.shape == (3, tower.num_patches, tower.hidden_size) and tower.num_patches_per_side == 7


def test_dense_embeddings_use_the_pooling_head_mlp(tiny_dir, reference):
    model, images, out = reference
    tower = _tower(tiny_dir, -2, keep_head=True)
    with torch.no_grad():
        feats, dense = tower.forward_with_dense(images)
        last = out.last_hidden_state
        expected = last + model.head.mlp(model.head.layernorm(last))
    torch.testing.assert_close(feats, out.hidden_states[-2])
    torch.testing.assert_close(dense, expected)
    with pytest.raises(RuntimeError, match="keep_head"):
        _tower(tiny_dir, -2).forward_with_dense(images)


def test_tower_is_frozen_and_loaded(tiny_dir):
    tower = _tower(tiny_dir, -2)
    assert tower.is_loaded and not any(p.requires_grad for p in tower.parameters())


def test_bad_towers_are_named(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_vision_tower(SimpleNamespace(mm_vision_tower=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="out of range"):
        _tower(tiny_dir, -9)
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ValueError, match="clip"):
        build_vision_tower(SimpleNamespace(mm_vision_tower=str(clip)))
