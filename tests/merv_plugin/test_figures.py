"""MERV's toy-zoo sheet: one row per clip x instruction (frames + the weight of each encoder); the
weights are a distribution over the encoders, and the same under both instructions (the mixer reads
the video only), which the row titles say."""

from __future__ import annotations

import numpy as np
from PIL import Image

from llava.plugin import ToyRow, ToyStage
from llava.toy import sheet
from merv_plugin.figures import clip_mixer_weights, toy_picture
from tests.helpers.toy_clips import toy_clips

ROW = ToyRow("merv_toy", "MERV (toy)", ("merv",), stages=(ToyStage("unused.sh"),))
BAR_W, BAR_H = 300, 18  # sheet.value_bars' defaults


def test_toy_picture_draws_one_row_per_clip_and_instruction(merv_llava, tmp_path):
    folder, _, model, _ = merv_llava
    clips = toy_clips(2, frames=4)
    out = toy_picture(ROW, folder, clips, tmp_path / "merv.png")
    encoders = len(model.get_model().mm_projector.encoder_names)
    with Image.open(out) as image:
        width, height = image.size
    row_h = max(56 * sheet.SCALE, encoders * BAR_H)
    assert width == sheet.LABEL_WIDTH + sheet.strip_width(4, 56) + 8 + BAR_W
    assert height == sheet.TITLE_HEIGHT + 2 * 2 * (row_h + sheet.ROW_GAP)


def test_mixer_weights_sum_to_one_and_ignore_the_instruction(merv_llava):
    _, _, model, processor = merv_llava
    clip = toy_clips(1, frames=4)[0]
    pixels = sheet.clip_pixels(model, processor, clip.frames)
    first, second = (clip_mixer_weights(model, pixels, instruction) for instruction in clip.instructions)
    assert first.shape == (len(model.get_model().mm_projector.encoder_names),)
    np.testing.assert_allclose(first.sum(), 1.0, rtol=1e-5)
    assert not model.get_model().mm_projector.uses_instructions
    np.testing.assert_array_equal(first, second)
