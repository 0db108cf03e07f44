"""The resampler: exactly K tokens, batched == per item, observable per-frame focus maps, and the
prototype's focus features (``pad_text_embeds``: ``einsum('bctn,bqtn->bqctn')`` then a mean over patches)."""

from __future__ import annotations

import pytest
import torch

from disco_plugin.config import PRESETS, DiscoConfig
from disco_plugin.resampler import DiscoResampler

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def resampler():
    torch.manual_seed(0)
    return DiscoResampler(TINY, vision_dim=24, llm_dim=40).eval()


@pytest.mark.parametrize("scope", ["clip", "frame"])
def test_batched_equals_per_item(scope):
    torch.manual_seed(1)
    model = DiscoResampler(TINY.replace(attention_scope=scope), vision_dim=24, llm_dim=40).eval()
    frames = [3, 1, 5, 2]
    feats = torch.randn(sum(frames), 3, 3, 24)
    with torch.no_grad():
        batched = model(feats, frames)
        for i, item in enumerate(feats.split(frames)):
            alone = model(item, [frames[i]])
            assert torch.allclose(batched.tokens[i], alone.tokens[0], atol=1e-6)
            assert torch.allclose(batched.focus[i, :, : frames[i]], alone.focus[0], atol=1e-6)
            assert float(batched.focus[i, :, frames[i]:].abs().sum()) == 0.0  # padded frames get no attention


@pytest.mark.parametrize("scope", ["clip", "frame"])
def test_focus_maps_are_distributions_per_layer(scope):
    torch.manual_seed(2)
    model = DiscoResampler(TINY.replace(attention_scope=scope), vision_dim=24, llm_dim=40).eval()
    with torch.no_grad():
        out = model(torch.randn(6, 2, 2, 24), [4, 2])
    # heads averaged, layers summed: each token's map sums to the depth over an item's patches
    assert torch.allclose(out.focus.sum((2, 3)), torch.full((2, TINY.num_queries), float(TINY.depth)), atol=1e-5)
    if scope == "frame":  # every real frame holds 1/T of each layer's attention
        per_frame = out.focus[0].sum(-1)
        assert torch.allclose(per_frame, torch.full_like(per_frame, TINY.depth / 4), atol=1e-5)


@pytest.mark.parametrize("frames", [32, 64, 128])
def test_token_count_is_k_for_any_length(resampler, frames):
    with torch.no_grad():
        out = resampler(torch.randn(frames, 2, 2, 24), [frames])
    assert out.tokens.shape == (1, TINY.num_queries, 40)
    assert out.focus.shape == (1, TINY.num_queries, frames, 4)


def test_focus_features_equal_the_prototype_einsum(resampler):
    torch.manual_seed(3)
    with torch.no_grad():
        out = resampler(torch.randn(4, 3, 3, 24), [4])
    feats = out.patches.permute(0, 3, 1, 2)  # (B, C, T, HW), the prototype's layout
    ref = torch.einsum("bctn,bqtn->bqctn", feats, out.focus).mean(-1).permute(0, 1, 3, 2)
    assert torch.allclose(out.focus_features(), ref, atol=1e-6)


def test_config_refuses_what_would_silently_break():
    with pytest.raises(ValueError, match="local queries exceed"):
        DiscoConfig(num_queries=8, num_groups=4, group_size=4)
    with pytest.raises(ValueError, match="attention_scope"):
        DiscoConfig(attention_scope="frames")
    with pytest.raises(ValueError, match="tfc_tokens='matched' needs vcd=True"):
        DiscoConfig(vcd=False, tfc_tokens="matched")
    with pytest.raises(ValueError, match="unknown keys"):
        DiscoConfig.from_dict({"num_querys": 3})
    assert DiscoConfig.from_dict(PRESETS["prototype"].to_dict()) == PRESETS["prototype"]
    assert (PRESETS["prototype"].num_queries, PRESETS["prototype"].num_local) == (96, 64)
