"""The "distinct and coherent" picture: which token group each instance is paired with, and where that
group looks in every frame, for a few synthetic clips (PIL only).

For each model (the short fit with VCD + TFC, and the same fit without them), each clip, each
instance: a label (the phrase and its group) and the clip's frames lit by the group's attention in that
frame (its tokens' focus maps, scaled to each frame's maximum; unattended patches fade to black).

    python -m disco_plugin.tools.picture --siglip playground/tiny/siglip-tiny --out disco_picture.png

:func:`toy_picture` is the toy zoo's sheet (:class:`llava.plugin.ToyRow.picture`) of a trained checkpoint:
per clip and instruction, the focus of the query token that looks most at the tile the instruction names.
DisCo's resampler reads the video only, so the instruction picks which token is shown, not where it looks.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from llava.toy.sheet import SCALE, clip_pixels, compose, lit, load_checkpoint, strip

from .shortfit import Clips, fit, inspect, make_clips

LABEL_WIDTH = 300
GAP = 4


def group_frame_attention(seen: dict, clip: int, slot: int, group_size: int, grid: tuple[int, int]) -> np.ndarray:
    """``(T, H, W)`` attention of the group paired with instance ``slot`` of ``clip``, each frame scaled to
    its maximum."""
    group = int(seen["assignment"][clip, slot])
    focus = seen["focus"][clip, group * group_size:(group + 1) * group_size].sum(0)  # (T, P)
    focus = focus / focus.amax(-1, keepdim=True).clamp(min=torch.finfo(focus.dtype).tiny)
    return focus.view(-1, *grid).numpy()


def _panel(frame: np.ndarray, attention: np.ndarray) -> Image.Image:
    size = frame.shape[0]
    return Image.fromarray(lit(frame, attention)).resize((size * SCALE, size * SCALE), Image.NEAREST)


def token_focus(model, pixels: torch.Tensor) -> torch.Tensor:
    """``(K, T, h, w)`` each query token's focus (cross-attention, mean over heads, summed over layers) on
    every frame's patches, for one video ``pixels`` ``(T, 3, S, S)``."""
    projector = model.get_model().mm_projector
    if not hasattr(projector, "keep_focus"):
        raise ValueError(f"the model's projector ({type(projector).__name__}) is not DisCo's")
    projector.keep_focus = True
    try:
        with torch.no_grad():
            model.encode_visual_items([pixels], ["video"])
        focus = projector.last["focus"][0, :, : pixels.shape[0]].float().cpu()  # (K, T, P)
    finally:
        projector.keep_focus, projector.last = False, None
    side = math.isqrt(focus.shape[-1])
    return focus.view(*focus.shape[:2], side, side)


def focus_on(focus: torch.Tensor, target: tuple[int, int, int], cell_grid: int) -> torch.Tensor:
    """``(K,)`` each token's focus on the target tile ``(first frame, row, col)`` of a ``cell_grid`` x
    ``cell_grid`` patch grid, summed over the frames from the first one it shows on."""
    first, row, col = target
    side = focus.shape[-1]
    r, c = row * side // cell_grid, col * side // cell_grid  # the tile's cell on the focus grid
    return focus[:, first:, r, c].sum(-1)


def toy_picture(row, model_dir, clips, out):
    """The toy zoo's sheet of a DisCo checkpoint: per clip (:class:`llava.plugin.ToyClip`) and instruction,
    the frames lit by the focus of the token that looks most at the tile the instruction names (each
    frame scaled to its maximum), the tile boxed."""
    _, model, processor = load_checkpoint(model_dir)
    grid = model.get_vision_tower().num_patches_per_side
    rows = []
    for clip in clips:
        focus = token_focus(model, clip_pixels(model, processor, clip.frames))
        for instruction, target in zip(clip.instructions, clip.targets):
            token = int(focus_on(focus, target, grid).argmax())
            maps = focus[token] / focus[token].amax(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
            frames = [lit(frame, maps[t].numpy()) for t, frame in enumerate(clip.frames)]
            rows.append((f"{clip.name}: token {token} of {focus.shape[0]} (the one most on the tile; "
                         f"the resampler does not read the instruction)\n\"{instruction}\"",
                         strip(frames, target, clip.frames.shape[1] // grid)))
    return compose(rows, out, f"{row.label}: where the query token most focused on the named tile looks "
                              "(red box: the tile)")


def draw(models: dict[str, torch.nn.Module], clips: Clips, shown: list[int]) -> Image.Image:
    frames, size = clips.pixels.shape[1], clips.pixels.shape[2]
    grid = tuple(clips.features.shape[2:4])
    cell = size * SCALE + GAP
    rows = []
    for name in models:
        rows.append((name, None, None))
        for clip in shown:
            rows += [(name, clip, slot) for slot in range(len(clips.instances[clip]))]
    image = Image.new("RGB", (LABEL_WIDTH + frames * cell, len(rows) * cell), "white")
    pen = ImageDraw.Draw(image)
    seen = {name: inspect(model, clips) for name, model in models.items()}
    for row, (name, clip, slot) in enumerate(rows):
        y = row * cell
        if clip is None:
            pen.text((4, y + cell // 2), f"{name}: frames 0..{frames - 1} ->", fill="black")
            continue
        group = int(seen[name]["assignment"][clip, slot])
        pen.text((4, y + 4), f"clip {clip}: {clips.instances[clip][slot]}", fill="black")
        pen.text((4, y + 20), f"-> token group {group}", fill="black")
        attention = group_frame_attention(seen[name], clip, slot, models[name].disco.group_size, grid)
        for t in range(frames):
            image.paste(_panel(clips.pixels[clip, t], attention[t]), (LABEL_WIDTH + t * cell, y))
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--siglip", required=True, help="a (tiny) SigLIP folder with its text tower")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--clips", type=int, default=3, help="clips drawn")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    clips = make_clips(args.siglip)
    models = {"VCD + TFC": fit(args.siglip, clips, 1.0, 1.0, steps=args.steps),
              "neither": fit(args.siglip, clips, 0.0, 0.0, steps=args.steps)}
    draw(models, clips, list(range(args.clips))).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
