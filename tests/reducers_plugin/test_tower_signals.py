"""Reducers that read the vision tower: VisionZip (OneVision port: the recomputed tower attention against eager
SigLIP, the selection and merge against a per-frame re-statement of the port's ``visionzip`` function) and
FastVID's attention-pooling head signals; the errors when a tower cannot give them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from safetensors.torch import save_file
from transformers import SiglipVisionModel

from llava.model.builder import assemble_llava_qwen, load_pretrained_model
from reducers_plugin.fastvid import FastVID
from reducers_plugin.tower_attention import TowerAttention
from reducers_plugin.visionzip import VisionZip


def _visionzip_reference(hidden, attention, metric, dominant, contextual):
    """The port's ``visionzip`` for one frame, token by token: ``hidden (n, D)``, ``attention (n,)``,
    ``metric (n, h)``."""
    n = hidden.shape[0]
    top = set(attention.topk(dominant).indices.tolist())
    dominant_tokens = [hidden[i] for i in range(n) if i in top]
    rest = [i for i in range(n) if i not in top]
    unit = {i: metric[i] / metric[i].norm() for i in rest}
    step = max(1, (n - dominant) // contextual)
    targets = [rest[j] for j in range(0, len(rest), step)][:contextual]
    members = {t: [] for t in targets}
    for i in rest:
        if i in targets:
            continue
        sims = [torch.dot(unit[i], unit[t]).item() for t in targets]
        members[targets[max(range(len(sims)), key=lambda j: (sims[j], -j))]].append(hidden[i])
    contextual_tokens = [hidden[t] + (torch.stack(members[t]).mean(0) if members[t] else 0) for t in targets]
    return torch.stack(dominant_tokens + contextual_tokens)


@pytest.mark.parametrize("budget", [6, 20, 45])
def test_visionzip_equals_per_frame_port_reference(budget):
    gen = torch.Generator().manual_seed(budget)
    grid, score, metric = torch.randn(3, 16, 8, generator=gen), torch.rand(3, 16, generator=gen), torch.randn(
        3, 16, 4, generator=gen)
    reducer = VisionZip(budget=budget, exact_budget=False)
    out = reducer.reduce_video(grid, score, metric)
    per_frame = budget // 3
    dominant = int(per_frame * 54 / 64)
    reference = torch.cat([_visionzip_reference(grid[t], score[t], metric[t], dominant, per_frame - dominant)
                           for t in range(3)])
    assert out.shape[0] == reducer.count(3, 16) == 3 * per_frame
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    exact = VisionZip(budget=budget + 1)  # one frame gets one more token: still exactly N
    assert exact.reduce_video(grid, score, metric).shape[0] == exact.count(3, 16) == budget + 1


@pytest.fixture(scope="module")
def tower_model(tiny_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("visionzip-tiny")
    assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", folder, seed=0)
    _, model, _, _ = load_pretrained_model(str(folder), None, "x", device_map="cpu", torch_dtype="float32")
    return model


@torch.no_grad()
def test_recomputed_tower_attention_equals_eager_output_attentions(tower_model):
    tower = tower_model.get_vision_tower()
    pixels = torch.randn(3, 3, tower.image_size, tower.image_size, generator=torch.Generator().manual_seed(0))
    hook = TowerAttention(tower_model.get_model(), "test")
    try:
        tower.encode_batch([pixels], ["video"])
        received, keys = hook.take(3, "test")
    finally:
        hook.remove()
    config = tower.vision_model.config
    impl, config._attn_implementation = config._attn_implementation, "eager"
    try:
        attentions = tower.vision_model(pixel_values=pixels, output_attentions=True).attentions
    finally:
        config._attn_implementation = impl
    assert len(attentions) == tower.layer_index  # the tower ends at the selected layer
    torch.testing.assert_close(received, attentions[-1].mean(dim=(1, 2)), atol=1e-5, rtol=0)
    assert received.shape == (3, tower.num_patches) and keys.shape[:2] == (3, tower.num_patches)
    assert hook.inputs is None and not tower.vision_model.encoder.layers[-1].self_attn._forward_pre_hooks


def test_selecting_visionzip_hooks_the_tower_and_deselecting_removes_it(tower_model):
    inner = tower_model.get_model()
    attn = tower_model.get_vision_tower().vision_model.encoder.layers[-1].self_attn
    inner.set_token_reducer("visionzip", {"ratio": 0.5})
    assert len(attn._forward_pre_hooks) == 1
    inner.set_token_reducer("visionzip", {"ratio": 0.25})  # the previous one is detached
    assert len(attn._forward_pre_hooks) == 1
    inner.set_token_reducer(None)
    assert not attn._forward_pre_hooks


def test_visionzip_on_a_tower_without_attention_maps_is_a_clear_error():
    model = SimpleNamespace(get_vision_tower=lambda: nn.Identity())
    with pytest.raises(ValueError, match="visionzip needs the attention maps .* Identity cannot give them"):
        VisionZip().attach(model)


@torch.no_grad()
def test_fastvid_reads_the_map_head_from_the_tower_folder(tower_model, tiny_dir):
    inner = tower_model.get_model()
    reducer = inner.set_token_reducer("fastvid", {"ratio": 0.5})
    try:
        tower = tower_model.get_vision_tower()
        assert getattr(tower.vision_model, "head", None) is None  # LLaVA's truncated tower has none
        features = torch.randn(3, 7, 7, tower.hidden_size, generator=torch.Generator().manual_seed(1))
        attention, pooled = reducer.frame_signals(features)
    finally:
        inner.set_token_reducer(None)
    full = SiglipVisionModel.from_pretrained(tiny_dir / "siglip-tiny").eval()
    x = full.post_layernorm(features.flatten(1, 2))
    torch.testing.assert_close(pooled, full.head(x), atol=1e-5, rtol=0)
    weights = full.head.attention(full.head.probe.expand(3, -1, -1), x, x)[1][:, 0]  # (3, 49)
    expected = torch.nn.functional.avg_pool2d(weights.view(3, 1, 7, 7), 2).flatten(1)  # the checkpoint pools by average
    torch.testing.assert_close(attention, expected, atol=1e-6, rtol=0)


def test_fastvid_without_a_head_or_siglip_tower_is_a_clear_error(tower_model, tmp_path):
    with pytest.raises(ValueError, match="fastvid needs a SigLIP vision tower .* Identity cannot give"):
        FastVID().attach(SimpleNamespace(get_vision_tower=lambda: nn.Identity()))
    tower = tower_model.get_vision_tower()
    folder = tower.vision_tower_name
    try:
        tower.vision_tower_name = str(tmp_path)  # a folder without weights: refused when selected
        with pytest.raises(ValueError, match=f"LLaVA checkpoints do not carry.* {tmp_path} has no weights"):
            tower_model.get_model().set_token_reducer("fastvid")
        assert tower_model.get_model().get_token_reducer() is None
        save_file({"vision_model.post_layernorm.weight": torch.ones(4)}, str(tmp_path / "model.safetensors"))
        with pytest.raises(ValueError, match="has no vision_model.head weights"):
            tower_model.get_model().set_token_reducer("fastvid")
    finally:
        tower.vision_tower_name = folder
