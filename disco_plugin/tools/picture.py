"""The "distinct and coherent" picture: which token group each instance is paired with, and where that
group looks in every frame, for a few synthetic clips (PIL only).

For each model (the short fit with VCD + TFC, and the same fit without them), each clip, each
instance: a label (the phrase and its group) and the clip's frames lit by the group's attention in that
frame (its tokens' focus maps, scaled to each frame's maximum; unattended patches fade to black).

    python -m disco_plugin.tools.picture --siglip playground/tiny/siglip-tiny --out disco_picture.png
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image, ImageDraw

from .shortfit import Clips, fit, inspect, make_clips

SCALE = 3
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
    heat = np.kron(attention, np.ones((size // attention.shape[0], size // attention.shape[1])))[..., None]
    lit = frame.astype(np.float32) * (0.15 + 0.85 * heat)  # unattended patches fade to black
    return Image.fromarray(lit.clip(0, 255).astype(np.uint8)).resize((size * SCALE, size * SCALE), Image.NEAREST)


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
