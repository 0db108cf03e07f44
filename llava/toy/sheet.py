"""The drawing every method's picture sheet shares (PIL only): frame strips with a heat overlay on the
patch grid, the target tile boxed, per-frame bars, and titled rows composed into one PNG.

A toy row's ``picture(row, model_dir, clips, out)`` (:class:`llava.plugin.ToyRow`) draws one row per
clip x instruction: the clip's frames lit by what the method attends to / selects under that
instruction, the tile the instruction names boxed from the first frame it shows::

    rows = [(f'"{instruction}"', strip(heat_frames(clip.frames, weights_thw), target, CELL)) ...]
    compose(rows, out, "What the method attends to")

Geometry (for tests that check a sheet's size): a strip of ``T`` frames of side ``S`` is
``T * S * SCALE + (T - 1) * FRAME_GAP`` pixels wide; a sheet is ``LABEL_WIDTH`` plus the widest row wide
and ``TITLE_HEIGHT + sum(row height + ROW_GAP)`` high.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SCALE = 3  # sheet pixels per video pixel
CELL = 8  # video pixels per patch of the tiny SigLIP (56 px frames, 7 x 7 patches)
LABEL_WIDTH = 260
LABEL_CHARS = 40  # characters per label line (PIL's default font is ~6 px wide)
TITLE_HEIGHT = 30
ROW_GAP = 4
FRAME_GAP = 2
BAR_HEIGHT = 12  # one row of per-frame weights under a strip
BOX_COLOUR = (255, 40, 40)


def load_checkpoint(model_dir: str | Path):
    """``(tokenizer, model, image_processor)`` of a saved HF-format checkpoint, on the CPU in fp32, in
    eval mode (as ``llava.eval.video_infer.load_model`` loads it, without the GPU choices)."""
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(model_dir), None, get_model_name_from_path(str(model_dir)),
                                                           device_map="cpu", torch_dtype="float32")
    if processor is None:
        raise ValueError(f"{model_dir} has no vision tower: there is nothing to picture")
    return tokenizer, model.eval(), processor


def clip_pixels(model, processor, frames_thwc):
    """The pixels the model reads for ``frames_thwc`` ``(T, H, W, 3)`` uint8, as evaluation makes them."""
    from llava.mm_utils import process_video_frames

    return process_video_frames(frames_thwc, processor, getattr(model.config, "image_aspect_ratio", None))


def upsample(weights: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(h, w)`` -> ``(height, width)`` by nearest cell (any grid, e.g. 7 x 7 patches or 4 x 4 pooled tokens)."""
    weights = np.asarray(weights, dtype=np.float64)
    rows = np.arange(height) * weights.shape[0] // height
    cols = np.arange(width) * weights.shape[1] // width
    return weights[rows[:, None], cols[None, :]]


def heat(frame: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The frame dimmed, with ``weights`` (one per grid cell, scaled to their max) in a black-red-yellow ramp."""
    w = upsample(weights / max(float(np.max(weights)), 1e-8), *frame.shape[:2])
    ramp = np.stack([np.clip(3 * w, 0, 1), np.clip(3 * w - 1, 0, 1), np.clip(3 * w - 2, 0, 1)], -1) * 255
    return (0.3 * frame + 0.7 * ramp).astype(np.uint8)


def lit(frame: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The frame lit by ``weights`` in [0, 1] (one per grid cell): unattended cells fade to black."""
    w = upsample(weights, *frame.shape[:2])[..., None]
    return (frame.astype(np.float32) * (0.15 + 0.85 * w)).clip(0, 255).astype(np.uint8)


def heat_frames(frames, weights_thw: np.ndarray) -> list[np.ndarray]:
    """:func:`heat` of every frame ``(T, H, W, 3)`` under its weights ``(T, h, w)``; a frame whose weights
    are all zero (e.g. none of its tokens kept) stays dark."""
    return [heat(frame, weights_thw[t]) for t, frame in enumerate(frames)]


def strip(frames, box: tuple[int, int, int] | None = None, cell: int = CELL, scale: int = SCALE) -> Image.Image:
    """Frames side by side, upscaled, with a red box around grid cell ``box = (first frame, row, col)``
    in every frame from the first one it shows on (cells of ``cell`` video pixels)."""
    tiles = []
    for index, frame in enumerate(frames):
        frame = np.asarray(frame)
        tile = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
        if box is not None and index >= box[0]:
            top, left, side = box[1] * cell * scale, box[2] * cell * scale, cell * scale
            ImageDraw.Draw(tile).rectangle([left, top, left + side - 1, top + side - 1], outline=BOX_COLOUR, width=2)
        tiles.append(tile)
    return hstack(tiles, FRAME_GAP)


def frame_bars(values: np.ndarray, frame_width: int, height: int = BAR_HEIGHT,
               colour: tuple[int, int, int] = (200, 60, 50)) -> Image.Image:
    """One cell per frame under a strip (``frame_width`` wide each, :data:`FRAME_GAP` apart), filled from
    the left in proportion to the frame's weight in [0, 1] (e.g. a selector's weight of the frame)."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    cells = []
    for value in values:
        cell = Image.new("RGB", (frame_width, height), (235, 235, 235))
        if value > 0:
            ImageDraw.Draw(cell).rectangle([0, 0, max(1, round(value * frame_width)) - 1, height - 1], fill=colour)
        cells.append(cell)
    return hstack(cells, FRAME_GAP)


def value_bars(values, labels: list[str], width: int = 300, height: int = 18) -> Image.Image:
    """A horizontal bar per value in [0, 1], its label and value written on it (e.g. weights over encoders)."""
    image = Image.new("RGB", (width, height * len(labels)), "white")
    pen = ImageDraw.Draw(image)
    for i, (label, value) in enumerate(zip(labels, values)):
        top = i * height
        pen.rectangle([0, top + 1, width - 1, top + height - 2], fill=(235, 235, 235))
        pen.rectangle([0, top + 1, max(1, round(float(value) * (width - 1))), top + height - 2], fill=(110, 130, 200))
        pen.text((4, top + 3), f"{label}: {float(value):.3f}", fill="black")
    return image


def hstack(images: list[Image.Image], gap: int = FRAME_GAP) -> Image.Image:
    """Images side by side, ``gap`` white pixels apart, top-aligned."""
    out = Image.new("RGB", (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)),
                    "white")
    x = 0
    for image in images:
        out.paste(image, (x, 0))
        x += image.width + gap
    return out


def vstack(images: list[Image.Image], gap: int = FRAME_GAP) -> Image.Image:
    """Images one under the other, ``gap`` white pixels apart, left-aligned."""
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                    "white")
    y = 0
    for image in images:
        out.paste(image, (0, y))
        y += image.height + gap
    return out


def compose(rows: list[tuple[str, Image.Image]], out: str | Path, title: str, label_width: int = LABEL_WIDTH,
            wrap: int | None = LABEL_CHARS) -> Path:
    """One PNG: ``title`` on top, then each row's label (wrapped at ``wrap`` characters per line; ``None``:
    as written) left of its image."""
    width = label_width + max(image.width for _, image in rows)
    height = TITLE_HEIGHT + sum(image.height + ROW_GAP for _, image in rows)
    canvas = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(canvas)
    pen.text((8, 8), title, fill="black")
    y = TITLE_HEIGHT
    for label, image in rows:
        text = label if wrap is None else "\n".join(
            textwrap.fill(line, wrap) if line else line for line in label.split("\n"))
        pen.multiline_text((8, y + 4), text, fill="black")
        canvas.paste(image, (label_width, y))
        y += image.height + ROW_GAP
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def strip_width(frames: int, side: int, scale: int = SCALE) -> int:
    """Width of :func:`strip` of ``frames`` frames of ``side`` pixels."""
    return frames * side * scale + (frames - 1) * FRAME_GAP


__all__ = ["BAR_HEIGHT", "CELL", "FRAME_GAP", "LABEL_WIDTH", "ROW_GAP", "SCALE", "TITLE_HEIGHT", "clip_pixels",
           "compose", "frame_bars", "heat", "heat_frames", "hstack", "lit", "load_checkpoint", "strip", "strip_width",
           "upsample", "value_bars", "vstack"]
