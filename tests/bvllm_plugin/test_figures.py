"""B-VLLM's toy-zoo sheet: one row per clip x instruction (frames + one bar per slot), and the numbers
behind it: every slot's weights over the frames sum to one, on the deterministic eval path."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from bvllm_plugin.figures import frame_selection, toy_picture
from llava.model.builder import assemble_llava_qwen
from llava.plugin import ToyRow, ToyStage
from llava.toy import sheet
from tests.helpers.toy_clips import toy_clips

ROW = ToyRow("bvllm_toy", "B-VLLM (toy)", ("bvllm",), stages=(ToyStage("unused.sh"),))


@pytest.fixture(scope="module")
def bvllm_dir(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bvllm-picture")
    assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", out, mm_projector_type="bvllm",
                        bvllm_preset="tiny", bvllm_qformer_tokenizer="tiny", seed=0)
    return out


def test_toy_picture_draws_one_row_per_clip_and_instruction(bvllm_dir, tmp_path):
    clips = toy_clips(2, frames=4)
    out = toy_picture(ROW, bvllm_dir, clips, tmp_path / "bvllm.png")
    _, model, _ = sheet.load_checkpoint(bvllm_dir)
    slots = model.get_model().mm_projector.bvllm.num_slots
    with Image.open(out) as image:
        width, height = image.size
    row_h = 56 * sheet.SCALE + slots * (sheet.BAR_HEIGHT + sheet.FRAME_GAP)
    assert width == sheet.LABEL_WIDTH + sheet.strip_width(4, 56)
    assert height == sheet.TITLE_HEIGHT + 2 * 2 * (row_h + sheet.ROW_GAP)


def test_slot_weights_are_distributions_over_frames_and_deterministic(bvllm_dir):
    _, model, processor = sheet.load_checkpoint(bvllm_dir)
    clip = toy_clips(1, frames=4)[0]
    pixels = sheet.clip_pixels(model, processor, clip.frames)
    first = frame_selection(model, pixels, clip.instructions[0])
    again = frame_selection(model, pixels, clip.instructions[0])
    slots = model.get_model().mm_projector.bvllm.num_slots
    assert first["weights"].shape == (slots, 4)
    torch.testing.assert_close(first["weights"].sum(-1), torch.ones(slots))
    torch.testing.assert_close(first["weights"], again["weights"], rtol=0, atol=0)  # no Gumbel noise at eval
    assert 1 <= int(first["kept"].sum()) <= slots
    assert first["tokens"] == model.get_model().mm_projector.last_selection["token_counts"][0]
