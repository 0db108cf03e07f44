"""Synthetic videos whose questions depend on the instruction, with annotations for every stage.

The scenes are built on the vision tower's patch grid (``size // patch`` cells of ``patch`` pixels; the
tiny SigLIP sees 56 px frames as 7 x 7 patches of 8 px). Every scene holds three two-tone tiles, each
filling one cell: a rim of one color around a centre of another (of red, green, blue, yellow,
purple; rims all different, centres all different):

* two tiles share one 3 x 3 block of cells (a random full block), i.e. one spatial group of a
  ``(4, 3, 3)`` local compressor, at random cells of the block (so the tile asked about is usually
  not at the group's centre); no two tiles of a scene are neighbours, so the tokens of a 2 x 2
  pooling (OneVision's) hold at most one tile each;
* the third stands alone outside that block;
* each tile appears at the start, a quarter of the way in, or half way in.

A question names a tile by its rim and asks for the color of its centre ("What color is the centre
of the red tile?"), with the five colors as options. Averaging the block's group mixes two rims
and two centres: which centre belongs to which rim is a binding the mean can only keep through the
features' non-linearity, while an instruction-conditioned compressor can attend to the named tile.
(Shapes were the first design: the random tiny SigLIP's features barely encode an 8 px shape, 4% of
their variance against 84% for color, and a contrastively tuned text tower did not learn shape
names in 600 steps, so both attributes are colors.)

Files (the project's real formats; media paths relative to ``out``):

* ``stage1.json``: alignment captions for images and videos (the human turn is only the placeholder),
  each with ``instances``: the caption's phrase for every tile it drew, in the caption's order;
* ``stage2.json``: instruction-followed descriptions ("Describe the red tile." -> its centre, place
  and time of appearance), one single-turn record per tile;
* ``stage3.json``: single-turn instruction data, as LLaVA-OneVision mixes it: the eval's
  multiple-choice question in MVBench's prompt (one per tile), the reverse question ("Which tile has
  a blue centre?"), a caption asked for in words, the rims present, two descriptions, and a few
  text-only turns;
* ``stage3_mcqa.json``: the multiple-choice records of ``stage3.json`` alone (the toy-scale ablation's
  stage 3: the benchmark's format, one question per tile);
* ``data.yaml``: a mixture of stage 2 and half of stage 3;
* ``eval/json/moving_attribute.json`` + ``eval/video/clevrer/video_validation/*.mp4``: the held-out
  multiple-choice set in MVBench's released layout (the "Moving Attribute" task, whose videos are
  CLEVRER's), read by ``llava.eval`` with ``--benchmark mvbench``. Candidates are the five colors
  in one fixed order, so the letter is a function of the color; extra keys (``cell``,
  ``at_group_centre``, ``block_centres``, ``objects``: the whole scene) are ignored by the loader and
  kept for analysis and figures.

Everything is a function of ``seed``: the same seed gives the same bytes of annotations. Eval scenes
are drawn from a separate random stream of the same seed.

    python -m llava.toy.synthetic --out playground/data/synthetic --videos 24 --images 16 --eval-videos 16
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llava.eval.benchmarks import BENCHMARKS
from llava.eval.questions import LETTERS, VideoQuestion
from llava.video import write_video

logger = logging.getLogger(__name__)

COLORS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (235, 215, 40),
          "purple": (170, 60, 210)}
# Raised whenever what a seed produces changes, so cached datasets and runs built on them are redone.
GENERATOR_VERSION = 5
BACKGROUND = 128  # mid-grey: the normalised pixel value 0, so empty patches carry little besides position
BLOCK = 3  # cells per side of the shared block: the spatial group of a (4, 3, 3) local compressor
IN_BLOCK = 2  # objects sharing the block; one more stands outside it
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
EVAL_TASK_FILE = "moving_attribute.json"  # MVBench's "Moving Attribute" task
EVAL_VIDEO_DIR = "clevrer/video_validation"  # where MVBench keeps that task's videos
CAPTION_PROMPT = "Name the objects."


@dataclass(frozen=True)
class SceneObject:
    """A two-tone tile filling one cell: a ``rim`` of one color around a ``centre`` of another."""

    rim: str
    centre: str
    row: int  # cell on the patch grid
    col: int
    appears: int  # first visible frame

    @property
    def name(self) -> str:
        return f"{self.rim} tile"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    block: tuple[int, int]  # top-left cell of the shared 3 x 3 block
    frames: int

    def in_block(self, obj: SceneObject) -> bool:
        return 0 <= obj.row - self.block[0] < BLOCK and 0 <= obj.col - self.block[1] < BLOCK

    def find(self, rim: str) -> SceneObject:
        return next(o for o in self.objects if o.rim == rim)


def sample_colors(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """``count`` (rim, centre) pairs: rims all different, centres all different, no tile one color."""
    names = sorted(COLORS)
    rims = rng.sample(names, count)
    while True:
        centres = rng.sample(names, count)
        if all(r != c for r, c in zip(rims, centres)):
            return list(zip(rims, centres))


def sample_scene(rng: random.Random, frames: int, cells: int) -> Scene:
    """``IN_BLOCK`` tiles in one random full ``3 x 3`` block of the ``cells x cells`` grid, one outside it,
    no two in neighbouring cells (so a pooling of 2 x 2 cells, as OneVision's, never mixes two tiles)."""
    blocks = cells // BLOCK
    if blocks < 1 or cells * cells - BLOCK * BLOCK < 1:
        raise ValueError(f"a {cells}x{cells} cell grid has no room for a {BLOCK}x{BLOCK} block and one more cell")
    block = (BLOCK * rng.randrange(blocks), BLOCK * rng.randrange(blocks))
    inside = [(block[0] + r, block[1] + c) for r in range(BLOCK) for c in range(BLOCK)]
    outside = [(r, c) for r in range(cells) for c in range(cells) if (r, c) not in inside]
    while True:  # no two tiles side by side (nor diagonally): the pooling kernels of 2 cells keep them apart
        cells_used = rng.sample(inside, IN_BLOCK) + [rng.choice(outside)]
        if all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 2 for k, a in enumerate(cells_used) for b in cells_used[:k]):
            break
    starts = (0, 0, frames // 4, frames // 2)
    objects = tuple(
        SceneObject(rim, centre, r, c, rng.choice(starts) if frames > 1 else 0)
        for (rim, centre), (r, c) in zip(sample_colors(rng, IN_BLOCK + 1), cells_used)
    )
    return Scene(objects, block, frames)


def centre_mask(patch: int) -> np.ndarray:
    """``(patch, patch)`` bool: the tile's centre, the middle half of the cell on each side (aligned to
    even pixels, so yuv420p's half-resolution chroma keeps the two colors apart)."""
    inner = np.zeros(patch, dtype=bool)
    inner[patch // 4 : patch - patch // 4] = True
    return inner[:, None] & inner[None, :]


def render_frame(scene: Scene, frame: int, size: int, patch: int) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 frame with every tile visible at ``frame``."""
    image = np.full((size, size, 3), BACKGROUND, dtype=np.uint8)
    centre = centre_mask(patch)
    for obj in scene.objects:
        if frame < obj.appears:
            continue
        top, left = obj.row * patch, obj.col * patch
        cell = image[top : top + patch, left : left + patch]
        cell[:] = COLORS[obj.rim]
        cell[centre] = COLORS[obj.centre]
    return image


def render_video(scene: Scene, size: int, patch: int) -> np.ndarray:
    return np.stack([render_frame(scene, t, size, patch) for t in range(scene.frames)])


# ---- text ---------------------------------------------------------------------------------------


def place(obj: SceneObject, cells: int) -> str:
    row, col = ROWS[obj.row * 3 // cells], COLUMNS[obj.col * 3 // cells]
    return "the centre" if (row, col) == ("middle", "centre") else f"the {row} {col}"


def when(obj: SceneObject, frames: int) -> str:
    if obj.appears == 0:
        return "is there from the start"
    return "appears in the middle" if obj.appears >= frames // 2 else "appears shortly after the start"


def _listing(words: list[str]) -> str:
    return ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else words[0]


def caption(scene: Scene) -> str:
    """Every tile, in the order of :data:`COLORS`: "A red tile with a blue centre and a green tile with a
    purple centre." """
    return _listing(caption_instances(scene)).capitalize() + "."


def caption_instances(scene: Scene) -> list[str]:
    """The phrase of every tile, as :func:`caption` names them: ["a red tile with a blue centre", ...]."""
    order = list(COLORS)
    return [f"a {o.rim} tile with a {o.centre} centre" for o in sorted(scene.objects, key=lambda o: order.index(o.rim))]


def tiles_answer(scene: Scene) -> str:
    """The rim colors present, in the order of :data:`COLORS`: "Red, blue and purple tiles." """
    present = [c for c in COLORS if any(o.rim == c for o in scene.objects)]
    return _listing(present).capitalize() + " tiles."


def describe(obj: SceneObject, scene: Scene, cells: int) -> tuple[str, str]:
    """("Describe the red tile.", "The red tile has a blue centre. It is at the top left and ...")."""
    answer = (f"The {obj.rim} tile has a {obj.centre} centre. It is at {place(obj, cells)} and "
              f"{when(obj, scene.frames)}.")
    return f"Describe the {obj.rim} tile.", answer


def color_question(rim: str) -> str:
    return f"What color is the centre of the {rim} tile?"


def multiple_choice_prompt(question: str, options: tuple[str, ...]) -> str:
    """MVBench's prompt, built by ``llava.eval`` itself (``--prompt-style release``, the default), so
    training and evaluation see the same text."""
    return BENCHMARKS["mvbench"].prompt(VideoQuestion("", question, (), tuple(options)), "release")


def multiple_choice_answer(answer: str, options: tuple[str, ...]) -> str:
    return f"({LETTERS[options.index(answer)]}) {answer}"


def multiple_choice_record(record_id: str, video: str, question: str, answer: str,
                           options: tuple[str, ...]) -> dict:
    """A single-turn training record: ``question`` in MVBench's prompt about ``video``, answered
    with the letter and text of ``answer``."""
    prompt = multiple_choice_prompt(question, options)
    return {"id": record_id, "video": video, "conversations": [
        _human(f"<video>\n{prompt}"), _gpt(multiple_choice_answer(answer, options))]}


def _human(text: str) -> dict:
    return {"from": "human", "value": text}


def _gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


# ---- files --------------------------------------------------------------------------------------


def make_dataset(out: str | Path, seed: int = 0, videos: int = 24, images: int = 16, frames: int = 16,
                 size: int = 56, fps: int = 8, patch: int = 8, eval_videos: int = 0) -> dict[str, Path]:
    """Writes media and annotations under ``out``; returns the annotation files by name.

    ``eval_videos > 0`` also writes the held-out MVBench-layout set under ``out/eval`` (keys
    ``eval_questions``: the task folder to pass as ``--question-file``, ``eval_videos``: the
    ``--video-folder``).
    """
    out = Path(out)
    cells = size // patch
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    options = tuple(COLORS)
    stage1, stage2, stage3, mcqa = [], [], [], []
    for index in range(images):
        scene = sample_scene(rng, 1, cells)
        name = f"images/img_{index:04d}.png"
        _write_png(out / name, render_frame(scene, 0, size, patch))
        stage1.append({"id": f"img{index}", "image": name, "conversations": [_human("<image>"), _gpt(caption(scene))],
                       "instances": caption_instances(scene)})
    for index in range(videos):
        scene = sample_scene(rng, frames, cells)
        name = f"videos/vid_{index:04d}.mp4"
        write_video(out / name, render_video(scene, size, patch), fps=fps)
        stage1.append({"id": f"vid{index}", "video": name, "conversations": [_human("<video>"), _gpt(caption(scene))],
                       "instances": caption_instances(scene)})
        for k, obj in enumerate(scene.objects):
            question, answer = describe(obj, scene, cells)
            stage2.append({"id": f"vid{index}_d{k}", "video": name,
                           "conversations": [_human(f"<video>\n{question}"), _gpt(answer)]})
            mcqa.append(multiple_choice_record(f"vid{index}_q{k}", name, color_question(obj.rim), obj.centre, options))
            stage3.append(mcqa[-1])
        obj = rng.choice(scene.objects)
        stage3.append({"id": f"vid{index}_s", "video": name, "conversations": [
            _human(f"<video>\nWhich tile has a {obj.centre} centre?"), _gpt(f"The {obj.rim} tile.")]})
        stage3.append({"id": f"vid{index}_c", "video": name, "conversations": [
            _human(f"<video>\n{CAPTION_PROMPT}"), _gpt(caption(scene))]})
        stage3.append({"id": f"vid{index}_p", "video": name, "conversations": [
            _human("<video>\nWhich tiles are in the video?"), _gpt(tiles_answer(scene))]})
        for k, obj in enumerate(rng.sample(scene.objects, 2)):
            question, answer = describe(obj, scene, cells)
            stage3.append({"id": f"vid{index}_i{k}", "video": name,
                           "conversations": [_human(f"<video>\n{question}"), _gpt(answer)]})
    for index in range(max(2, videos // 8)):
        rim, centre = sample_colors(rng, 1)[0]
        stage3.append({"id": f"text{index}", "conversations": [
            _human(f"A tile has a {rim} rim and a {centre} centre. What color is its centre?"),
            _gpt(f"{centre.capitalize()}.")]})
    files = {}
    for stage, records in (("stage1", stage1), ("stage2", stage2), ("stage3", stage3), ("stage3_mcqa", mcqa)):
        files[stage] = out / f"{stage}.json"
        files[stage].write_text(json.dumps(records, indent=1))
    files["mixture"] = out / "data.yaml"
    files["mixture"].write_text("datasets:\n  - json_path: stage2.json\n    sampling_strategy: all\n"
                                "  - json_path: stage3.json\n    sampling_strategy: first:50%\n")
    if eval_videos:
        files.update(make_eval_set(out / "eval", random.Random(f"{seed}/eval"), eval_videos, frames, size, fps, patch))
    return files


def make_eval_set(out: Path, rng: random.Random, videos: int, frames: int, size: int, fps: int,
                  patch: int) -> dict[str, Path]:
    """The held-out multiple-choice set in MVBench's layout; one question per video, about an object
    that shares its block with two others."""
    cells = size // patch
    questions, video_dir = out / "json", out / "video" / EVAL_VIDEO_DIR
    questions.mkdir(parents=True, exist_ok=True)
    video_dir.mkdir(parents=True, exist_ok=True)
    options = list(COLORS)
    items = []
    for index in range(videos):
        scene = sample_scene(rng, frames, cells)
        name = f"eval_{index:04d}.mp4"
        write_video(video_dir / name, render_video(scene, size, patch), fps=fps)
        block = [o for o in scene.objects if scene.in_block(o)]
        obj = rng.choice(block)
        items.append({
            "video": name, "question": color_question(obj.rim), "candidates": options, "answer": obj.centre,
            "cell": [obj.row, obj.col],
            "at_group_centre": (obj.row - scene.block[0], obj.col - scene.block[1]) == (1, 1),
            "block_centres": sorted(o.centre for o in block),
            "objects": [{"rim": o.rim, "centre": o.centre, "cell": [o.row, o.col], "appears": o.appears,
                         "in_block": scene.in_block(o)} for o in scene.objects],
        })
    task_file = questions / EVAL_TASK_FILE
    task_file.write_text(json.dumps(items, indent=1))
    return {"eval_questions": questions, "eval_videos": out / "video"}


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.toy.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the dataset to")
    parser.add_argument("--seed", type=int, default=0, help="scenes are deterministic given the seed")
    parser.add_argument("--videos", type=int, default=24, help="training videos")
    parser.add_argument("--images", type=int, default=16, help="training images")
    parser.add_argument("--eval-videos", type=int, default=0, help="held-out MVBench-layout questions (0: none)")
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--size", type=int, default=56, help="frame side in pixels")
    parser.add_argument("--patch", type=int, default=8, help="cell side: the vision tower's patch size")
    args = parser.parse_args(argv)
    files = make_dataset(args.out, args.seed, args.videos, args.images, args.frames, args.size,
                         patch=args.patch, eval_videos=args.eval_videos)
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
