"""The token reducers' picture sheet for the toy zoo (:class:`llava.plugin.ToyRow.picture`): which of
the reference checkpoint's pooled tokens a reducer keeps, per frame, under each instruction.

How "kept" is read, from the reducers' public hooks only:

* stage ``tokens`` (pooling, merging, pruning before the LLM): the video's unreduced tokens go through
  ``reduce_tokens`` with gradients on; each input token's weight is its share in the output
  (``d sum(output) / d token``, averaged over channels): 1 for a token passed on as it is, 0 for a
  dropped one, ``1/m`` for each of ``m`` tokens averaged into one. These reducers do not read the
  instruction, so both rows of a clip are the same.
* stage ``llm`` (FastV): the prompt forward runs under :func:`llava.model.token_reduction.llm_reduction`
  and the session's ``kept_positions`` are the visual tokens that go on past layer K, chosen by the
  last prompt token's attention: the picture differs with the instruction.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import tokenizer_image_token
from llava.model.token_reduction import llm_reduction
from llava.toy.sheet import clip_pixels, compose, heat_frames, load_checkpoint, strip

from .layout import VideoLayout


def token_shares(model, pixels: torch.Tensor, instruction: str, name: str, options: dict) -> np.ndarray:
    """``(T, s, s)``: each pooled token's share in the output of the stage-``tokens`` reducer ``name``
    (module docstring) for one video ``pixels`` ``(T, 3, S, S)``; leaves the reducer set on the model."""
    inner = model.get_model()
    inner.set_token_reducer(None)
    with torch.no_grad():
        full = model.encode_visual_items([pixels], ["video"], [instruction])[0]
    reducer = inner.set_token_reducer(name, options)
    if reducer.stage != "tokens":
        raise ValueError(f"token reducer {name!r} runs at stage {reducer.stage!r}, not 'tokens'")
    with torch.no_grad():
        batch = replace(model.get_vision_tower().encode_batch([pixels], ["video"]), instructions=[instruction])
    tokens = full.detach().clone().requires_grad_(True)
    out = reducer.reduce_tokens([tokens], batch)[0]
    (grad,) = torch.autograd.grad(out.sum(), tokens)
    layout = VideoLayout.read(full.shape[0], pixels.shape[0], name)
    grid, _ = layout.split(grad)  # (T, s*s, D)
    return grid.mean(-1).view(layout.frames, layout.side, layout.side).numpy()


def llm_kept(model, tokenizer, pixels: torch.Tensor, instruction: str, name: str, options: dict,
             conv_mode: str = "qwen_1_5") -> np.ndarray:
    """``(T, s, s)`` 0/1: the visual tokens the stage-``llm`` reducer ``name`` keeps past its layer when the
    model reads ``instruction`` about the video ``pixels`` ``(T, 3, S, S)`` in the chat template."""
    inner = model.get_model()
    inner.set_token_reducer(None)
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{instruction}")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
    at = int((ids == IMAGE_TOKEN_INDEX).nonzero()[0])
    with torch.no_grad():
        visual = model.encode_visual_items([pixels], ["video"], [instruction])[0]
        embed = inner.embed_tokens
        embeds = torch.cat([embed(ids[:at]), visual.to(embed.weight.dtype), embed(ids[at + 1:])])[None]
        reducer = inner.set_token_reducer(name, options)
        if reducer.stage != "llm":
            raise ValueError(f"token reducer {name!r} runs at stage {reducer.stage!r}, not 'llm'")
        with llm_reduction(model, reducer, [[(at, at + visual.shape[0])]]) as session:
            model(inputs_embeds=embeds, use_cache=False)
    layout = VideoLayout.read(visual.shape[0], pixels.shape[0], name)
    if layout.position not in ("one_token", "no_token"):
        raise ValueError(f"{name}: the picture reads kept tokens of one_token / no_token layouts, not {layout.position!r}")
    kept = session.kept_positions[0]
    kept = kept[(kept >= at) & (kept < at + layout.num_visual)] - at
    mask = torch.zeros(layout.num_visual)
    mask[kept] = 1.0
    return mask.view(layout.frames, layout.side, layout.side).numpy()


def kept_map(model, tokenizer, pixels: torch.Tensor, instruction: str, name: str, options: dict) -> np.ndarray:
    """``(T, s, s)`` what the reducer ``name`` keeps of one video under ``instruction`` (module docstring)."""
    from llava.model.token_reduction.registry import TOKEN_REDUCERS

    stage = TOKEN_REDUCERS.get(name).stage
    if stage == "tokens":
        return token_shares(model, pixels, instruction, name, options)
    if stage == "llm":
        return llm_kept(model, tokenizer, pixels, instruction, name, options)
    raise ValueError(f"token reducer {name!r} runs at stage {stage!r}: the picture reads stages 'tokens' and 'llm'")


def toy_picture(row, model_dir: str | Path, clips, out: str | Path) -> Path:
    """The toy zoo's sheet of ``row.reducer`` (with ``row.reducer_options``) on the reference checkpoint
    ``model_dir``: per clip (:class:`llava.plugin.ToyClip`) and instruction, the frames lit by the pooled
    tokens the reducer keeps (dark: dropped), the tile the instruction names boxed."""
    tokenizer, model, processor = load_checkpoint(model_dir)
    options = dict(row.reducer_options)
    rows = []
    for clip in clips:
        pixels = clip_pixels(model, processor, clip.frames)
        for instruction, target in zip(clip.instructions, clip.targets):
            kept = kept_map(model, tokenizer, pixels, instruction, row.reducer, options)
            count = int((kept > 1e-6).sum())
            rows.append((f"{clip.name}: {count} of {kept.size} pooled tokens contribute\n\"{instruction}\"",
                         strip(heat_frames(clip.frames, np.clip(kept, 0, None)), target)))
    model.get_model().set_token_reducer(None)
    return compose(rows, out, f"{row.label}: the pooled tokens {row.reducer} keeps (bright), per frame "
                              "(red box: the tile the instruction names)")


__all__ = ["kept_map", "llm_kept", "token_shares", "toy_picture"]
