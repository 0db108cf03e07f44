"""Figures of HICom's rows of the embedded default (:mod:`hicom_plugin.toy`, :mod:`llava.toy.zoo`), PIL only.

* :func:`attention_maps`: the attention of the local branch (each patch's weight inside its group)
  and of the global branch (mean over queries and heads) for one video under one instruction;
* :func:`toy_picture`: the toy zoo's sheet (:class:`llava.plugin.ToyRow.picture`), the paper's Fig. 6
  at toy scale: per clip and instruction, both branches' attention over the clip's frames, the tile
  the instruction names boxed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llava.toy.sheet import clip_pixels, compose, heat_frames, load_checkpoint, strip, vstack


def attention_maps(model, pixels: torch.Tensor, instruction: str) -> dict[str, np.ndarray]:
    """``{"local": (T, H, W), "global": (T, H, W)}`` attention of a HICom model's branches for one
    video (``pixels`` ``(T, 3, S, S)``) under ``instruction``; branches the model lacks are left out."""
    compressor = model.get_model().mm_projector.compressor
    compressor.record_attention(True)
    try:
        with torch.no_grad():
            model.encode_visual_items([pixels], ["video"], [instruction])
        attention = compressor.last_attention
    finally:
        compressor.record_attention(False)
    t = pixels.shape[0]
    grid = model.get_vision_tower().num_patches_per_side
    maps = {}
    if "local" in attention:
        weights, coords = attention["local"][0].float(), attention["local_coords"][0]
        valid = attention["local_valid"][0]
        local = torch.zeros(t, grid, grid)
        c = coords[valid]
        local.index_put_((c[:, 0], c[:, 1], c[:, 2]), weights[valid], accumulate=True)
        maps["local"] = local.numpy()
    if "global" in attention:
        weights = attention["global"][0].float().mean(dim=(0, 1))  # over heads and queries
        maps["global"] = weights[: t * grid * grid].reshape(t, grid, grid).numpy()
    return maps


def toy_picture(row, model_dir: str | Path, clips, out: str | Path) -> Path:
    """The toy zoo's sheet of a HICom checkpoint: one row per clip x instruction (``clips``:
    :class:`llava.plugin.ToyClip`), the local branch's attention (each patch's weight in its group)
    over the frames, the global branch's (mean over heads and queries) under it, the tile the
    instruction names boxed."""
    _, model, processor = load_checkpoint(model_dir)
    rows = []
    for clip in clips:
        pixels = clip_pixels(model, processor, clip.frames)
        for instruction, target in zip(clip.instructions, clip.targets):
            maps = attention_maps(model, pixels, instruction)
            strips = [strip(heat_frames(clip.frames, weights), target) for weights in maps.values()]
            rows.append((f"{clip.name}: {' over '.join(maps)}\n\"{instruction}\"", vstack(strips)))
    return compose(rows, out, f"{row.label}: attention of the compressor's branches under each instruction "
                              "(red box: the tile it names)")
