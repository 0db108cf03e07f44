"""GuideInjector formulas (paper and release), masks, adapters; MultiHeadAttention's two forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hicom_plugin.injection import GatedAdapter, GuideInjector, MultiHeadAttention, init_weights, two_layer_mlp

B, NQ, D, L = 3, 5, 16, 7


def make(kind, text_dim=D, **kwargs) -> GuideInjector:
    torch.manual_seed(0)
    module = GuideInjector(kind, text_dim, D, num_heads=kwargs.pop("num_heads", 2), **kwargs)
    module.apply(init_weights)
    with torch.no_grad():  # non-trivial LayerNorm affine and biases, so the formulas are really checked
        for name, param in module.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
    return module


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, NQ, D, generator=g), torch.randn(B, D, generator=g),
            torch.randn(B, L, D, generator=g))


def reference_mha(attn: MultiHeadAttention, q, k, v, key_valid=None):
    """Textbook multi-head attention with the module's weights."""
    b, nq, d = q.shape
    h, hd = attn.num_heads, attn.head_dim
    qh = attn.q_proj(q).view(b, nq, h, hd).transpose(1, 2)
    kh = attn.k_proj(k).view(b, -1, h, hd).transpose(1, 2)
    vh = attn.v_proj(v).view(b, -1, h, hd).transpose(1, 2)
    logits = qh @ kh.transpose(-1, -2) / hd ** 0.5
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    out = torch.softmax(logits, -1) @ vh
    return attn.out_proj(out.transpose(1, 2).reshape(b, nq, d))


def test_none_is_identity_without_parameters():
    module = GuideInjector("none", D, D)
    a, c, _ = inputs()
    assert module(a, c) is a
    assert list(module.parameters()) == []


def test_direct_without_mlp_is_the_text_embedding():
    module = make("direct")
    a, c, _ = inputs()
    out = module(a, c)
    assert out.shape == a.shape
    assert torch.equal(out, c[:, None, :].expand_as(a))
    assert list(module.parameters()) == []  # release: nothing to train


def test_direct_mlp_and_width_change():
    a, c, _ = inputs()
    module = make("direct", direct_mlp=True)
    torch.testing.assert_close(module(a, c), module.text_proj(c)[:, None].expand_as(a))
    assert len(list(module.parameters())) == 4
    narrow = make("direct", text_dim=6)  # widths differ: an MLP even without direct_mlp
    out = narrow(a, torch.randn(B, 6))
    assert out.shape == a.shape and len(list(narrow.parameters())) == 4


def test_coarse_formulas():
    a, c, _ = inputs()
    paper = make("coarse", coarse_formula="paper")
    scale, shift = paper.coarse_proj(c).chunk(2, -1)
    expected = F.layer_norm(a, (D,), paper.coarse_norm.weight, paper.coarse_norm.bias, 1e-6) \
        * scale[:, None] + shift[:, None]
    torch.testing.assert_close(paper(a, c), expected)

    release = make("coarse", coarse_formula="release")
    scale, shift = release.coarse_proj(c).chunk(2, -1)
    modulated = a * (1 + scale[:, None]) + shift[:, None]
    expected = F.layer_norm(modulated, (D,), release.coarse_norm.weight, release.coarse_norm.bias, 1e-6)
    torch.testing.assert_close(release(a, c), expected)
    assert not torch.allclose(paper(a, c), release(a, c))


def test_fine_formulas():
    a, _, tokens = inputs()
    paper = make("fine", fine_formula="paper")
    expected = reference_mha(paper.fine_attn, paper.fine_norm(a), tokens, tokens)
    torch.testing.assert_close(paper(a, text_tokens=tokens), expected)

    release = make("fine", fine_formula="release")
    expected = release.fine_norm(a + reference_mha(release.fine_attn, a, tokens, tokens))
    torch.testing.assert_close(release(a, text_tokens=tokens), expected)


@pytest.mark.parametrize("formula", ["paper", "release"])
def test_fine_pad_mask(formula):
    a, _, tokens = inputs()
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 1:] = False
    changed = tokens.clone()
    changed[~mask] = 100.0
    masked = make("fine", fine_formula=formula, fine_pad_mask=True)
    torch.testing.assert_close(masked(a, text_tokens=tokens, text_mask=mask),
                               masked(a, text_tokens=changed, text_mask=mask))
    # Each item equals attending to its real tokens only.
    for i in range(B):
        real = tokens[i:i + 1, mask[i]]
        torch.testing.assert_close(masked(a, text_tokens=tokens, text_mask=mask)[i:i + 1],
                                   masked(a[i:i + 1], text_tokens=real))
    unmasked = make("fine", fine_formula=formula, fine_pad_mask=False)  # release: padding is attended
    assert not torch.allclose(unmasked(a, text_tokens=tokens, text_mask=mask),
                              unmasked(a, text_tokens=changed, text_mask=mask))


def test_fine_with_no_real_token_gives_zero_attention():
    a, _, tokens = inputs()
    module = make("fine", fine_formula="paper")
    mask = torch.zeros(B, L, dtype=torch.bool)
    out = module(a, text_tokens=tokens, text_mask=mask)
    torch.testing.assert_close(out, module.fine_attn.out_proj.bias.expand_as(out))


def test_guide_adapter_is_identity_at_init_and_trains_its_gate():
    a, c, _ = inputs()
    plain = make("coarse")
    adapted = make("coarse", adapt_guide=True)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    torch.testing.assert_close(adapted(a, c), plain(a, c))
    adapted(a, c).square().sum().backward()
    assert adapted.guide_adapter.alpha.grad.abs().item() > 0
    for param in adapted.guide_adapter.proj.parameters():
        assert torch.count_nonzero(param.grad) == 0  # gated off at init
    with torch.no_grad():
        adapted.guide_adapter.alpha.fill_(0.5)
    assert not torch.allclose(adapted(a, c), plain(a, c))


def test_gated_adapter_formula():
    adapter = GatedAdapter(two_layer_mlp(D, D), D)
    with torch.no_grad():
        adapter.alpha.fill_(0.25)
    x = torch.randn(4, D)
    torch.testing.assert_close(adapter(x), 0.75 * x + 0.25 * adapter.norm(adapter.proj(x)))


def test_multihead_attention_forms_agree_with_reference():
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, 4)
    q, k, v = torch.randn(B, NQ, D), torch.randn(B, L, D), torch.randn(B, L, D)
    valid = torch.rand(B, L) > 0.3
    valid[:, 0] = True
    expected = reference_mha(attn, q, k, v, valid)
    out, weights = attn(q, k, v, valid)
    folded, folded_weights = attn.forward_folded(q, k, v, valid)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights, folded_weights, atol=1e-6, rtol=0)
    assert weights.shape == (B, 4, NQ, L) and torch.all(weights[~valid[:, None, None, :].expand_as(weights)] == 0)


def test_errors():
    a, c, tokens = inputs()
    with pytest.raises(ValueError, match="kind='adaln'"):
        GuideInjector("adaln", D, D)
    with pytest.raises(ValueError, match="adapt_guide"):
        GuideInjector("none", D, D, adapt_guide=True)
    with pytest.raises(ValueError, match="text_pooled must be"):
        make("coarse")(a)
    with pytest.raises(ValueError, match="text_pooled must be"):
        make("direct")(a, c[:2])
    with pytest.raises(ValueError, match="text_tokens must be"):
        make("fine")(a, c)
    with pytest.raises(ValueError, match="text_mask"):
        make("fine")(a, text_tokens=tokens, text_mask=torch.ones(B, L + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 4)
