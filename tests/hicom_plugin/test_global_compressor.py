"""Global branch: the folded attention against a straightforward one, padding, direct-injection quirks."""

from __future__ import annotations

import pytest
import torch

from hicom_plugin import PRESETS
from hicom_plugin.global_compressor import GlobalCompressor, pad_items
from hicom_plugin.injection import MultiHeadAttention
from hicom_plugin.position import position_embedding_3d

D, DT, DOUT, N = 32, 24, 20, 6


def straightforward_attention(attn: MultiHeadAttention, query, keys, values, key_valid=None):
    """Projects every key and value, then textbook multi-head attention."""
    b, nq, d = query.shape
    h, hd = attn.num_heads, attn.head_dim
    q = (query @ attn.q_proj.weight.T + attn.q_proj.bias).view(b, nq, h, hd).transpose(1, 2)
    k = (keys @ attn.k_proj.weight.T + attn.k_proj.bias).view(b, -1, h, hd).transpose(1, 2)
    v = (values @ attn.v_proj.weight.T + attn.v_proj.bias).view(b, -1, h, hd).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / hd ** 0.5
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    mixed = (torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(b, nq, d)
    return mixed @ attn.out_proj.weight.T + attn.out_proj.bias


def make_module(**changes) -> GlobalCompressor:
    torch.manual_seed(0)
    base = changes.pop("preset", "paper")
    cfg = PRESETS[base].replace(local_kernel=None, local_injection="none", num_global_queries=N,
                                attn_head_dim=8, **changes)
    module = GlobalCompressor(cfg, D, DT, DOUT)
    with torch.no_grad():  # init leaves biases and queries at zero; randomise them so the fold is tested
        for name, param in module.named_parameters():
            if name.endswith("bias") or name == "query":
                param.normal_(0, 0.5)
    return module


def reference_item(module: GlobalCompressor, feats, text_pooled=None, text_tokens=None, text_mask=None):
    """One item: keys V + Pos, values V (+ Pos), straightforward attention, readout(Q + X)."""
    t, h, w, d = feats.shape
    pos = position_embedding_3d(t, h, w, d, module.cfg.pos_emb)
    keys = (feats + pos).reshape(1, -1, d)
    values = keys if module.cfg.pos_emb_on_values else feats.reshape(1, -1, d)
    query = module.injector(module.query[None], text_pooled, text_tokens, text_mask)
    return module.readout(query + straightforward_attention(module.attn, query, keys, values))[0]


def test_heads_follow_the_head_width():
    assert make_module().attn.num_heads == 4
    cfg = PRESETS["release"].replace(num_global_queries=2)
    assert GlobalCompressor(cfg, 1152, 1152, 8).attn.num_heads == 9


def test_query_is_zero_at_init():
    cfg = PRESETS["release"].replace(num_global_queries=N)
    module = GlobalCompressor(cfg, D, D, DOUT)
    assert torch.count_nonzero(module.query) == 0
    assert module.query.shape == (N, D)


@pytest.mark.parametrize("heads_dim", [8, 32])
def test_folded_attention_equals_straightforward(heads_dim):
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, D // heads_dim)
    for param in attn.parameters():
        torch.nn.init.normal_(param, std=0.3)
    query, keys, values = torch.randn(3, N, D), torch.randn(3, 500, D), torch.randn(3, 500, D)
    key_valid = torch.arange(500)[None, :] < torch.tensor([[500], [123], [1]])
    for mask in (None, key_valid):
        folded, _ = attn.forward_folded(query, keys, values, mask)
        torch.testing.assert_close(folded, straightforward_attention(attn, query, keys, values, mask),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("changes", [
    dict(),  # paper: split pos-emb on keys only, coarse
    dict(preset="release"),  # sum pos-emb on keys and values, direct
    dict(preset="release", global_injection="fine", fine_pad_mask=True),
    dict(global_injection="none", pos_emb="sum"),
])
def test_module_equals_per_item_straightforward(changes):
    module = make_module(**changes)
    g = torch.Generator().manual_seed(1)
    frames = [3, 1, 5]
    feats = torch.randn(sum(frames), 4, 5, D, generator=g)
    pooled, tokens = torch.randn(3, DT, generator=g), torch.randn(3, 6, DT, generator=g)
    mask = torch.arange(6)[None, :] < torch.tensor([[6], [2], [4]])
    out = module(feats, frames, pooled, tokens, mask)
    assert out.shape == (3, N, DOUT)
    start = 0
    for i, t in enumerate(frames):
        expected = reference_item(module, feats[start:start + t], pooled[i:i + 1], tokens[i:i + 1], mask[i:i + 1])
        start += t
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)
        # and the batched call equals a call with this item alone
        alone = module(feats[start - t:start], [t], pooled[i:i + 1], tokens[i:i + 1], mask[i:i + 1])
        torch.testing.assert_close(out[i], alone[0], atol=1e-6, rtol=0)


def test_pos_emb_on_values_matters():
    feats = torch.randn(2, 4, 4, D)
    keys_only = make_module(global_injection="none")
    both = make_module(global_injection="none", pos_emb_on_values=True)
    assert not torch.allclose(keys_only(feats, [2]), both(feats, [2]))


def test_direct_global_injection_gives_identical_tokens_and_no_query_gradient():
    """The release (direct on the global branch): every query is the instruction embedding."""
    module = make_module(preset="release")
    feats, pooled = torch.randn(4, 3, 3, D), torch.randn(1, DT)
    out = module(feats, [4], pooled)
    assert torch.allclose(out[0], out[0, :1].expand(N, -1))
    out.sum().backward()
    assert module.query.grad is None  # the learnable queries are unused after stage 1
    coarse = make_module(global_injection="coarse")
    coarse(feats, [4], pooled).sum().backward()
    assert coarse.query.grad is not None and coarse.query.grad.abs().sum() > 0


def test_pos_cache_grows_past_max_num_frames():
    module = make_module(max_num_frames=2, global_injection="none")
    feats = torch.randn(9, 3, 3, D)
    out = module(feats, [9])
    torch.testing.assert_close(out[0], reference_item(module, feats), atol=1e-5, rtol=0)
    assert module.pos_emb.num_positions >= 9
    assert not any("table" in key for key in module.state_dict())


def test_pad_items():
    feats = torch.randn(6, 2, 2, 3)
    same, valid = pad_items(feats, [3, 3])
    assert valid is None and same.data_ptr() == feats.data_ptr() and same.shape == (2, 3, 2, 2, 3)
    padded, valid = pad_items(feats, [1, 4, 1])
    assert padded.shape == (3, 4, 2, 2, 3)
    assert valid.tolist() == [[True, False, False, False], [True] * 4, [True, False, False, False]]
    torch.testing.assert_close(padded[1], feats[1:5])
    torch.testing.assert_close(padded[2, 0], feats[5])


def test_attention_maps_zero_on_padding():
    module = make_module(return_attention=True, global_injection="none")
    module(torch.randn(5, 2, 3, D), [1, 4])
    att = module.last_attention
    assert att["weights"].shape == (2, 4, N, 4 * 6) and att["valid"].shape == (2, 24)
    assert torch.all(att["weights"][0, :, :, 6:] == 0)
    torch.testing.assert_close(att["weights"].sum(-1), torch.ones(2, 4, N))


def test_built_on_the_meta_device_then_materialised():
    """HF ``from_pretrained`` builds modules on the meta device; the position tables must stay real."""
    cfg = PRESETS["release"].replace(num_global_queries=N, local_kernel=None, local_injection="none",
                                     global_injection="none")
    with torch.device("meta"):
        module = GlobalCompressor(cfg, D, DT, DOUT)
    module.to_empty(device="cpu")
    reference = GlobalCompressor(cfg, D, DT, DOUT)
    module.load_state_dict(reference.state_dict())
    feats = torch.randn(3, 4, 4, D)
    torch.testing.assert_close(module(feats, [3]), reference(feats, [3]))
