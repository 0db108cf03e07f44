"""A short fit of a tiny DisCo projector on synthetic clips with known tiles, and its measures.

The clips come from :mod:`llava.toy.synthetic` (three two-tone tiles on the patch grid, appearing at
different times), their features from the tiny SigLIP vision tower (layer -2, as the model reads them),
their instance phrases from :func:`llava.toy.synthetic.caption_instances`. Every fit shares a stand-in
for the LM loss (a linear probe naming the clip's (rim, centre) pairs from the max over its tokens) and
adds VCD and/or TFC with the given weights. Used by the tests of the two claims and by the picture.
"""

from __future__ import annotations

import random
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import SiglipConfig, SiglipVisionModel

from llava.model.visual import VisualBatch
from llava.model.weights import load_part_strictly
from llava.toy import synthetic

from ..analysis import focus_location_variance, matched_group_states, matched_tokens, mean_pairwise_cosine
from ..projector import TFC, VCD, DiscoProjector

PATCH = 8  # the tiny SigLIP's patch size: one tile per patch


@dataclass
class Clips:
    """``features (N, T, G, G, D)``, ``pixels (N, T, S, S, 3)`` uint8, per-clip ``instances``, stand-in
    ``targets (N, 25)``, the ``scenes``."""

    features: torch.Tensor
    pixels: np.ndarray
    instances: list[list[str]]
    targets: torch.Tensor
    scenes: list

    def batch(self, index: list[int]) -> VisualBatch:
        t = self.features.shape[1]
        return VisualBatch(self.features[index].flatten(0, 1), [t] * len(index), ["video"] * len(index),
                           fields={"instances": [self.instances[i] for i in index]})


def make_clips(siglip_folder: str | Path, count: int = 16, frames: int = 8, grid: int = 7, seed: int = 0) -> Clips:
    folder = Path(siglip_folder)
    tower = SiglipVisionModel(SiglipConfig.from_pretrained(folder).vision_config).eval()
    load_part_strictly(tower, folder, "vision_model.", "SigLIP vision tower")
    rng = random.Random(seed)
    scenes = [synthetic.sample_scene(rng, frames, grid) for _ in range(count)]
    pixels = np.stack([synthetic.render_video(s, grid * PATCH, PATCH) for s in scenes])
    x = torch.tensor(pixels).float().div(127.5).sub(1).permute(0, 1, 4, 2, 3).flatten(0, 1)
    with torch.no_grad():
        feats = tower(pixel_values=x, output_hidden_states=True).hidden_states[-2]
    colors = list(synthetic.COLORS)
    targets = torch.zeros(count, len(colors) ** 2)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            targets[i, colors.index(obj.rim) * len(colors) + colors.index(obj.centre)] = 1
    return Clips(feats.view(count, frames, grid, grid, -1), pixels, [synthetic.caption_instances(s) for s in scenes],
                 targets, scenes)


def fit(siglip_folder: str | Path, clips: Clips, vcd: float, tfc: float, steps: int = 60, batch: int = 4,
        lr: float = 3e-2, seed: int = 0) -> DiscoProjector:
    """The tiny-preset projector after ``steps`` AdamW steps of stand-in loss + ``vcd`` VCD + ``tfc`` TFC."""
    torch.manual_seed(seed)
    config = types.SimpleNamespace(mm_projector_type="disco", disco_preset="tiny", mm_vision_tower=str(siglip_folder),
                                   mm_hidden_size=clips.features.shape[-1], hidden_size=64,
                                   aux_loss_weights={VCD: vcd, TFC: tfc})
    model = DiscoProjector(config).train()
    probe = torch.nn.Linear(64, clips.targets.shape[1])
    params = [p for p in model.parameters() if p.requires_grad] + list(probe.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr)
    count = clips.features.shape[0]
    for step in range(steps):
        index = [(step * batch + i) % count for i in range(batch)]
        out = model(clips.batch(index))
        logits = probe(torch.stack(out.tokens)).amax(1)  # a tile is named when some token names it
        loss = F.binary_cross_entropy_with_logits(logits, clips.targets[index])
        loss = loss + sum(config.aux_loss_weights[name] * value for name, value in out.losses.items())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def inspect(model: DiscoProjector, clips: Clips) -> dict:
    """One pass over every clip with the VCD heads on (for the matching): ``states``, ``focus``,
    ``frame_valid``, ``assignment`` and the instance ``mask``."""
    config = model._config
    saved = config.aux_loss_weights
    config.aux_loss_weights = {VCD: 1.0, TFC: 1.0}
    model.keep_focus = True
    index = list(range(clips.features.shape[0]))
    try:
        with torch.no_grad():
            batch = clips.batch(index)
            out = model.resampler(batch.features, batch.frames_per_item)
            model(batch)
    finally:
        config.aux_loss_weights = saved
        model.keep_focus = False
    assignment = model.last["assignment"]
    counts = torch.tensor([len(clips.instances[i]) for i in index])
    mask = torch.arange(assignment.shape[1])[None] < counts[:, None]
    return {"states": out.states, "focus": out.focus, "frame_valid": out.frame_valid, "assignment": assignment,
            "mask": mask}


def measure(model: DiscoProjector, clips: Clips) -> tuple[float, float]:
    """(centred mean pairwise cosine of the matched groups' states, focus-location variance across frames
    of the matched tokens)."""
    seen, cfg = inspect(model, clips), model.disco
    groups = matched_group_states(seen["states"], seen["assignment"], cfg.num_groups, cfg.group_size)
    cosine = mean_pairwise_cosine(groups, seen["mask"], centre=seen["states"].mean((0, 1)))
    grid = clips.features.shape[2:4]
    variance = focus_location_variance(seen["focus"], seen["frame_valid"],
                                       matched_tokens(seen["assignment"], cfg.group_size), tuple(grid))
    return float(cosine), float(variance)
