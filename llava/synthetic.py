"""Synthetic videos and images with LLaVA annotations for the three training stages (offline, seeded).

Each scene holds a few objects, each a (shape, colour) pair with a start position, a straight-line
motion and a frame at which it appears. Videos are real H.264 mp4 files (PyAV); images are PNGs of a
single frame. Annotations use the project's real formats:

* ``stage1.json``: alignment pairs, the human turn is only the placeholder, the answer a caption
  naming every object (images and videos);
* ``stage2.json``: instruction-followed descriptions, "Describe the red triangle." -> how that object
  moves and when it appears (videos);
* ``stage3.json``: multi-turn QA conversations about named objects (videos) plus text-only turns;
* ``data.yaml``: a mixture of the three with ``sampling_strategy`` entries.

Everything is a function of ``seed``: the same seed gives the same bytes of annotations.

    python -m llava.synthetic --out playground/data/synthetic --videos 24 --images 16
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llava.utils import write_video

logger = logging.getLogger(__name__)

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    x: float  # start centre, as a fraction of the frame
    y: float
    direction: str
    appears: int  # first visible frame

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def centre(self, frame: int, frames: int) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        travel = 0.35 * frame / max(frames - 1, 1)
        return self.x + dx * travel, self.y + dy * travel


def _sample_scene(rng: random.Random, frames: int, max_objects: int = 3) -> list[SceneObject]:
    count = rng.randint(2, max_objects)
    pairs = rng.sample([(s, c) for s in SHAPES for c in COLOURS], count)
    objects = []
    for shape, colour in pairs:
        direction = rng.choice(sorted(DIRECTIONS))
        dx, dy = DIRECTIONS[direction]
        # keep the whole path inside the frame
        x = rng.uniform(0.2, 0.45) if dx > 0 else rng.uniform(0.55, 0.8) if dx < 0 else rng.uniform(0.2, 0.8)
        y = rng.uniform(0.2, 0.45) if dy > 0 else rng.uniform(0.55, 0.8) if dy < 0 else rng.uniform(0.2, 0.8)
        appears = rng.choice([0, 0, frames // 4, frames // 2])
        objects.append(SceneObject(shape, colour, round(x, 3), round(y, 3), direction, appears))
    return objects


def render_frame(objects: list[SceneObject], frame: int, frames: int, size: int) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 frame: a dark background and every object visible at ``frame``."""
    image = np.full((size, size, 3), 24, dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    radius = size * 0.09
    for obj in objects:
        if frame < obj.appears:
            continue
        cx, cy = (c * size for c in obj.centre(frame, frames))
        if obj.shape == "square":
            mask = (abs(xx - cx) <= radius) & (abs(yy - cy) <= radius)
        elif obj.shape == "circle":
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        else:  # triangle pointing up
            top, base = cy - radius, cy + radius
            half = (yy - top) / (2 * radius) * radius
            mask = (yy >= top) & (yy <= base) & (abs(xx - cx) <= half)
        image[mask] = COLOURS[obj.colour]
    return image


def _when(obj: SceneObject, frames: int) -> str:
    if obj.appears == 0:
        return "is there from the start"
    return "appears in the middle" if obj.appears >= frames // 2 else "appears shortly after the start"


def caption(objects: list[SceneObject]) -> str:
    names = [o.name for o in objects]
    return "A " + ", a ".join(names[:-1]) + f" and a {names[-1]}." if len(names) > 1 else f"A {names[0]}."


def describe(obj: SceneObject, frames: int) -> str:
    return f"The {obj.name} {_when(obj, frames)} and moves {obj.direction}."


def _human(text: str) -> dict:
    return {"from": "human", "value": text}


def _gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def make_dataset(out: str | Path, seed: int = 0, videos: int = 24, images: int = 16, frames: int = 16,
                 size: int = 64, fps: int = 8) -> dict[str, Path]:
    """Writes media and annotations under ``out``; returns the annotation files by name."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    stage1, stage2, stage3 = [], [], []
    for index in range(images):
        objects = _sample_scene(rng, 1)
        name = f"images/img_{index:04d}.png"
        _write_png(out / name, render_frame(objects, 0, 1, size))
        stage1.append({"id": f"img{index}", "image": name,
                       "conversations": [_human("<image>"), _gpt(caption(objects))]})
    for index in range(videos):
        objects = _sample_scene(rng, frames)
        name = f"videos/vid_{index:04d}.mp4"
        clip = np.stack([render_frame(objects, t, frames, size) for t in range(frames)])
        write_video(out / name, clip, fps=fps)
        visible = [o for o in objects if o.appears == 0]
        stage1.append({"id": f"vid{index}", "video": name,
                       "conversations": [_human("<video>"), _gpt(caption(visible or objects))]})
        target = rng.choice(objects)
        stage2.append({"id": f"vid{index}", "video": name, "conversations": [
            _human(f"<video>\nDescribe the {target.name}."), _gpt(describe(target, frames))]})
        first, second = rng.sample(objects, 2)
        stage3.append({"id": f"vid{index}", "video": name, "conversations": [
            _human(f"<video>\nWhich way does the {first.name} move?"), _gpt(first.direction.capitalize() + "."),
            _human(f"When does the {second.name} appear?"), _gpt(_when(second, frames).capitalize() + "."),
        ]})
    for index in range(max(2, videos // 8)):
        colour = rng.choice(sorted(COLOURS))
        stage3.append({"id": f"text{index}", "conversations": [
            _human(f"Name a shape that could be {colour}."), _gpt(rng.choice(SHAPES).capitalize() + ".")]})
    files = {}
    for stage, records in (("stage1", stage1), ("stage2", stage2), ("stage3", stage3)):
        files[stage] = out / f"{stage}.json"
        files[stage].write_text(json.dumps(records, indent=1))
    files["mixture"] = out / "data.yaml"
    files["mixture"].write_text("datasets:\n  - json_path: stage2.json\n    sampling_strategy: all\n"
                                "  - json_path: stage3.json\n    sampling_strategy: first:50%\n")
    return files


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    files = make_dataset(args.out, args.seed, args.videos, args.images, args.frames, args.size)
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
