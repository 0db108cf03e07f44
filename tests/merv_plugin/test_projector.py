"""The MERV projector: per-encoder 3D pooling + Linear, the mixer, token counts, fusion options.

The reference below re-states, per sample, the forward of MERV's public ``AveragePooling3DProjector``
(``linear`` head) and ``CrossAttentionAdapterLearnableQuery(averagetoken=True)`` from
``merv/util/nn_utils.py``, using ``nn.AdaptiveAvgPool3d`` and ``nn.MultiheadAttention`` as that code does;
our modules get the same weights.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from llava.model.visual import EncoderFeatures, VisualBatch
from merv_plugin.config import MERVConfig, parse_grid
from merv_plugin.mixer import LearnableQueryMixer
from merv_plugin.projector import MERVProjector, temporal_pool_matrix

D = 20  # LLM width
QUERY_DIM = 12
#: name -> (width, grid side); widths and grids differ per encoder as in MERV (1024/768, 16/14)
ENCODERS = {"languagebind": (10, 4), "dinov2": (8, 4), "vivit": (6, 5), "siglip": (10, 3)}


def make_projector(names=tuple(ENCODERS), grid=(3, 2, 2), fusion="cross_attention_avg_lq", seed=0) -> MERVProjector:
    torch.manual_seed(seed)
    tower = {"model_type": "merv_tower",
             "encoders": [{"name": n, "config": {"hidden_size": ENCODERS[n][0]}} for n in names]}
    config = SimpleNamespace(hidden_size=D, mm_hidden_size=ENCODERS[names[0]][0], mm_vision_tower_config=tower,
                             merv_config={"grid": list(grid), "fusion": fusion, "query_dim": QUERY_DIM})
    projector = MERVProjector(config)
    if fusion == "cross_attention_avg_lq":  # non-zero biases, so the test sees them
        with torch.no_grad():
            projector.mixer.q_proj.bias.normal_()
            projector.mixer.k_proj.bias.normal_()
    return projector.double()


def make_batch(frames, modalities, names=tuple(ENCODERS), seed=1, vivit_slots=None) -> VisualBatch:
    """Random features; ``vivit`` may have other slot counts per item (an image's window)."""
    g = torch.Generator().manual_seed(seed)
    encoders = {}
    for name in names:
        width, side = ENCODERS[name]
        per_item = list(vivit_slots) if name == "vivit" and vivit_slots else list(frames)
        feats = torch.randn(sum(per_item), side, side, width, generator=g, dtype=torch.float64)
        encoders[name] = EncoderFeatures(feats, per_item)
    first = encoders[names[0]]
    return VisualBatch(first.features, list(frames), list(modalities), encoders=encoders)


def reference_item(projector: MERVProjector, batch: VisualBatch, item: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MERV's forward for one sample (batch size 1), with the projector's weights."""
    t, h, w = projector.merv.grid
    t = t if t is not None else (batch.frames_per_item[item] if batch.modalities[item] == "video" else 1)
    pooled = []
    for (name, enc), linear in zip(batch.encoders.items(), projector.projectors):
        feats = enc.per_item()[item]  # (T, H, W, C)
        x = feats.permute(3, 0, 1, 2).unsqueeze(0)  # "B F (H W) C -> B C F H W"
        x = nn.AdaptiveAvgPool3d((t, h, w))(x)
        x = x.flatten(2).transpose(1, 2)  # "B C F H W -> B (F H W) C"
        pooled.append(x @ linear.weight.T + linear.bias)  # LinearProjector
    mixer = projector.mixer
    query_dim = mixer.query.shape[1]
    attention = nn.MultiheadAttention(embed_dim=query_dim, num_heads=1, dropout=0.0, batch_first=True,
                                      kdim=D, vdim=D).double()
    with torch.no_grad():
        attention.q_proj_weight.copy_(mixer.q_proj.weight)
        attention.k_proj_weight.copy_(mixer.k_proj.weight)
        attention.in_proj_bias[:query_dim].copy_(mixer.q_proj.bias)
        attention.in_proj_bias[query_dim:2 * query_dim].copy_(mixer.k_proj.bias)
    num_encoders = len(pooled)
    query = mixer.query.repeat(1, 1).unsqueeze(1)  # (B, 1, 3072)
    values = torch.stack(pooled, 1)  # (B, encoders, T, C)
    keys = values.mean(2)
    _, weights = attention(query=query, key=keys, value=keys)
    tokens = values.shape[2]
    out = torch.bmm(weights, values.reshape(1, num_encoders, D * tokens)).reshape(1, tokens, D)
    return out[0], weights[:, 0][0]


@pytest.mark.parametrize("grid", [(3, 2, 2), (None, 3, 2)], ids=["fixed-t", "per-frame"])
def test_matches_a_per_sample_restatement_of_the_public_forward(grid):
    projector = make_projector(grid=grid)
    batch = make_batch([5, 3, 1, 1], ["video", "video", "image", "text"], vivit_slots=[5, 3, 2, 2])
    with torch.no_grad():
        tokens = projector(batch)
        weights = projector.mixer_weights(batch)
        for item in range(batch.num_items):
            expected, expected_weights = reference_item(projector, batch, item)
            assert tokens[item].shape == expected.shape
            torch.testing.assert_close(tokens[item], expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(weights[item].double(), expected_weights, atol=1e-5, rtol=0)
    assert torch.allclose(weights.sum(-1), torch.ones(batch.num_items, dtype=weights.dtype))


def test_temporal_pool_matrix_has_adaptive_pooling_windows():
    matrix = temporal_pool_matrix([14, 1], [8, 2])
    assert matrix.shape == (10, 15)
    # 14 -> 8: window i spans floor(14 i / 8) .. ceil(14 (i + 1) / 8) - 1, i.e. 2 or 3 frames, overlapping
    assert matrix[1, :14].nonzero().flatten().tolist() == [1, 2, 3]
    assert matrix[2, :14].nonzero().flatten().tolist() == [3, 4, 5]
    assert torch.allclose(matrix.sum(1), torch.ones(10))
    assert matrix[8:, 14].tolist() == [1.0, 1.0]  # one frame repeated to two slots


def test_batched_equals_per_item_for_items_of_different_lengths():
    projector = make_projector(grid=(None, 2, 2))
    frames, modalities = [6, 2, 1, 4], ["video", "video", "image", "video"]
    batch = make_batch(frames, modalities, vivit_slots=[6, 2, 2, 4])
    with torch.no_grad():
        together = projector(batch)
        for item in range(len(frames)):
            alone = VisualBatch(batch.encoders["languagebind"].per_item()[item], [frames[item]], [modalities[item]],
                                encoders={n: EncoderFeatures(e.per_item()[item], [e.frames_per_item[item]])
                                          for n, e in batch.encoders.items()})
            single = projector(alone)[0]
            count = projector.num_output_tokens(frames[item], 0, 0, modalities[item])
            assert single.shape == together[item].shape == (count, D)
            torch.testing.assert_close(single, together[item], atol=1e-6, rtol=0)


def test_token_counts_at_32_64_128_frames_do_not_depend_on_the_number_of_encoders():
    counts = {}
    for names in (("languagebind",), ("languagebind", "vivit"), tuple(ENCODERS)):
        for grid in ((16, 8, 8), (None, 8, 8)):
            projector = make_projector(names, grid=grid)
            counts[len(names), grid[0]] = [projector.num_output_tokens(t, 27, 27) for t in (32, 64, 128)]
    assert counts[1, 16] == counts[2, 16] == counts[4, 16] == [1024, 1024, 1024]  # MERV: t = 16 whatever T
    assert counts[1, None] == counts[2, None] == counts[4, None] == [2048, 4096, 8192]  # one slot per frame
    # and what the forward really returns, at a small grid
    for names in (("siglip",), ("siglip", "dinov2"), tuple(ENCODERS)):
        projector = make_projector(names, grid=(4, 2, 2))
        with torch.no_grad():
            out = projector(make_batch([8, 1], ["video", "image"], names))
        counts = [projector.num_output_tokens(8, 0, 0), projector.num_output_tokens(1, 0, 0, "image")]
        assert [o.shape[0] for o in out] == [16, 16] == counts


@pytest.mark.parametrize("fusion, factor", [("cross_attention_avg_lq", 1), ("scalar", 1), ("concat_channel", 1),
                                            ("concat", 4)])
def test_each_fusion_gives_its_exact_token_count(fusion, factor):
    projector = make_projector(grid=(3, 2, 2), fusion=fusion)
    batch = make_batch([5, 1], ["video", "image"], vivit_slots=[5, 2])
    with torch.no_grad():
        out = projector(batch)
    assert [o.shape for o in out] == [(12 * factor, D)] * 2
    assert projector.num_output_tokens(5, 0, 0) == 12 * factor
    if fusion == "concat":  # encoder-major: the first 12 tokens are the first encoder's
        x, index = projector.encoder_tokens(batch)
        torch.testing.assert_close(out[1][:12], x[0][index == 1])
        torch.testing.assert_close(out[1][36:], x[3][index == 1])


def test_forced_one_hot_weights_return_that_encoders_projected_tokens():
    projector = make_projector(fusion="scalar")
    batch = make_batch([3, 1], ["video", "image"], vivit_slots=[3, 2])
    with torch.no_grad():
        projector.mixer.scalar.copy_(torch.tensor([-1e4, -1e4, 1e4, -1e4]))
        out = projector(batch)
        x, index = projector.encoder_tokens(batch)
    torch.testing.assert_close(out[0], x[2][index == 0])


def test_mixer_weights_do_not_depend_on_the_instruction():
    projector = make_projector()
    batch = make_batch([3], ["video"])
    with torch.no_grad():
        a = projector(VisualBatch(batch.features, [3], ["video"], instructions=["what moves?"], encoders=batch.encoders))
        b = projector(VisualBatch(batch.features, [3], ["video"], instructions=["read the sign"], encoders=batch.encoders))
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)


def test_bad_configurations_and_batches_are_named():
    with pytest.raises(ValueError, match="fusion='mean'"):
        MERVConfig(fusion="mean")
    with pytest.raises(ValueError, match="grid"):
        MERVConfig(grid=(16, None, 8))
    with pytest.raises(ValueError, match="--merv_grid '8,8'"):
        parse_grid("8,8")
    assert parse_grid("frame,8,8") == [None, 8, 8]
    projector = make_projector(("siglip", "dinov2"))
    with pytest.raises(ValueError, match=r"built for encoders \['siglip', 'dinov2'\].*gave \['siglip'\]"):
        projector(make_batch([2], ["video"], ("siglip",)))
    with pytest.raises(ValueError, match="one feature map"):
        projector(VisualBatch(torch.zeros(2, 3, 3, 10), [2], ["video"]))


def test_mixer_has_only_the_parameters_that_act():
    mixer = LearnableQueryMixer(4, D, QUERY_DIM)
    names = {n: tuple(p.shape) for n, p in mixer.named_parameters()}
    assert names == {"query": (1, QUERY_DIM), "q_proj.weight": (QUERY_DIM, QUERY_DIM), "q_proj.bias": (QUERY_DIM,),
                     "k_proj.weight": (QUERY_DIM, D), "k_proj.bias": (QUERY_DIM,)}
