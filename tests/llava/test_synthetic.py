"""The synthetic instruction-dependent video set: a pure function of its seed, decodable as written,
readable by the real MVBench loader, and built from scenes whose asked-about objects share a block."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from llava import synthetic
from llava.eval.benchmarks import BENCHMARKS, load_questions
from llava.eval.questions import LETTERS, VideoQuestion
from llava.synthetic import (
    BACKGROUND,
    BLOCK,
    COLORS,
    EVAL_TASK_FILE,
    EVAL_VIDEO_DIR,
    IN_BLOCK,
    SHAPES,
    Scene,
    SceneObject,
    make_dataset,
    render_frame,
    sample_scene,
)
from llava.utils import load_video_frames

SIZE, PATCH, FRAMES = 56, 8, 16
CELLS = SIZE // PATCH
N_OBJECTS = IN_BLOCK + 1  # the block's objects and the lone one
SMALL = dict(videos=3, images=2, frames=FRAMES, size=SIZE, fps=8, patch=PATCH, eval_videos=4)
ANNOTATIONS = ("stage1", "stage2", "stage3", "mixture")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Path]]]:
    """Seed 3 twice (a, b) and seed 4 once (c), each with a small eval set."""
    root = tmp_path_factory.mktemp("synthetic")
    out = {}
    for key, seed in (("a", 3), ("b", 3), ("c", 4)):
        out[key] = (root / key, make_dataset(root / key, seed=seed, **SMALL))
    return out


def _task_file(files: dict[str, Path]) -> Path:
    return files["eval_questions"] / EVAL_TASK_FILE


# ---- determinism ----------------------------------------------------------------------------------


def test_same_seed_gives_same_bytes_and_other_seed_differs(datasets):
    (_, a), (_, b), (_, c) = datasets["a"], datasets["b"], datasets["c"]
    assert set(ANNOTATIONS) <= set(a)
    assert a["mixture"].name == "data.yaml"
    for name in ANNOTATIONS:
        assert a[name].read_bytes() == b[name].read_bytes(), name
    assert _task_file(a).read_bytes() == _task_file(b).read_bytes()
    assert a["stage2"].read_bytes() != c["stage2"].read_bytes()
    assert _task_file(a).read_bytes() != _task_file(c).read_bytes()


def test_annotation_counts_and_media_paths(datasets):
    folder, files = datasets["a"]
    stage1 = json.loads(files["stage1"].read_text())
    stage2 = json.loads(files["stage2"].read_text())
    stage3 = json.loads(files["stage3"].read_text())
    assert len(stage1) == SMALL["images"] + SMALL["videos"]
    assert len(stage2) == SMALL["videos"] * N_OBJECTS  # one description per object
    for record in stage1 + stage2 + stage3:
        media = record.get("video") or record.get("image")
        if media is not None:
            assert (folder / media).is_file(), media
    for record in stage2:
        human = record["conversations"][0]["value"]
        assert human.startswith("<video>\nDescribe the ")
    ids = [r["id"] for r in stage1 + stage2 + stage3]
    assert len(ids) == len(set(ids))


# ---- videos decode as written ---------------------------------------------------------------------


def test_every_video_decodes_to_the_written_frames(datasets):
    folder, files = datasets["a"]
    paths = sorted((folder / "videos").glob("*.mp4")) + sorted((files["eval_videos"] / EVAL_VIDEO_DIR).glob("*.mp4"))
    assert len(paths) == SMALL["videos"] + SMALL["eval_videos"]
    for path in paths:
        video = load_video_frames(path, backend="decord")
        assert video.frames.shape == (FRAMES, SIZE, SIZE, 3), path
        sampled = load_video_frames(path, num_frames=8, backend="decord")
        assert sampled.frames.shape == (8, SIZE, SIZE, 3), path


def test_training_images_are_rendered_frames(datasets):
    from PIL import Image

    folder, _ = datasets["a"]
    images = sorted((folder / "images").glob("*.png"))
    assert len(images) == SMALL["images"]
    for path in images:
        array = np.asarray(Image.open(path).convert("RGB"))
        assert array.shape == (SIZE, SIZE, 3)
        colors = {tuple(p) for p in array.reshape(-1, 3)}
        # PNG is lossless: only the background and the object colors appear
        assert colors <= {(BACKGROUND,) * 3, *COLORS.values()}
        assert len(colors) == 1 + N_OBJECTS  # every object is visible in a 1-frame scene


# ---- the eval set through the real benchmark loader ------------------------------------------------


def test_eval_set_loads_with_the_mvbench_loader(datasets):
    _, files = datasets["a"]
    items = json.loads(_task_file(files).read_text())
    questions = load_questions("mvbench", files["eval_questions"])
    assert len(questions) == len(items) == SMALL["eval_videos"]
    for question, item in zip(questions, items):
        assert question.task == "Moving Attribute"
        assert question.options == tuple(COLORS)
        assert question.answer == LETTERS[list(COLORS).index(item["answer"])]
        assert question.question == item["question"]
        assert question.videos[0] == f"{EVAL_VIDEO_DIR}/{item['video']}"
        assert (files["eval_videos"] / question.videos[0]).is_file()


def test_eval_items_ask_about_an_object_in_the_shared_block(datasets):
    _, files = datasets["a"]
    for item in json.loads(_task_file(files).read_text()):
        shape = re.fullmatch(r"What color is the (\w+)\?", item["question"]).group(1)
        asked = next(o for o in item["objects"] if o["shape"] == shape)
        assert item["candidates"] == list(COLORS)
        assert item["answer"] in item["block_colors"]
        assert asked["color"] == item["answer"]
        assert asked["cell"] == item["cell"]
        assert asked["in_block"]
        in_block = [o for o in item["objects"] if o["in_block"]]
        assert len(in_block) == IN_BLOCK
        assert item["block_colors"] == sorted(o["color"] for o in in_block)
        # the block's top-left corner is a multiple of BLOCK; the asked cell's offset inside it decides centre
        top, left = (min(o["cell"][axis] for o in in_block) // BLOCK * BLOCK for axis in (0, 1))
        offset = (item["cell"][0] - top, item["cell"][1] - left)
        assert 0 <= offset[0] < BLOCK and 0 <= offset[1] < BLOCK
        assert item["at_group_centre"] == (offset == (1, 1))


# ---- scenes -----------------------------------------------------------------------------------------


def test_scene_invariants_over_many_seeds():
    centre, off_centre = 0, 0
    for k in range(200):
        scene = sample_scene(random.Random(k), frames=16, cells=7)
        assert len(scene.objects) == N_OBJECTS
        shapes = [o.shape for o in scene.objects]
        assert len(set(shapes)) == N_OBJECTS and set(shapes) <= set(SHAPES)
        colors = [o.color for o in scene.objects]
        assert len(set(colors)) == N_OBJECTS and set(colors) <= set(COLORS)
        assert len({(o.row, o.col) for o in scene.objects}) == N_OBJECTS
        assert all(0 <= o.row < 7 and 0 <= o.col < 7 for o in scene.objects)
        assert scene.block[0] % BLOCK == 0 and scene.block[1] % BLOCK == 0
        assert scene.block[0] + BLOCK <= 7 and scene.block[1] + BLOCK <= 7
        inside = [o for o in scene.objects if scene.in_block(o)]
        assert len(inside) == IN_BLOCK
        assert {o.appears for o in scene.objects} <= {0, 16 // 4, 16 // 2}
        for obj in inside:
            if (obj.row - scene.block[0], obj.col - scene.block[1]) == (1, 1):
                centre += 1
            else:
                off_centre += 1
    # three of nine cells are used at random: about a third of scenes hold an object at the centre
    assert centre > 0
    assert off_centre > centre


def test_sample_scene_is_a_function_of_the_rng():
    assert sample_scene(random.Random(7), 16, 7) == sample_scene(random.Random(7), 16, 7)
    assert any(sample_scene(random.Random(7), 16, 7) != sample_scene(random.Random(k), 16, 7) for k in range(8, 12))


def test_sample_scene_rejects_a_grid_without_a_block():
    with pytest.raises(ValueError):
        sample_scene(random.Random(0), 4, 2)


# ---- rendering ------------------------------------------------------------------------------------


def _cell(image: np.ndarray, row: int, col: int) -> np.ndarray:
    return image[row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH]


def test_render_frame_puts_each_color_in_its_cell_and_background_elsewhere():
    for k in range(20):
        scene = sample_scene(random.Random(k), frames=16, cells=CELLS)
        last = render_frame(scene, scene.frames - 1, SIZE, PATCH)
        assert last.shape == (SIZE, SIZE, 3) and last.dtype == np.uint8
        mask = np.zeros((SIZE, SIZE), bool)
        for obj in scene.objects:
            cell = _cell(last, obj.row, obj.col).reshape(-1, 3)
            color = np.array(COLORS[obj.color], np.uint8)
            hits = (cell == color).all(axis=1)
            assert hits.sum() >= 4, (k, obj)  # the silhouette is drawn in the object's color
            assert ((cell == BACKGROUND).all(axis=1) | hits).all()  # nothing else inside the cell
            mask[obj.row * PATCH:(obj.row + 1) * PATCH, obj.col * PATCH:(obj.col + 1) * PATCH] = True
        assert (last[~mask] == BACKGROUND).all()


def test_objects_are_absent_before_they_appear():
    objects = (
        SceneObject("circle", "red", 0, 0, appears=0),
        SceneObject("cross", "green", 1, 1, appears=4),
        SceneObject("square", "blue", 2, 2, appears=8),
        SceneObject("triangle", "yellow", 5, 5, appears=0),
    )
    scene = Scene(objects, block=(0, 0), frames=16)
    for frame in range(16):
        image = render_frame(scene, frame, SIZE, PATCH)
        for obj in objects:
            cell = _cell(image, obj.row, obj.col)
            visible = (cell == np.array(COLORS[obj.color], np.uint8)).all(axis=-1).any()
            assert visible == (frame >= obj.appears), (frame, obj)
            if frame < obj.appears:
                assert (cell == BACKGROUND).all()


def test_shapes_have_distinct_silhouettes():
    masks = [synthetic.shape_mask(shape, PATCH) for shape in SHAPES]
    for i, a in enumerate(masks):
        assert a.shape == (PATCH, PATCH) and 0.25 * a.size < a.sum() < a.size  # fills part of its cell
        for b in masks[i + 1:]:
            assert (a != b).any()


# ---- training annotations use the eval's prompt --------------------------------------------------


def test_stage3_multiple_choice_matches_the_mvbench_prompt(datasets):
    _, files = datasets["a"]
    stage3 = json.loads(files["stage3"].read_text())
    prompt_fn = BENCHMARKS["mvbench"].prompts["hicom"]
    options = tuple(COLORS)
    mcqa = [r for r in stage3 if "\nOptions:\n" in r["conversations"][0]["value"]]
    assert len(mcqa) == SMALL["videos"] * N_OBJECTS
    described = {}
    for record in json.loads(files["stage2"].read_text()):  # "The triangle is red." / "The red object is a triangle."
        answer = record["conversations"][1]["value"]
        by_shape = re.match(r"The (\w+) is (\w+)\.", answer)
        by_color = re.match(r"The (\w+) object is a (\w+)\.", answer)
        shape, color = by_shape.groups() if by_shape else by_color.groups()[::-1]
        assert shape in SHAPES and color in COLORS
        described[(record["video"], shape)] = color
    assert len(described) == len(mcqa)
    for record in mcqa:
        human, gpt = (turn["value"] for turn in record["conversations"])
        shape = re.search(r"What color is the (\w+)\?", human).group(1)
        color = described[(record["video"], shape)]
        letter = LETTERS[options.index(color)]
        question = VideoQuestion(qid="x", question=synthetic.color_question(shape), videos=(record["video"],),
                                 options=options, answer=letter, task="Moving Attribute")
        expected = prompt_fn(question, None)
        assert expected == synthetic.multiple_choice_prompt(question.question, options)
        assert human == f"<video>\n{expected}"
        assert gpt == f"({letter}) {color}"
        assert re.fullmatch(rf"\([{LETTERS[:len(options)]}]\) ({'|'.join(COLORS)})", gpt)


def test_multiple_choice_answer_letters():
    options = tuple(COLORS)
    assert [synthetic.multiple_choice_answer(c, options) for c in options] == [
        f"({letter}) {color}" for letter, color in zip(LETTERS, options)]
    assert synthetic.multiple_choice_answer("blue", options) == f"({LETTERS[options.index('blue')]}) blue"
    assert list(COLORS)[:3] == ["red", "green", "blue"]  # the fixed option order: blue is (C)
    assert synthetic.multiple_choice_answer("blue", options) == "(C) blue"
