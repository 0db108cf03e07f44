"""HIComCompressor end to end: token layout, gradients per injection type, batching, conditioning."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from hicom_plugin import PRESETS, HIComCompressor

D, DOUT, L = 32, 48, 5
INJECTIONS = ("none", "direct", "coarse", "fine")
FRAMES = [1, 2, 3, 5, 6, 9, 16, 32]


def make(preset="paper", text_dim=D, **changes) -> HIComCompressor:
    torch.manual_seed(0)
    cfg = PRESETS[preset].replace(attn_head_dim=8, **changes)
    return HIComCompressor(cfg, D, text_dim, DOUT)


def batch(frames, text_dim=D, grid=(6, 6), seed=1):
    g = torch.Generator().manual_seed(seed)
    n = len(frames)
    mask = torch.ones(n, L, dtype=torch.bool)
    mask[::2, 3:] = False
    return dict(
        features=torch.randn(sum(frames), *grid, D, generator=g),
        dense_embeds=torch.randn(sum(frames), *grid, D, generator=g),
        text_pooled=torch.randn(n, text_dim, generator=g),
        text_tokens=torch.randn(n, L, text_dim, generator=g),
        text_mask=mask,
    )


def item(inputs, frames, i):
    """The inputs of item ``i`` alone."""
    start = sum(frames[:i])
    rows = slice(start, start + frames[i])
    return dict(features=inputs["features"][rows], dense_embeds=inputs["dense_embeds"][rows],
                text_pooled=inputs["text_pooled"][i:i + 1], text_tokens=inputs["text_tokens"][i:i + 1],
                text_mask=inputs["text_mask"][i:i + 1])


@pytest.mark.parametrize("scheme", ["pad", "overlap"])
@pytest.mark.parametrize("preset", ["paper", "release"])
def test_siglip_grid_token_layout(preset, scheme):
    module = HIComCompressor(PRESETS[preset].replace(group_scheme=scheme), 16, 16, 8)
    assert module.num_output_tokens(32, 27, 27) == 680
    assert module.num_output_tokens(64, 27, 27) == 1328
    assert module.num_output_tokens(128, 27, 27) == 2624
    assert module.num_output_tokens(1, 27, 27, "image") == 113
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(33, 27, 27, 16, generator=g)
    with torch.no_grad():
        out = module(feats, [32, 1], ["video", "image"], dense_embeds=feats,
                     text_pooled=torch.randn(2, 16, generator=g))
    assert [tuple(o.shape) for o in out] == [(680, 8), (113, 8)]


def expected_injector_params(cfg) -> bool:
    """Whether any injector has parameters (text and vision widths equal here)."""
    return any(kind in ("coarse", "fine") or (kind == "direct" and cfg.direct_mlp) for kind in cfg.injections)


@pytest.mark.parametrize("local_inj, global_inj", list(itertools.product(INJECTIONS, INJECTIONS)))
@pytest.mark.parametrize("preset, scheme", [("paper", "pad"), ("paper", "overlap"),
                                            ("release", "overlap"), ("release", "pad")])
def test_forward_backward_every_injection(preset, scheme, local_inj, global_inj):
    module = make(preset, group_scheme=scheme, local_injection=local_inj, global_injection=global_inj)
    frames = FRAMES + [1]
    modalities = ["video"] * len(FRAMES) + ["image"]
    inputs = batch(frames)
    inputs["features"].requires_grad_(True)
    out = module(inputs["features"], frames, modalities, **{k: v for k, v in inputs.items() if k != "features"})
    assert [o.shape[0] for o in out] == [module.num_output_tokens(t, 6, 6, m) for t, m in zip(frames, modalities)]
    # 6x6 grid -> 2x2 groups per temporal group; ceil(T/4) temporal groups (1 for T=1 and images)
    assert [o.shape[0] - 32 for o in out] == [4, 4, 4, 8, 8, 12, 16, 32, 4]
    torch.stack([o.square().mean() for o in out]).sum().backward()
    assert torch.isfinite(inputs["features"].grad).all()

    no_grad = {name for name, p in module.named_parameters() if p.grad is None}
    # The only parameter left out: the global queries under direct injection (Q is the instruction).
    assert no_grad == ({"global_compressor.query"} if global_inj == "direct" else set())
    for name, param in module.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), name
    injector = dict(module.named_injector_parameters())
    assert bool(injector) == expected_injector_params(module.config)
    assert all(".injector." in name for name in injector)
    if preset == "release" and {local_inj, global_inj} <= {"none", "direct"}:
        assert injector == {}  # release direct injection: nothing for guide_injector_lr to train


def test_injector_parameters_of_the_presets():
    paper = make("paper")
    names = {name.split(".injector.")[0] + "." + name.split(".injector.")[1].split(".")[0]
             for name, _ in paper.named_injector_parameters()}
    assert names == {"local_compressor.text_proj", "global_compressor.coarse_proj", "global_compressor.coarse_norm"}
    assert make("release").injector_parameters() == []
    narrow = make("release", text_dim=24)  # text width differs: the injectors own a projection MLP
    assert len(narrow.injector_parameters()) == 8


@pytest.mark.parametrize("changes", [
    dict(preset="paper"),
    dict(preset="release"),
    dict(preset="paper", local_injection="fine", global_injection="fine", group_scheme="overlap"),
    dict(preset="release", local_injection="coarse", global_injection="coarse", group_scheme="pad",
         adapt_k=True, adapt_v=True, adapt_q=True),
])
def test_batched_equals_per_item(changes):
    module = make(**changes)
    for name, param in module.named_parameters():  # open the adapter gates, move the zero queries
        if name.endswith(("alpha", "query")):
            with torch.no_grad():
                param.normal_(0, 0.5)
    frames = [7, 1, 32, 5, 1]
    modalities = ["video", "image", "video", "video", "text"]
    inputs = batch(frames)
    with torch.no_grad():
        batched = module(inputs["features"], frames, modalities,
                         **{k: v for k, v in inputs.items() if k != "features"})
        for i, (t, m) in enumerate(zip(frames, modalities)):
            alone = item(inputs, frames, i)
            single = module(alone.pop("features"), [t], [m], **alone)[0]
            torch.testing.assert_close(batched[i], single, atol=1e-6, rtol=0)


@pytest.mark.parametrize("branch", ["local", "global"])
@pytest.mark.parametrize("kind", INJECTIONS)
def test_conditioning_matters(branch, kind):
    other = "global" if branch == "local" else "local"
    module = make("paper", **{f"{branch}_injection": kind, f"{other}_injection": "none"})
    with torch.no_grad():  # weights larger than the 0.02 init, so the effect is far above rounding
        for param in module.parameters():
            param.normal_(0, 0.3)
    frames = [8, 1]
    a, b = batch(frames, seed=1), batch(frames, seed=2)
    b["features"], b["dense_embeds"] = a["features"], a["dense_embeds"]  # same video, other text
    with torch.no_grad():
        out_a = module(a.pop("features"), frames, ["video", "image"], **a)
        out_b = module(b.pop("features"), frames, ["video", "image"], **b)
    for x, y in zip(out_a, out_b):
        rows = slice(0, -32) if branch == "local" else slice(-32, None)
        if kind == "none":
            assert torch.equal(x, y)
        else:
            assert (x[rows] - y[rows]).abs().max() > 0.05 * x[rows].abs().max()
            other_rows = slice(-32, None) if branch == "local" else slice(0, -32)
            assert torch.equal(x[other_rows], y[other_rows])  # the unconditioned branch ignores the text


def test_local_tokens_come_first_in_row_major_order():
    module = make("paper", global_injection="none", local_injection="none", return_attention=True)
    frames = [8]
    inputs = batch(frames)
    out = module(inputs["features"], frames, ["video"])[0]
    coords = module.last_attention["local_coords"][0]  # (G, M, 3)
    first_member = coords[:, 0]  # (t, h, w) of each group's first slot, in output order
    expected = torch.tensor([(4 * t, 3 * h, 3 * w) for t in range(2) for h in range(2) for w in range(2)])
    assert torch.equal(first_member, expected)
    assert out.shape == (8 + 32, DOUT)


def test_attention_maps_are_optional():
    frames = [5, 1]
    inputs = batch(frames)
    args = (inputs.pop("features"), frames, ["video", "image"])
    module = make("release")
    module(*args, **inputs)
    assert module.last_attention is None
    module = make("release", return_attention=True)
    module(*args, **inputs)
    att = module.last_attention
    assert set(att) == {"local", "local_valid", "local_coords", "global", "global_valid"}
    assert att["local"].shape == (2, 2 * 2 * 2, 4 * 3 * 3)
    assert att["global"].shape == (2, 4, 32, 5 * 36)

    # switched on a built module: the same maps as one built with return_attention, same outputs
    built = make("release")
    built.load_state_dict(module.state_dict())
    built.record_attention(True)
    assert built.config.return_attention and built.local_compressor.cfg.return_attention
    out_built, out_module = built(*args, **inputs), module(*args, **inputs)
    assert all(torch.equal(a, b) for a, b in zip(out_built, out_module))
    for key, value in module.last_attention.items():
        assert torch.equal(built.last_attention[key], value), key
    built.record_attention(False)
    assert built.last_attention is None
    built(*args, **inputs)
    assert built.last_attention is None
    assert not built.global_compressor.cfg.return_attention


def test_bfloat16_forward_follows_float32():
    """The same module and inputs in bf16 and fp32: bf16 outputs within bf16's rounding of fp32's."""
    module = make("release")
    frames = [6, 1]
    inputs = batch(frames)
    with torch.no_grad():
        reference = module(inputs["features"], frames, ["video", "image"],
                           **{k: v for k, v in inputs.items() if k != "features"})
        half = copy.deepcopy(module).to(torch.bfloat16)
        cast = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
        out = half(cast.pop("features"), frames, ["video", "image"], **cast)
    for low, high in zip(out, reference):
        assert low.dtype == torch.bfloat16 and low.shape == high.shape
        scale = high.abs().max().item()
        assert (low.float() - high).abs().max().item() <= 0.05 * scale, (low.float() - high).abs().max()
        assert torch.nn.functional.cosine_similarity(low.float().flatten(), high.flatten(), dim=0) > 0.999


def test_input_errors():
    module = make("paper")
    frames = [4, 1]
    inputs = batch(frames)
    feats = inputs.pop("features")
    with pytest.raises(ValueError, match="features must be"):
        module(feats[..., :8], frames, ["video", "image"], **inputs)
    with pytest.raises(ValueError, match="sums to 6"):
        module(feats, [4, 2], ["video", "image"], **inputs)
    with pytest.raises(ValueError, match="modalities"):
        module(feats, frames, ["video"], **inputs)
    with pytest.raises(ValueError, match="unknown modalities"):
        module(feats, frames, ["video", "audio"], **inputs)
    with pytest.raises(ValueError, match="text_pooled must be"):
        module(feats, frames, ["video", "image"])
    with pytest.raises(ValueError, match="dense_embeds"):
        make("release")(feats, frames, ["video", "image"], text_pooled=inputs["text_pooled"])
    with pytest.raises(ValueError, match="text_tokens must be"):
        make("paper", local_injection="fine")(feats, frames, ["video", "image"], text_pooled=inputs["text_pooled"])


def forward_backward(module, frames, modalities, inputs):
    """Outputs and every gradient (parameters and inputs) of one fwd+bwd pass."""
    module.zero_grad(set_to_none=True)
    inputs = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    out = module(inputs["features"], frames, modalities, **{k: v for k, v in inputs.items() if k != "features"})
    torch.stack([(o * torch.linspace(-1, 1, o.shape[-1])).square().mean() for o in out]).sum().backward()
    grads = {f"param {n}": p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    grads.update({f"input {k}": v.grad for k, v in inputs.items() if v.grad is not None})
    return out, grads


@pytest.mark.parametrize("kind", INJECTIONS)
@pytest.mark.parametrize("preset", ["paper", "release"])
def test_folded_attention_equals_straightforward(preset, kind):
    """The default (folded) global branch against the textbook one: same outputs, same gradients."""
    module = make(preset, local_injection=kind, global_injection=kind)
    with torch.no_grad():
        # The init leaves biases and queries at zero and weights at std 0.02 (near-uniform attention,
        # gradients ~1e-7): randomise them so that the fold is tested and every gradient is O(0.01..1).
        for name, param in module.named_parameters():
            if name.endswith(("bias", "query")):
                param.normal_(0, 0.5)
            elif param.ndim == 2:
                param.normal_(0, param.shape[1] ** -0.5)
    frames = [8, 3, 1]  # unequal lengths: padded keys in the global branch
    modalities = ["video", "video", "image"]
    inputs = batch(frames)
    assert module.fold_attention
    folded, folded_grads = forward_backward(module, frames, modalities, inputs)
    module.fold_attention = False
    plain, plain_grads = forward_backward(module, frames, modalities, inputs)
    for x, y in zip(folded, plain):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    assert folded_grads.keys() == plain_grads.keys()
    assert "param global_compressor.attn.k_proj.weight" in folded_grads
    assert ("input text_pooled" in folded_grads) == (kind in ("direct", "coarse"))
    for name, grad in folded_grads.items():
        torch.testing.assert_close(grad, plain_grads[name], atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")
