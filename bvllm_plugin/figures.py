"""B-VLLM's picture sheet for the toy zoo (:class:`llava.plugin.ToyRow.picture`): which frames each
selector slot weighs, per clip and instruction, on the deterministic eval path.

Each row is the clip's frames (the tile the instruction names boxed) with one bar per slot under them:
slot k's softmax weight of every frame (``BVLLMProjector.last_selection["weights"]``), the slots the
γ merge kept named in the label. The spatial sampler's Q-Former cross-attention is not exposed by the
projector, so the sheet shows the frame selection only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llava.toy.sheet import SCALE, clip_pixels, compose, frame_bars, load_checkpoint, strip, vstack

from .projector import BVLLMProjector


def frame_selection(model, pixels: torch.Tensor, instruction: str) -> dict:
    """What B-VLLM selects for one video ``pixels`` ``(T, 3, S, S)`` under ``instruction``:
    ``weights`` ``(K, T)`` (each slot's weights over the frames, summing to one), ``kept`` ``(K,)`` bool
    (slots left after the γ merge) and ``tokens`` (the item's visual token count)."""
    projector = model.get_model().mm_projector
    if not isinstance(projector, BVLLMProjector):
        raise ValueError(f"the model's projector ({type(projector).__name__}) is not B-VLLM's")
    with torch.no_grad():
        tokens = model.encode_visual_items([pixels], ["video"], [instruction])[0]
    state = projector.last_selection
    t = pixels.shape[0]
    return {"weights": state["weights"][0, :, :t].float().cpu(), "kept": state["kept"][0].cpu(),
            "tokens": tokens.shape[0]}


def toy_picture(row, model_dir: str | Path, clips, out: str | Path) -> Path:
    """The toy zoo's sheet of a B-VLLM checkpoint: per clip (:class:`llava.plugin.ToyClip`) and
    instruction, the frames with each selector slot's weights over them (module docstring)."""
    _, model, processor = load_checkpoint(model_dir)
    rows = []
    for clip in clips:
        pixels = clip_pixels(model, processor, clip.frames)
        side = clip.frames.shape[2] * SCALE
        for instruction, target in zip(clip.instructions, clip.targets):
            seen = frame_selection(model, pixels, instruction)
            kept = seen["kept"].nonzero().flatten().tolist()
            bars = [frame_bars(weights.numpy(), side) for weights in seen["weights"]]
            rows.append((f"{clip.name}: slots {kept} kept, {seen['tokens']} tokens\n\"{instruction}\"",
                         vstack([strip(clip.frames, target), *bars])))
    return compose(rows, out, f"{row.label}: each selector slot's weight of every frame (one bar per slot; "
                              "red box: the tile the instruction names)")


__all__ = ["frame_selection", "toy_picture"]
