"""The mixer's per-encoder weights over a set of videos, as a heat map PNG (PIL only) and a JSON.

MERV's qualitative claim is that the weights follow the content (high motion -> ViViT, text in the
frame -> SigLIP); this draws one row per video, one column per encoder, the weight written in each
cell. ``python -m merv_plugin.figures --model-path M --out weights.png VIDEO...``

:func:`toy_picture` is the toy zoo's sheet (:class:`llava.plugin.ToyRow.picture`): per clip and
instruction, the clip's frames and the mixer's weight of each encoder. MERV's mixer reads the video
only, so a clip's two rows are the same: their titles say so, which is the point of the row.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from llava.toy.sheet import clip_pixels, compose, hstack, load_checkpoint, strip, value_bars

CELL_W, CELL_H, LABEL_W, HEADER_H = 110, 28, 220, 30


def mixer_weights(model, processor, videos: list[Path]) -> np.ndarray:
    """``(V, E)`` mixer weights of each video (decoded as the model's processor asks)."""
    from llava.video import load_video_frames

    tower, projector = model.get_vision_tower(), model.get_model().mm_projector
    if not hasattr(projector, "mixer_weights"):
        raise ValueError(f"the model's projector ({type(projector).__name__}) is not MERV's")
    items = []
    for path in videos:
        frames = load_video_frames(path, num_frames=processor.frames_to_decode(processor.num_frames or 16)).frames
        items.append(processor.process_clip(frames))
    with torch.no_grad():
        weights = projector.mixer_weights(tower.encode_batch(items, ["video"] * len(items)))
    if weights is None:
        raise ValueError(f"fusion {projector.merv.fusion!r} has no per-encoder weights")
    return weights.float().cpu().numpy()


def clip_mixer_weights(model, pixels, instruction: str | None = None) -> np.ndarray:
    """``(E,)`` mixer weights of one clip's pixels (``{encoder: (T_e, 3, S_e, S_e)}``, as
    ``llava.mm_utils.process_video_frames`` makes them), the instruction handed along as every
    projector gets it (MERV's mixer does not read it)."""
    tower, projector = model.get_vision_tower(), model.get_model().mm_projector
    if not hasattr(projector, "mixer_weights"):
        raise ValueError(f"the model's projector ({type(projector).__name__}) is not MERV's")
    batch = replace(tower.encode_batch([pixels], ["video"]), instructions=None if instruction is None else [instruction])
    with torch.no_grad():
        weights = projector.mixer_weights(batch)
    if weights is None:
        raise ValueError(f"fusion {projector.merv.fusion!r} has no per-encoder weights")
    return weights[0].float().cpu().numpy()


def toy_picture(row, model_dir: str | Path, clips, out: str | Path) -> Path:
    """The toy zoo's sheet of a MERV checkpoint: per clip (:class:`llava.plugin.ToyClip`) and instruction,
    the frames (the tile the instruction names boxed) and the mixer's weight of each encoder."""
    _, model, processor = load_checkpoint(model_dir)
    projector = model.get_model().mm_projector
    reads = getattr(projector, "uses_instructions", False)
    note = "" if reads else " (the mixer does not read the instruction: same weights for both)"
    rows = []
    for clip in clips:
        pixels = clip_pixels(model, processor, clip.frames)
        for instruction, target in zip(clip.instructions, clip.targets):
            weights = clip_mixer_weights(model, pixels, instruction)
            rows.append((f"{clip.name}{note}\n\"{instruction}\"",
                         hstack([strip(clip.frames, target), value_bars(weights, projector.encoder_names)], 8)))
    return compose(rows, out, f"{row.label}: the mixer's weight of each encoder under each instruction")


def heat_map(weights: np.ndarray, rows: list[str], columns: list[str], out: Path, title: str = "") -> Path:
    """Rows x columns of weights in [0, 1]; darker blue = larger."""
    height = HEADER_H * 2 + CELL_H * len(rows)
    image = Image.new("RGB", (LABEL_W + CELL_W * len(columns) + 10, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), title, fill="black")
    for j, name in enumerate(columns):
        draw.text((LABEL_W + j * CELL_W + 6, HEADER_H + 8), name, fill="black")
    for i, name in enumerate(rows):
        top = HEADER_H * 2 + i * CELL_H
        draw.text((8, top + 8), name[:34], fill="black")
        for j in range(len(columns)):
            value = float(weights[i, j])
            shade = int(255 * (1 - value))
            left = LABEL_W + j * CELL_W
            draw.rectangle([left, top, left + CELL_W - 2, top + CELL_H - 2], fill=(shade, shade, 255))
            draw.text((left + 8, top + 8), f"{value:.3f}", fill="white" if value > 0.5 else "black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--out", required=True, help="PNG to write; the weights go to the same name with .json")
    parser.add_argument("videos", nargs="+", type=Path)
    args = parser.parse_args(argv)
    from llava.model.builder import load_pretrained_model

    _, model, processor, _ = load_pretrained_model(args.model_path, None, "x", device_map="cpu", torch_dtype="float32")
    weights = mixer_weights(model, processor, args.videos)
    names = model.get_model().mm_projector.encoder_names
    heat_map(weights, [v.name for v in args.videos], names, Path(args.out), title="MERV mixer weight per encoder")
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"encoders": names, "videos": {v.name: w.tolist() for v, w in zip(args.videos, weights)}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
