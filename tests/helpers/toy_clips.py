"""Two :class:`llava.plugin.ToyClip` from synthetic scenes, as the toy zoo hands them to a picture."""

from __future__ import annotations

import random

import numpy as np

from llava.plugin import ToyClip
from llava.toy.synthetic import color_question, render_video, sample_scene

SIZE, PATCH, VIDEO_FRAMES = 56, 8, 8


def toy_clips(count: int = 2, frames: int = 4, seed: int = 0) -> list[ToyClip]:
    """``count`` clips of ``frames`` frames (every ``VIDEO_FRAMES // frames``-th frame of an 8-frame scene),
    asking about the scene's first two tiles."""
    rng, step = random.Random(seed), VIDEO_FRAMES // frames
    clips = []
    for index in range(count):
        scene = sample_scene(rng, VIDEO_FRAMES, SIZE // PATCH)
        video = render_video(scene, SIZE, PATCH)[::step][:frames]
        tiles = scene.objects[:2]
        targets = tuple((-(-obj.appears // step), obj.row, obj.col) for obj in tiles)
        clips.append(ToyClip(f"clip{index}", np.ascontiguousarray(video),
                             tuple(color_question(obj.rim) for obj in tiles), targets))
    return clips
