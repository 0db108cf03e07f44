"""The shared drawing of the picture sheets: heat on any grid, the target box, bars, composed sizes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from llava.toy import sheet


def test_upsample_is_nearest_cell_on_any_grid():
    weights = np.arange(9.0).reshape(3, 3)
    big = sheet.upsample(weights, 56, 56)
    assert big.shape == (56, 56)
    assert big[0, 0] == 0 and big[55, 55] == 8 and big[0, 55] == 2
    np.testing.assert_array_equal(sheet.upsample(np.eye(7), 56, 56), np.kron(np.eye(7), np.ones((8, 8))))


def test_heat_lights_the_heaviest_cell_and_lit_fades_the_rest():
    frame = np.full((56, 56, 3), 128, np.uint8)
    weights = np.zeros((7, 7))
    weights[2, 3] = 1.0
    hot = sheet.heat(frame, weights)
    assert tuple(hot[2 * 8 + 4, 3 * 8 + 4]) == (int(0.3 * 128 + 0.7 * 255),) * 3  # yellow-white at the max
    assert tuple(hot[0, 0]) == (int(0.3 * 128),) * 3
    faded = sheet.lit(frame, weights)
    assert faded[2 * 8 + 4, 3 * 8 + 4, 0] == 128 and faded[0, 0, 0] == int(128 * 0.15)


def test_strip_boxes_the_target_from_its_first_frame_on():
    frames = [np.full((56, 56, 3), 128, np.uint8)] * 3
    image = np.asarray(sheet.strip(frames, (1, 2, 3)))
    side = 56 * sheet.SCALE
    assert image.shape == (side, sheet.strip_width(3, 56), 3)
    top, left = 2 * 8 * sheet.SCALE, 3 * 8 * sheet.SCALE
    assert tuple(image[top, left]) == (128, 128, 128)  # frame 0: no box yet
    x1 = side + sheet.FRAME_GAP
    assert tuple(image[top, x1 + left]) == sheet.BOX_COLOUR  # frame 1 on: boxed
    assert tuple(image[top, 2 * x1 + left]) == sheet.BOX_COLOUR


def test_frame_bars_fill_in_proportion():
    bars = np.asarray(sheet.frame_bars(np.array([0.0, 0.5, 1.0]), 100))
    assert bars.shape == (sheet.BAR_HEIGHT, 3 * 100 + 2 * sheet.FRAME_GAP, 3)
    filled = [(bars[5, x0:x0 + 100] != 235).any(-1).sum() for x0 in (0, 102, 204)]
    assert filled == [0, 50, 100]


def test_compose_stacks_titled_rows(tmp_path):
    rows = [("a", Image.new("RGB", (30, 20))), ("b\nsecond line", Image.new("RGB", (50, 10)))]
    out = sheet.compose(rows, tmp_path / "sub" / "sheet.png", "title")
    with Image.open(out) as image:
        assert image.size == (sheet.LABEL_WIDTH + 50, sheet.TITLE_HEIGHT + 20 + 10 + 2 * sheet.ROW_GAP)
