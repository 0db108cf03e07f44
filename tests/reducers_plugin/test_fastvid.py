"""FastVID against a frame-by-frame re-statement of its public LLaVA-OneVision code, and its budget."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reducers_plugin.fastvid import FastVID, dyseg

FRAMES, PER_FRAME, DIM = 9, 16, 8


def _inputs(seed: int):
    """Tokens, MAP attention and frame descriptors of 9 frames in three scenes (so segments span frames)."""
    gen = torch.Generator().manual_seed(seed)
    scenes = torch.randn(3, 6, generator=gen)
    descriptors = scenes[[0, 0, 0, 0, 0, 1, 1, 2, 2]] + 0.05 * torch.randn(FRAMES, 6, generator=gen)
    return (torch.randn(FRAMES, PER_FRAME, DIM, generator=gen), torch.rand(FRAMES, PER_FRAME, generator=gen),
            descriptors)


def _merge_reference(anchors: list[torch.Tensor], members: list[torch.Tensor], beta: float) -> list[torch.Tensor]:
    groups = [[] for _ in anchors]
    for x in members:
        sims = [F.cosine_similarity(x, a, dim=0).item() for a in anchors]
        groups[max(range(len(sims)), key=lambda j: (sims[j], -j))].append(x)
    out = []
    for anchor, group in zip(anchors, groups):
        w = max(1 / (len(group) + 1), beta)
        out.append(w * anchor + (1 - w) * (torch.stack(group).mean(0) if group else 0))
    return out


def _fastvid_reference(video, attn, glob, r, c, tau, d, p, beta, seed):
    """The block of FastVID's ``Qwen2Model.forward``, one frame / segment at a time: sorted (index, token) pairs."""
    frames, n, dim = video.shape
    g = glob / glob.norm(dim=1, keepdim=True)
    sim = (g[:-1] * g[1:]).sum(dim=1)
    cuts = torch.cat([torch.topk(sim, c - 1, largest=False).indices, torch.nonzero(sim < tau).squeeze(1)])
    padded = F.pad(torch.unique(cuts).sort().values, (1, 1), value=-1)
    padded[-1] = frames - 1
    sizes = padded.diff().tolist()
    retain = int(n * r)
    salient = retain - int(retain * d)
    context = retain - salient
    context_list = [0] * frames
    offset = 0
    for size in sizes:
        for j in range(size):
            if (size - 1 - j) % p == 0:
                context_list[offset + j] = context * size // ((size + p - 1) // p)
        offset += size
    noise = torch.rand((frames, n - salient), generator=torch.Generator().manual_seed(seed))
    kept, rest, rest_index, score = [], [], [], []
    for t in range(frames):
        top = torch.topk(attn[t], salient).indices.tolist()
        kept += [(t * n + i, video[t, i]) for i in top]
        others = [i for i in range(n) if i not in top]
        tokens = video[t, others]
        dist = torch.cdist(tokens, tokens) / dim**0.5
        density = (-(torch.topk(dist, 4, largest=False).values ** 2).mean(-1)).exp() + noise[t] * 1e-6
        frame_score = []
        for i in range(len(others)):
            denser = [j for j in range(len(others)) if density[j] > density[i]]
            frame_score.append((min(dist[i, j] for j in denser) if denser else dist.max()) * density[i])
        rest.append(tokens)
        rest_index.append([t * n + i for i in others])
        score.append(torch.stack(frame_score))
    offset = 0
    for size in sizes:
        for t in range(offset, offset + size):
            if context_list[t] == 0:
                continue
            picks = torch.topk(score[t], context_list[t]).indices.tolist()
            members = list(rest[t]) if size == 1 else [x for f in range(offset, offset + size) for x in rest[f]]
            merged = _merge_reference([rest[t][i] for i in picks], members, beta)
            kept += [(rest_index[t][i], m) for i, m in zip(picks, merged)]
        offset += size
    return sorted(kept, key=lambda pair: pair[0]), sizes


@pytest.mark.parametrize("seed, ratio, segments", [(0, 0.5, 3), (1, 0.5, 2), (2, 0.375, 8)])
def test_fastvid_equals_frame_by_frame_reference(seed, ratio, segments):
    video, attn, glob = _inputs(seed)
    reducer = FastVID(ratio=ratio, segments=segments, exact_budget=False, seed=seed)
    tokens, index = reducer.kept_and_merged(video, attn, glob)
    reference, sizes = _fastvid_reference(video, attn, glob, ratio, segments, 0.9, 0.4, 4, 0.6, seed)
    assert any(size > 1 for size in sizes) and dyseg(glob, segments, 0.9) == sizes  # multi-frame segments occur
    assert index.tolist() == [i for i, _ in reference]
    torch.testing.assert_close(tokens, torch.stack([x for _, x in reference]), atol=1e-5, rtol=0)


def test_fastvid_exact_budget_keeps_t_times_retain_and_is_deterministic():
    video, attn, glob = _inputs(3)
    loose = FastVID(ratio=0.5, segments=2, exact_budget=False).kept_and_merged(video, attn, glob)[1]
    exact = FastVID(ratio=0.5, segments=2)
    tokens, index = exact.kept_and_merged(video, attn, glob)
    assert index.numel() == exact.count(FRAMES, PER_FRAME) == FRAMES * 8 > loose.numel()
    assert torch.equal(FastVID(ratio=0.5, segments=2).kept_and_merged(video, attn, glob)[0], tokens)
    # 680 at 32 frames of 196: 21 per frame (the closest achievable, 672)
    assert FastVID(budget=680).count(32, 196) == 672 and FastVID(ratio=0.25).count(32, 196) == 32 * 49
    assert math.isclose(FastVID().options()["ratio"], 0.10)
