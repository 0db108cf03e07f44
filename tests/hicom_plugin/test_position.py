"""3-D sin/cos position embeddings: the paper's channel split and the release's axis sum."""

from __future__ import annotations

import math

import pytest
import torch

from hicom_plugin.position import PositionEmbedding3D, position_embedding_3d, sincos_table, split_channels


def test_sincos_table_values():
    table = sincos_table(5, 6)
    assert table.shape == (5, 6) and table.dtype == torch.float32
    assert torch.equal(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    pos, dim = 3, 6
    for i in range(dim):
        angle = pos / 10000 ** (2 * (i // 2) / dim)
        expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
        assert table[pos, i].item() == pytest.approx(expected, abs=1e-6)


def test_split_channels():
    assert split_channels(1152) == (432, 432, 288)  # exactly 3/8, 3/8, 2/8
    assert split_channels(32) == (12, 12, 8)
    assert sum(split_channels(50)) == 50
    with pytest.raises(ValueError, match="dim >= 8"):
        split_channels(6)


def test_sum_form_is_the_axis_symmetric_release_embedding():
    pe = position_embedding_3d(4, 4, 4, 32, "sum")
    table = sincos_table(4, 32)
    assert pe.shape == (4, 4, 4, 32)
    torch.testing.assert_close(pe[1, 2, 3], table[1] + table[2] + table[3])
    torch.testing.assert_close(pe[1, 2, 3], pe[3, 2, 1])  # the release cannot tell the axes apart


def test_split_form_concatenates_per_axis_tables():
    pe = position_embedding_3d(4, 4, 4, 32, "split")
    d_t, d_h, d_w = split_channels(32)
    expected = torch.cat([sincos_table(4, d_t)[1], sincos_table(4, d_h)[2], sincos_table(4, d_w)[3]])
    torch.testing.assert_close(pe[1, 2, 3], expected)
    assert (pe[1, 2, 3] - pe[3, 2, 1]).abs().max() > 0.1  # (1,2,3) and (3,2,1) differ


def test_forms_differ():
    assert not torch.allclose(position_embedding_3d(3, 4, 5, 32, "sum"), position_embedding_3d(3, 4, 5, 32, "split"))


@pytest.mark.parametrize("form", ["sum", "split"])
def test_cache_grows_and_is_not_saved(form):
    module = PositionEmbedding3D(32, form, max_positions=4)
    assert module.state_dict() == {}
    out = module(10, 3, 5)
    assert module.num_positions >= 10
    torch.testing.assert_close(out, position_embedding_3d(10, 3, 5, 32, form))
    torch.testing.assert_close(module(2, 6, 2), position_embedding_3d(2, 6, 2, 32, form))
    assert module(2, 2, 2, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_bad_form_raises():
    with pytest.raises(ValueError, match="form='concat'"):
        PositionEmbedding3D(32, "concat")


def test_tables_stay_float32_under_module_casts():
    module = PositionEmbedding3D(32, "sum", max_positions=8).to(torch.bfloat16)
    torch.testing.assert_close(module(3, 4, 5), position_embedding_3d(3, 4, 5, 32, "sum"))
    assert module(3, 4, 5, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("form", ["sum", "split"])
def test_factored_grid_equals_the_dense_embedding(form):
    """``PositionGrid.dot`` / ``pool`` are ``x . Pos`` and ``sum_p w_p Pos_p`` without building ``Pos``."""
    module = PositionEmbedding3D(32, form, max_positions=4)
    grid = module.grid(3, 4, 5)
    dense = module(3, 4, 5)
    torch.testing.assert_close(grid.dense(), dense)
    flat = dense.reshape(60, 32)
    g = torch.Generator().manual_seed(0)
    x, weights = torch.randn(2, 7, 32, generator=g), torch.rand(2, 7, 60, generator=g)
    torch.testing.assert_close(grid.dot(x), x @ flat.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(grid.pool(weights), weights @ flat, atol=1e-5, rtol=1e-6)
    half = module.grid(3, 4, 5, dtype=torch.bfloat16)
    assert half.dot(x.bfloat16()).dtype == torch.bfloat16 and half.pool(weights.bfloat16()).dtype == torch.bfloat16
