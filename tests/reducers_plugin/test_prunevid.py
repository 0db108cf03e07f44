"""PruneVid's pre-LLM stage against a per-sample re-statement of the public code (``Visual-AI/PruneVid``,
``models/pllava/modeling_pllava.py``: ``cluster_dpc_knn``, ``refine_clusters``, ``segment_lengths``,
``merge_frames_dynamic``), plus its exact-budget mode: counts at three budgets, determinism, the floor.

The reference is written from that code with Python loops over frames, windows and groups, batch size 1,
and the density noise drawn call after call from one seeded generator in the code's order.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from llava.model.visual import VisualBatch
from reducers_plugin.prunevid import PruneVid, contiguous_segments, dpc_knn

# ----------------------------------------------------------------------------- the reference


def _dpc_reference(x: torch.Tensor, clusters: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """One group ``(N, C)`` -> ``(N,)`` labels: density from the k nearest, distance to the nearest denser."""
    n, c = x.shape
    dist = torch.cdist(x[None].float(), x[None].float())[0] / (c**0.5)
    nearest, _ = torch.topk(dist, k=k, dim=-1, largest=False)
    density = (-(nearest**2).mean(dim=-1)).exp() + torch.rand(n, generator=gen) * 1e-6
    denser = (density[None, :] > density[:, None]).float()
    delta = (dist * denser + dist.max() * (1 - denser)).min(dim=-1).values
    _, centres = torch.topk(delta * density, k=clusters)
    labels = dist[centres].argmin(dim=0)
    for j, centre in enumerate(centres.tolist()):
        labels[centre] = j
    return labels


def _refine_reference(labels: list[int]) -> list[int]:
    """Each cluster keeps its longest fragments (none if they are single frames); the rest join the neighbour
    with the longer run (left on a tie; label 0 with no neighbour)."""
    n = len(labels)
    refined = list(labels)
    for cluster in sorted(set(labels)):
        idx = [i for i in range(n) if labels[i] == cluster]
        fragments, start = [], idx[0]
        for a, b in zip(idx, idx[1:] + [None]):
            if b != a + 1:
                fragments.append((start, a))
                start = b
        longest = max(e - s + 1 for s, e in fragments)
        for s, e in fragments:
            if longest == 1 or e - s + 1 != longest:
                refined[s:e + 1] = [-1] * (e - s + 1)
    i = 0
    while i < n:
        if refined[i] != -1:
            i += 1
            continue
        start = i
        while i < n and refined[i] == -1:
            i += 1
        end = i - 1
        left_label = right_label = None
        left_len = right_len = 0
        if start > 0:
            left_label, j = refined[start - 1], start - 1
            while j >= 0 and refined[j] == left_label:
                j -= 1
            left_len = start - j - 1
        if end < n - 1:
            right_label, j = refined[end + 1], end + 1
            while j < n and refined[j] == right_label:
                j += 1
            right_len = j - end - 1
        if left_len > right_len:
            new = left_label
        elif right_len > left_len:
            new = right_label
        else:
            new = left_label if left_label is not None else right_label
        refined[start:end + 1] = [0 if new is None else new] * (end - start + 1)
    return refined


def _run_lengths(labels: list[int]) -> list[int]:
    change = [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
    bounds = [0] + change + [len(labels)]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def _spatial_merge_reference(feature: torch.Tensor, clusters: int, gen: torch.Generator) -> torch.Tensor:
    labels = _dpc_reference(feature, clusters, 7, gen)
    return torch.stack([feature[labels == j].mean(dim=0) for j in range(clusters)])


def _prunevid_reference(video: torch.Tensor, tau: float, segment_ratio: float, cluster_ratio: float, seed: int):
    """``(T, L, C)`` -> (output, segment lengths, static masks) of ``merge_frames_dynamic`` for one video."""
    gen = torch.Generator().manual_seed(seed)
    frames, positions, _ = video.shape
    labels = _dpc_reference(video.mean(dim=1), int(frames * segment_ratio), 7, gen)
    windows = _run_lengths(_refine_reference(labels.tolist()))
    out, masks, start = [], [], 0
    for w in windows:
        current = video[start:start + w]
        unit = F.normalize(current, p=2, dim=-1)
        sim = torch.einsum("wlc,tlc->wtl", unit, unit)
        sim = (sim.sum(dim=-2) - 1).sum(dim=-2) / (w * (w - 1))
        mask = sim > tau
        static = current[:, mask].mean(dim=0)
        if static.shape[0] > 14:
            static = _spatial_merge_reference(static, int(static.shape[0] * cluster_ratio), gen)
        out.append(static)
        for i in range(w):
            dynamic = current[i][~mask]
            if dynamic.shape[0] > 14:
                dynamic = _spatial_merge_reference(dynamic, int(dynamic.shape[0] * cluster_ratio), gen)
            out.append(dynamic)
        masks.append(mask)
        start += w
    return torch.cat(out), windows, masks


def _video(frames: int, positions: int, dim: int, seed: int) -> torch.Tensor:
    """Scenes of several frames; about half the positions barely move within a scene (static)."""
    gen = torch.Generator().manual_seed(seed)
    scene_of = torch.randint(0, 4, (frames,), generator=gen).sort().values
    scenes = torch.randn(4, positions, dim, generator=gen)
    motion = torch.where(torch.rand(positions, generator=gen) < 0.5, 0.05, 1.0)[None, :, None]
    return scenes[scene_of] + motion * torch.randn(frames, positions, dim, generator=gen)


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("seed, frames, tau", [(0, 16, 0.8), (1, 16, 0.9), (5, 32, 0.8)])
def test_prunevid_equals_public_code_restated(seed, frames, tau):
    video = _video(frames, 36, 8, seed)
    reference, windows, masks = _prunevid_reference(video, tau, 0.25, 0.5, seed)
    reducer = PruneVid(exact_budget=False, tau=tau, seed=seed)
    lengths = reducer.segments(video, torch.Generator().manual_seed(seed))
    assert lengths == windows
    assert len(windows) > 1  # the test exercises several segments
    _, ours = reducer.static_masks(video, lengths)
    assert all(torch.equal(a, b) for a, b in zip(ours, masks))
    assert 0 < sum(int(m.sum()) for m in masks) < len(masks) * 36  # static and dynamic positions both occur
    out = reducer.reduce_video(video)
    assert out.shape == reference.shape
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", range(3))
def test_dpc_knn_labels_equal_the_per_group_reference(seed):
    x = torch.randn(5, 40, 8, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed)
    reference = torch.stack([_dpc_reference(group, 13, 7, gen) for group in x])
    assert torch.equal(dpc_knn(x, 13, 7, torch.Generator().manual_seed(seed)), reference)


def test_segment_refinement_equals_refine_clusters():
    rng = random.Random(0)
    for _ in range(300):
        labels = [rng.randrange(rng.randint(1, 5)) for _ in range(rng.randint(1, 20))]
        assert contiguous_segments(labels) == _run_lengths(_refine_reference(labels)), labels


# ----------------------------------------------------------------------------- budgets

FRAMES, PER_FRAME, DIM = 32, 196, 8
M = FRAMES * PER_FRAME


@pytest.fixture(scope="module")
def item() -> tuple[list[torch.Tensor], VisualBatch]:
    """One OneVision video item ``(32 * 196 + 1, D)`` (newline last) and an image ``(17, D)``."""
    video = torch.cat([_video(FRAMES, PER_FRAME, DIM, 0).flatten(0, 1), torch.ones(1, DIM)])
    image = torch.randn(17, DIM, generator=torch.Generator().manual_seed(1))
    batch = VisualBatch(features=torch.zeros(FRAMES + 1, 2, 2, 1), frames_per_item=[FRAMES, 1],
                        modalities=["video", "image"])
    return [video, image], batch


def test_exact_counts_at_three_budgets_and_determinism(item):
    tokens, batch = item
    for options, expected in zip(({"budget": 680}, {"ratio": 0.15}, {"ratio": 0.25}), (680, 941, 1568)):
        reducer = PruneVid(**options)
        announced = reducer.num_output_tokens(M + 1, FRAMES, 27, 27, "video")
        video, image = reducer.reduce_tokens(tokens, batch)
        assert announced == video.shape[0] == expected + 1, (options, announced, video.shape)
        assert torch.equal(video[-1], tokens[0][-1])
        assert torch.equal(image, tokens[1])
        assert torch.equal(PruneVid(**options).reduce_tokens(tokens, batch)[0], video)


def test_exact_budget_above_what_static_averaging_leaves_turns_static_positions_dynamic():
    still = torch.randn(1, 16, 4, generator=torch.Generator().manual_seed(0)).expand(8, -1, -1).contiguous()
    reducer = PruneVid(budget=100, tau=0.5)
    _, masks = reducer.static_masks(still, reducer.segments(still, torch.Generator().manual_seed(0)))
    assert all(bool(m.all()) for m in masks)  # everything static: averaging alone leaves <= 64 tokens
    assert reducer.reduce_video(still).shape == (100, 4)


def test_faithful_count_is_not_announced_and_floor_is_enforced(item):
    tokens, batch = item
    faithful = PruneVid(exact_budget=False)
    with pytest.raises(ValueError, match="depends on the video"):
        faithful.num_output_tokens(M + 1, FRAMES, 27, 27, "video")
    assert PruneVid(exact_budget=False).reduce_tokens(tokens, batch)[0].shape[0] < M // 2 + 1
    with pytest.raises(ValueError, match="need exact_budget=true"):
        PruneVid(budget=680, exact_budget=False)
    with pytest.raises(ValueError, match="below its floor of 48"):
        PruneVid(budget=40, at_floor=False).num_output_tokens(M + 1, FRAMES, 27, 27, "video")
    at_floor = PruneVid(budget=40)
    assert at_floor.num_output_tokens(M + 1, FRAMES, 27, 27, "video") == 49
    assert at_floor.reduce_tokens(tokens, batch)[0].shape[0] == 49
