"""The reducers' toy-zoo sheet on the reference checkpoint: one row per clip x instruction, and the
numbers behind it: a pruning reducer keeps exactly its budget of pooled tokens whole, pooling spreads
every token's share, and in-LLM FastV keeps its budget by the last token's attention, per instruction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from llava.model.builder import assemble_llava_qwen
from llava.plugin import ToyRow
from llava.toy import sheet
from reducers_plugin.figures import kept_map, toy_picture
from tests.helpers.toy_clips import toy_clips

FRAMES, SIDE = 4, 3  # the tiny tower's 7 x 7 patches average-pool (stride 2) to 3 x 3 tokens a frame


@pytest.fixture(scope="module")
def reference_dir(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reducers-picture")
    assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", out, seed=0)
    return out


@pytest.fixture(scope="module")
def loaded(reference_dir):
    torch.set_num_threads(1)
    tokenizer, model, processor = sheet.load_checkpoint(reference_dir)
    clip = toy_clips(1, frames=FRAMES)[0]
    return tokenizer, model, sheet.clip_pixels(model, processor, clip.frames), clip


def test_toy_picture_draws_one_row_per_clip_and_instruction(reference_dir, tmp_path):
    row = ToyRow("random_drop_toy", "random drop (toy)", ("random_drop",), reducer="random_drop",
                 reducer_options={"budget": 20})
    out = toy_picture(row, reference_dir, toy_clips(2, frames=FRAMES), tmp_path / "reducer.png")
    with Image.open(out) as image:
        assert image.size == (sheet.LABEL_WIDTH + sheet.strip_width(FRAMES, 56),
                              sheet.TITLE_HEIGHT + 2 * 2 * (56 * sheet.SCALE + sheet.ROW_GAP))


@pytest.mark.parametrize("name", ["random_drop", "vidcom2"])
def test_a_pruning_reducer_keeps_its_budget_whole(loaded, name):
    tokenizer, model, pixels, clip = loaded
    shares = kept_map(model, tokenizer, pixels, clip.instructions[0], name, {"budget": 20})
    assert shares.shape == (FRAMES, SIDE, SIDE)
    np.testing.assert_allclose(np.sort(shares.flatten())[-20:], 1.0, atol=1e-6)
    assert int((shares > 1e-6).sum()) == 20
    again = kept_map(model, tokenizer, pixels, clip.instructions[1], name, {"budget": 20})
    np.testing.assert_array_equal(shares, again)  # it never reads the instruction


def test_pooling_spreads_every_token_share(loaded):
    tokenizer, model, pixels, clip = loaded
    shares = kept_map(model, tokenizer, pixels, clip.instructions[0], "pool2d", {"budget": 16})
    np.testing.assert_allclose(shares.sum(), 16.0, rtol=1e-5)  # each output token is a mean of inputs
    assert (shares > 0).all()


def test_fastv_keeps_its_budget_by_the_instruction(loaded):
    tokenizer, model, pixels, clip = loaded
    first, second = (kept_map(model, tokenizer, pixels, q, "fastv", {"layer": 1, "budget": 5})
                     for q in clip.instructions)
    assert first.shape == (FRAMES, SIDE, SIDE)
    assert set(np.unique(first)) <= {0.0, 1.0}
    assert first.sum() == second.sum() == 5
