"""Local branch: grouping schemes, pooling, and the vectorised module against a per-group loop."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from hicom_plugin import PRESETS
from hicom_plugin.local_compressor import LocalCompressor, axis_groups, axis_pool_taps

D, DT, DOUT = 16, 12, 20


def groups_of(n: int, k: int, scheme: str) -> list[list[int]]:
    """Valid members of each group, read back from the vectorised ``axis_groups``."""
    s = math.ceil(n / k)
    index, valid = axis_groups(torch.tensor([n]), torch.tensor([k]), s + 1, k + 1, scheme)
    assert not valid[0, s:].any()  # padded groups are fully invalid
    return [index[0, g][valid[0, g]].tolist() for g in range(s)]


def python_groups(n: int, k: int, scheme: str) -> list[list[int]]:
    """Plain-Python statement of the two schemes."""
    s = math.ceil(n / k)
    if scheme == "pad":
        return [list(range(g * k, min(n, g * k + k))) for g in range(s)]
    if s == 1:
        return [list(range(min(n, k)))]
    surplus = s * k - n
    overlaps = [surplus // (s - 1)] * (s - 1)
    for b in range(surplus % (s - 1)):
        overlaps[-1 - b] += 1
    starts = [0]
    for overlap in overlaps:
        starts.append(starts[-1] + k - overlap)
    return [list(range(start, start + k)) for start in starts]


def release_groups(n: int, k: int) -> list[list[int]] | None:
    """The release's balance_divide_feature as described in the reference report (§1.4); None where
    it fails (a group of the wrong size, which crashes its torch.stack)."""
    s = math.ceil(n / k)
    r = n % s or s
    groups, start = [], 0
    for i in range(s):
        size = k if i < r else k - 1
        end = start + size
        if size < k:
            start -= 1
        groups.append(list(range(start, min(end, n))))
        start = end
    return groups if all(len(g) == k for g in groups) else None


@pytest.mark.parametrize("scheme", ["pad", "overlap"])
def test_groups_count_and_cover(scheme):
    for n, k in itertools.product(range(1, 41), range(1, 7)):
        groups = groups_of(n, k, scheme)
        assert len(groups) == math.ceil(n / k)
        assert sorted(set(itertools.chain(*groups))) == list(range(n))
        assert groups == python_groups(n, k, scheme), (n, k)
        for g in groups:
            assert g == list(range(g[0], g[0] + len(g)))  # contiguous
        if scheme == "overlap":
            assert all(len(g) == min(n, k) for g in groups), (n, k)
        else:
            assert sum(len(g) for g in groups) == n  # every index exactly once
        if n % k == 0:
            assert groups == [list(range(g * k, g * k + k)) for g in range(n // k)]


def test_overlap_matches_release_where_release_works():
    checked = 0
    for n, k in itertools.product(range(1, 65), range(2, 7)):
        if n < k:
            continue
        expected = release_groups(n, k)
        if expected is not None:
            assert groups_of(n, k, "overlap") == expected, (n, k)
            checked += 1
    assert checked > 100
    assert groups_of(30, 4, "overlap")[-3:] == [[20, 21, 22, 23], [23, 24, 25, 26], [26, 27, 28, 29]]
    for n in (2, 3, 5, 6, 9):  # where the release crashes
        assert release_groups(n, 4) is None
        assert len(groups_of(n, 4, "overlap")) == math.ceil(n / 4)


@pytest.mark.parametrize("size_in", [(32, 27, 27), (5, 7, 6), (1, 6, 6), (2, 3, 3), (9, 4, 5), (30, 10, 8)])
def test_trilinear_taps_equal_f_interpolate(size_in):
    torch.manual_seed(0)
    kernel = (4, 3, 3)
    x = torch.randn(1, 3, *size_in)
    size_out = tuple(math.ceil(n / k) for n, k in zip(size_in, kernel))
    expected = F.interpolate(x, size=size_out, mode="trilinear", align_corners=False)[0]
    matrices = []
    for n, k, s in zip(size_in, kernel, size_out):
        nt, kt = torch.tensor([n]), torch.tensor([k])
        index, valid = axis_groups(nt, kt, s, k, "pad")
        taps, weights = axis_pool_taps(nt, kt, s, index, valid, "trilinear")
        m = torch.zeros(s, n).index_put_((torch.arange(s)[:, None].expand_as(taps[0]), taps[0]),
                                         weights[0], accumulate=True)
        matrices.append(m)
    got = torch.einsum("ta,hb,wc,xabc->xthw", *matrices, x[0])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def make_module(**changes) -> LocalCompressor:
    torch.manual_seed(0)
    base = changes.pop("preset", "paper")
    cfg = PRESETS[base].replace(num_global_queries=0, global_injection="none", **changes)
    return LocalCompressor(cfg, D, DT, DOUT)


def reference_item(module: LocalCompressor, feats, embeds, kt, text_pooled=None, text_tokens=None, text_mask=None):
    """One item, one group at a time: pool, inject, attend to the group's real members only."""
    cfg = module.cfg
    t, h, w, d = feats.shape
    _, kh, kw = cfg.local_kernel
    tg, hg, wg = (python_groups(n, k, cfg.group_scheme) for n, k in ((t, kt), (h, kh), (w, kw)))
    cells = list(itertools.product(range(len(tg)), range(len(hg)), range(len(wg))))
    if cfg.query_pool == "mean":
        query = torch.stack([feats[tg[a]][:, hg[b]][:, :, wg[c]].mean((0, 1, 2)) for a, b, c in cells])
    else:
        grid = F.interpolate(feats.permute(3, 0, 1, 2)[None], size=(len(tg), len(hg), len(wg)),
                             mode="trilinear", align_corners=False)
        query = grid[0].permute(1, 2, 3, 0).reshape(-1, d)
    if module.q_adapter is not None:
        query = module.q_adapter(query)
    query = module.injector(query[None], text_pooled, text_tokens, text_mask)[0]
    keys = embeds if cfg.needs_dense_embeds else feats
    keys = keys if module.k_adapter is None else module.k_adapter(keys)
    values = feats if module.v_adapter is None else module.v_adapter(feats)
    out = []
    for q, (a, b, c) in zip(query, cells):
        k = keys[tg[a]][:, hg[b]][:, :, wg[c]].reshape(-1, d)
        v = values[tg[a]][:, hg[b]][:, :, wg[c]].reshape(-1, d)
        out.append(torch.softmax(k @ q / math.sqrt(d), 0) @ v)
    return module.readout(torch.stack(out))


CASES = [
    dict(),
    dict(group_scheme="overlap"),
    dict(query_pool="trilinear"),
    dict(local_injection="coarse", adapt_q=True, adapt_k=True, adapt_v=True),
    dict(local_injection="fine", group_scheme="overlap", query_pool="trilinear"),
    dict(local_injection="none", local_kernel=(2, 4, 5)),
    dict(preset="release"),
    dict(preset="release", local_injection="coarse", group_scheme="pad"),
]


@pytest.mark.parametrize("changes", CASES)
def test_module_matches_per_group_reference(changes):
    module = make_module(**changes)
    for adapter in (module.q_adapter, module.k_adapter, module.v_adapter):
        if adapter is not None:
            with torch.no_grad():
                adapter.alpha.fill_(0.3)  # exercise the adapters, not just their identity at init
    g = torch.Generator().manual_seed(1)
    frames = [5, 1, 9, 2, 4]
    temporal = [module.cfg.local_kernel[0]] * 4 + [1]  # the last item is an image
    temporal[1] = 1  # one frame
    feats = torch.randn(sum(frames), 7, 6, D, generator=g)
    embeds = torch.randn(sum(frames), 7, 6, D, generator=g)
    pooled, tokens = torch.randn(5, DT, generator=g), torch.randn(5, 4, DT, generator=g)
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[0, 2:] = False
    out, valid = module(feats, frames, temporal, embeds, pooled, tokens, mask)
    assert out.shape[:2] == valid.shape
    start = 0
    for i, (t, kt) in enumerate(zip(frames, temporal)):
        item = slice(start, start + t)
        start += t
        expected = reference_item(module, feats[item], embeds[item], kt, pooled[i:i + 1],
                                  tokens[i:i + 1], mask[i:i + 1])
        assert int(valid[i].sum()) == expected.shape[0]
        assert not valid[i, expected.shape[0]:].any()
        torch.testing.assert_close(out[i, :expected.shape[0]], expected, atol=1e-5, rtol=0)


def test_padded_group_attends_only_its_real_members():
    """T=5 with alpha_T=4 (pad scheme): the second temporal group holds frame 4 alone."""
    module = make_module(local_injection="none", local_kernel=(4, 1, 1))
    feats = torch.randn(5, 1, 1, D)
    out, valid = module(feats, [5], [4])
    assert valid.tolist() == [[True, True]]
    # A single real member gets all the weight, so the output is the readout of that frame.
    torch.testing.assert_close(out[0, 1], module.readout(feats[4, 0, 0]), atol=1e-6, rtol=0)
    # The first group: softmax over frames 0..3 with the group's mean as query.
    members = feats[:4, 0, 0]
    weights = torch.softmax(members @ members.mean(0) / math.sqrt(D), 0)
    torch.testing.assert_close(out[0, 0], module.readout(weights @ members), atol=1e-6, rtol=0)


def test_keys_come_from_dense_embeds_only_when_guided_with_dense_keys():
    feats = torch.randn(8, 6, 6, D)
    embeds, other = torch.randn(8, 6, 6, D), torch.randn(8, 6, 6, D)
    pooled = torch.randn(1, DT)

    def run(module, e):
        return module(feats, [8], [4], e, pooled)[0]

    release = make_module(preset="release")  # direct + dense_keys
    assert not torch.allclose(run(release, embeds), run(release, other))
    unguided = make_module(preset="release", local_injection="none")
    torch.testing.assert_close(run(unguided, embeds), run(unguided, other))
    paper = make_module()  # direct, keys from the features (Eq. 1)
    torch.testing.assert_close(run(paper, embeds), run(paper, other))
    with pytest.raises(ValueError, match="dense_embeds"):
        run(release, None)


def test_adapter_gates_start_closed():
    module = make_module(local_injection="coarse", adapt_q=True, adapt_k=True, adapt_v=True)
    plain = make_module(local_injection="coarse")
    plain_state = plain.state_dict()
    module.load_state_dict(plain_state, strict=False)
    feats, pooled = torch.randn(4, 6, 6, D), torch.randn(1, DT)
    out = module(feats, [4], [4], None, pooled)[0]
    torch.testing.assert_close(out, plain(feats, [4], [4], None, pooled)[0])
    out.square().sum().backward()
    for adapter in (module.q_adapter, module.k_adapter, module.v_adapter):
        assert adapter.alpha.grad.abs().item() > 0
        assert all(torch.count_nonzero(p.grad) == 0 for p in adapter.proj.parameters())


def test_attention_maps():
    module = make_module(return_attention=True, group_scheme="overlap")
    frames = [6, 1]
    feats = torch.randn(7, 7, 6, D)
    module(feats, frames, [4, 1], None, torch.randn(2, DT))
    att = module.last_attention
    groups, slots = 2 * 3 * 2, 4 * 3 * 3
    assert att["weights"].shape == (2, groups, slots) and att["coords"].shape == (2, groups, slots, 3)
    sums = att["weights"].sum(-1)
    torch.testing.assert_close(sums[0], torch.ones(groups))
    torch.testing.assert_close(sums[1], torch.tensor([1.0] * 6 + [0.0] * 6))  # image: 1 temporal group
    assert torch.all(att["weights"][~att["valid"]] == 0)
    coords = att["coords"][att["valid"]]
    assert coords[:, 1].max() == 6 and coords[:, 2].max() == 5 and coords[:, 0].max() == 5
    # The image: 3 x 2 groups of exactly 3 x 3 members (overlapping along h), covering all 7 x 6 positions.
    assert att["valid"][1].sum() == 6 * 9
    image_coords = {tuple(c) for c in att["coords"][1][att["valid"][1]].tolist()}
    assert image_coords == {(0, y, x) for y in range(7) for x in range(6)}


def test_average_mode_is_plain_average_pooling_then_readout():
    """local_mode='average' (the ablation's (4,3,3) average-pool row): T=6, H=7, W=6 with the pad
    scheme give ragged groups; each token is the readout of the uniform mean of its real members."""
    module = make_module(local_injection="none", local_mode="average")
    feats = torch.randn(6, 7, 6, D)
    out, valid = module(feats, [6], [4])
    kt, kh, kw = module.cfg.local_kernel
    expected = []
    for t0 in range(0, 6, kt):
        for h0 in range(0, 7, kh):
            for w0 in range(0, 6, kw):
                block = feats[t0:t0 + kt, h0:h0 + kh, w0:w0 + kw].reshape(-1, D)
                expected.append(module.readout(block.mean(0)))
    assert int(valid.sum()) == len(expected)
    torch.testing.assert_close(out[0, :len(expected)], torch.stack(expected), atol=1e-6, rtol=0)


@pytest.mark.parametrize("changes", [dict(local_injection="direct"), dict(local_injection="none", adapt_k=True)])
def test_average_mode_refuses_options_it_would_ignore(changes):
    with pytest.raises(ValueError, match="average-pool baseline"):
        make_module(local_mode="average", **changes)
