"""DisCo's toy-zoo sheet: one row per clip x instruction (frames lit by one query token's focus); the
focus maps are each layer's attention over the clip's patches, and the token shown is the one most on
the named tile."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from disco_plugin.tools.picture import focus_on, token_focus, toy_picture
from llava.model.builder import assemble_llava_qwen
from llava.plugin import ToyRow, ToyStage
from llava.toy import sheet
from tests.helpers.toy_clips import toy_clips

ROW = ToyRow("disco_toy", "DisCo (toy)", ("disco",), stages=(ToyStage("unused.sh"),))


@pytest.fixture(scope="module")
def disco_dir(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("disco-picture")
    assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", out, mm_projector_type="disco",
                        disco_preset="tiny", seed=0)
    return out


def test_toy_picture_draws_one_row_per_clip_and_instruction(disco_dir, tmp_path):
    clips = toy_clips(2, frames=4)
    out = toy_picture(ROW, disco_dir, clips, tmp_path / "disco.png")
    with Image.open(out) as image:
        assert image.size == (sheet.LABEL_WIDTH + sheet.strip_width(4, 56),
                              sheet.TITLE_HEIGHT + 2 * 2 * (56 * sheet.SCALE + sheet.ROW_GAP))


def test_focus_is_attention_summed_over_layers_and_picks_the_token_on_the_tile(disco_dir):
    _, model, processor = sheet.load_checkpoint(disco_dir)
    clip = toy_clips(1, frames=4)[0]
    focus = token_focus(model, sheet.clip_pixels(model, processor, clip.frames))
    cfg = model.get_model().mm_projector.disco
    assert focus.shape == (cfg.num_queries, 4, 7, 7)
    assert (focus >= 0).all()
    # each layer's head-mean attention sums to one over the frames' patches (scope: the whole clip or
    # each frame), so the sum over layers is depth (x frames when each frame is normalised on its own)
    totals = focus.sum(dim=(1, 2, 3))
    assert torch.allclose(totals, totals[0].expand_as(totals), rtol=1e-4)
    assert round(totals[0].item()) in (cfg.depth, cfg.depth * 4)
    first, row, col = clip.targets[0]
    on_tile = focus_on(focus, clip.targets[0], 7)
    torch.testing.assert_close(on_tile, focus[:, first:, row, col].sum(-1))
