"""Every pre-LLM reducer at OneVision's real layout (32 frames x 196 tokens + one newline): exact counts at
three budgets, counts announced before the tokens are seen, determinism, the newline kept last, images
left alone."""

from __future__ import annotations

import pytest
import torch

from llava.model.visual import VisualBatch
from reducers_plugin.dycoke import DyCokeTTM
from reducers_plugin.fastvid import FastVID
from reducers_plugin.pooling import FrameSubsample, Pool2D, Pool3D, RandomDrop
from reducers_plugin.tome import ToMe
from reducers_plugin.vidcom2 import VidCom2
from reducers_plugin.visionzip import VisionZip

FRAMES, PER_FRAME, DIM = 32, 196, 8
M = FRAMES * PER_FRAME
#: HICom's 680 at 32 frames, then 15 % and 25 % of M
BUDGETS = ({"budget": 680}, {"ratio": 0.15}, {"ratio": 0.25})
TARGETS = (680, 941, 1568)

#: reducer -> LLM-input visual tokens at each budget (exact unless the method cannot be)
EXPECTED = {
    Pool2D: TARGETS,
    RandomDrop: TARGETS,
    ToMe: TARGETS,
    VidCom2: TARGETS,
    Pool3D: (680, 936, 1568),  # 17x8x5, 26x6x6, 32x7x7: the largest grid <= N
    FrameSubsample: (588, 784, 1568),  # whole frames of 196
}


@pytest.fixture(scope="module")
def item() -> tuple[torch.Tensor, VisualBatch]:
    """One OneVision video item ``(32 * 196 + 1, D)`` (newline last, all ones) and an image ``(17, D)``."""
    gen = torch.Generator().manual_seed(0)
    video = torch.cat([torch.randn(M, DIM, generator=gen), torch.ones(1, DIM)])
    image = torch.randn(17, DIM, generator=gen)
    batch = VisualBatch(features=torch.zeros(FRAMES + 1, 2, 2, 1), frames_per_item=[FRAMES, 1],
                        modalities=["video", "image"])
    return [video, image], batch


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda cls: cls.__name__)
def test_exact_counts_at_three_budgets_and_determinism(item, cls):
    tokens, batch = item
    for options, expected in zip(BUDGETS, EXPECTED[cls]):
        reducer = cls(**options)
        announced = reducer.num_output_tokens(M + 1, FRAMES, 27, 27, "video")
        video, image = reducer.reduce_tokens(tokens, batch)
        assert announced == video.shape[0] == expected + 1, (options, announced, video.shape)
        assert torch.equal(video[-1], tokens[0][-1])  # the newline stays last
        assert torch.equal(image, tokens[1]) and reducer.num_output_tokens(17, 1, 27, 27, "image") == 17
        assert torch.equal(cls(**options).reduce_tokens(tokens, batch)[0], video)  # deterministic


def test_dycoke_counts_follow_its_formula_and_floor(item):
    tokens, batch = item
    # (T/4 + 1) 196 whole + (3T/4 - 1) keep: 9 * 196 + 23 * 58 at the default k = 0.7
    assert DyCokeTTM().num_output_tokens(M + 1, FRAMES, 27, 27, "video") == 3098 + 1
    for options in BUDGETS:
        with pytest.raises(ValueError, match=r"DyCokeTTM: a budget of \d+ tokens is below its floor of 1764 tokens"):
            DyCokeTTM(**options, at_floor=False).count(FRAMES, PER_FRAME)
        video = DyCokeTTM(**options).reduce_tokens(tokens, batch)[0]
        assert video.shape[0] == 1764 + 1
    reducer = DyCokeTTM(budget=3000)  # the largest keep with a count <= 3000: (3000 - 1764) // 23 = 53
    assert reducer.keep_per_pruned_frame(FRAMES, PER_FRAME) == 53
    assert reducer.reduce_tokens(tokens, batch)[0].shape[0] == 1764 + 23 * 53 + 1 <= 3001


@pytest.mark.parametrize("cls, options, floor", [
    (Pool2D, {"budget": 20}, 32), (VidCom2, {"budget": 20}, 32), (FrameSubsample, {"budget": 150}, 196),
    (DyCokeTTM, {"ratio": 0.1}, 1764),
], ids=lambda value: getattr(value, "__name__", None))
def test_budget_below_the_floor_is_an_error_or_runs_at_the_floor_logged(cls, options, floor, caplog):
    with pytest.raises(ValueError, match=f"{cls.__name__}: a budget of .* below its floor of {floor} tokens"):
        cls(**options, at_floor=False).count(FRAMES, PER_FRAME)
    with caplog.at_level("WARNING", logger="reducers_plugin.base"):
        assert cls(**options).count(FRAMES, PER_FRAME) == floor
    assert f"running at {floor} tokens" in caplog.text


def test_tower_signal_reducers_exact_counts_at_three_budgets(item):
    """VisionZip and FastVID on the same layout, with random tower signals (attention, keys, descriptors)."""
    grid = item[0][0][:M].view(FRAMES, PER_FRAME, DIM)
    gen = torch.Generator().manual_seed(1)
    score, metric = torch.rand(FRAMES, PER_FRAME, generator=gen), torch.randn(FRAMES, PER_FRAME, 4, generator=gen)
    descriptors = torch.randn(FRAMES, 6, generator=gen)
    for options, target in zip(BUDGETS, TARGETS):
        out = VisionZip(**options).reduce_video(grid, score, metric)
        assert out.shape[0] == VisionZip(**options).count(FRAMES, PER_FRAME) == target
        assert torch.equal(VisionZip(**options).reduce_video(grid, score, metric), out)
        # FastVID keeps whole per-frame shares: T * (N // T) for a budget, T * int(196 r) for a ratio
        fastvid = FastVID(**options)
        tokens, index = fastvid.kept_and_merged(grid, score, descriptors)
        assert tokens.shape[0] == index.unique().numel() == fastvid.count(FRAMES, PER_FRAME)
        assert fastvid.count(FRAMES, PER_FRAME) == {680: 672, 941: 928, 1568: 1568}[target]
        assert torch.equal(FastVID(**options).kept_and_merged(grid, score, descriptors)[0], tokens)
