"""HICom's toy-zoo sheet: one row per clip x instruction, each the local and global attention strips,
and the attention moves with the instruction on a conditioned model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hicom_plugin.tools.figures import attention_maps, toy_picture
from llava.model.builder import assemble_llava_qwen
from llava.plugin import ToyRow, ToyStage
from llava.toy import sheet
from tests.helpers.toy_clips import toy_clips

ROW = ToyRow("hicom_toy", "HICom (toy)", ("hicom",), stages=(ToyStage("unused.sh"),))


@pytest.fixture(scope="module")
def hicom_dir(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hicom-picture")
    assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", out, mm_projector_type="hicom",
                        hicom_preset="paper", seed=0)
    return out


def test_toy_picture_draws_one_row_per_clip_and_instruction(hicom_dir, tmp_path):
    torch.set_num_threads(1)
    clips = toy_clips(2, frames=4)
    out = toy_picture(ROW, hicom_dir, clips, tmp_path / "hicom.png")
    with Image.open(out) as image:
        width, height = image.size
    strip_h = 56 * sheet.SCALE
    branches = 2  # local and global, stacked in each row
    row_h = branches * strip_h + (branches - 1) * sheet.FRAME_GAP
    assert width == sheet.LABEL_WIDTH + sheet.strip_width(4, 56)
    assert height == sheet.TITLE_HEIGHT + 2 * 2 * (row_h + sheet.ROW_GAP)


def test_the_two_instructions_give_different_attention(hicom_dir):
    _, model, processor = sheet.load_checkpoint(hicom_dir)
    clip = toy_clips(1, frames=4)[0]
    pixels = sheet.clip_pixels(model, processor, clip.frames)
    first, second = (attention_maps(model, pixels, instruction) for instruction in clip.instructions)
    assert set(first) == {"local", "global"}
    for branch in first:
        assert first[branch].shape == (4, 7, 7)
        # untrained, the attention is near uniform: the instruction moves it a little, but it moves it
        assert not np.array_equal(first[branch], second[branch])
        assert (first[branch] >= 0).all()
    # the global queries' attention is a distribution over the clip's patches
    np.testing.assert_allclose(first["global"].sum(), 1.0, rtol=1e-4)
    # one local group in time (4 frames) x 3 x 3 in space, each summing to one over its real patches
    np.testing.assert_allclose(first["local"].sum(), 9.0, rtol=1e-4)
