"""The synthetic instruction-dependent video set: a pure function of its seed, decodable as written,
readable by the real MVBench loader, and built from scenes of two-tone tiles (a rim of one color around
a centre of another) whose asked-about tiles share a block."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from llava.eval.benchmarks import BENCHMARKS, load_questions
from llava.eval.questions import LETTERS, VideoQuestion
from llava.toy import synthetic
from llava.toy.synthetic import (
    BACKGROUND,
    BLOCK,
    COLORS,
    EVAL_TASK_FILE,
    EVAL_VIDEO_DIR,
    IN_BLOCK,
    Scene,
    SceneObject,
    centre_mask,
    make_dataset,
    render_frame,
    sample_colors,
    sample_scene,
)
from llava.video import load_video_frames

SIZE, PATCH, FRAMES = 56, 8, 16
CELLS = SIZE // PATCH
N_OBJECTS = IN_BLOCK + 1  # the block's tiles and the lone one
SMALL = dict(videos=3, images=2, frames=FRAMES, size=SIZE, fps=8, patch=PATCH, eval_videos=4)
ANNOTATIONS = ("stage1", "stage2", "stage3", "mixture")
COLOR = "|".join(COLORS)
# synthetic.caption: "A red tile with a blue centre, a green tile with a purple centre and a ..."
CAPTION_TILE = re.compile(rf"(?:^A|, a| and a) ({COLOR}) tile with a ({COLOR}) centre")
# synthetic.describe: "The red tile has a blue centre. It is at the top left and is there from the start."
DESCRIPTION = re.compile(rf"The ({COLOR}) tile has a ({COLOR}) centre\. It is at the (?:centre|(?:top|middle|bottom) "
                         rf"(?:left|centre|right)) and (?:is there from the start|appears shortly after the start|"
                         rf"appears in the middle)\.")
COLOR_QUESTION = re.compile(rf"What color is the centre of the ({COLOR}) tile\?")


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
    assert len(stage2) == SMALL["videos"] * N_OBJECTS  # one description per tile
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


def test_decoded_eval_videos_keep_each_tiles_two_tones_apart(datasets):
    """Through the lossy codec (yuv420p), every decoded pixel of a tile's centre is still nearest its centre
    color, of the background nearest the background, and most of a rim's nearest its rim color (a few rim
    pixels of the darkest colors drift toward the grey), in every frame: the question's answer survives."""
    palette = np.array([(BACKGROUND,) * 3, *COLORS.values()], float)
    index = {name: k + 1 for k, name in enumerate(COLORS)}  # 0: the background
    centre = centre_mask(PATCH)
    for key in ("a", "c"):
        _, files = datasets[key]
        for item in json.loads(_task_file(files).read_text()):
            frames = load_video_frames(files["eval_videos"] / EVAL_VIDEO_DIR / item["video"], backend="decord").frames
            nearest = ((frames.astype(float)[..., None, :] - palette) ** 2).sum(-1).argmin(-1)  # (T, H, W)
            assert nearest.shape == (FRAMES, SIZE, SIZE)
            tiles = np.zeros((SIZE, SIZE), bool)
            for obj in item["objects"]:
                (row, col), shown = obj["cell"], obj["appears"]
                tiles[row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH] = True
                cell = nearest[:, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH]
                assert (cell[:shown] == 0).all(), (key, item["video"], obj)  # not there yet
                assert (cell[shown:, centre] == index[obj["centre"]]).all(), (key, item["video"], obj)
                rim_share = (cell[shown:, ~centre] == index[obj["rim"]]).mean(axis=1)
                assert rim_share.min() >= 0.75, (key, item["video"], obj, rim_share.min())
            assert (nearest[:, ~tiles] == 0).all(), (key, item["video"])


def _caption_tiles(text: str) -> list[tuple[str, str]]:
    """(rim, centre) of every tile a :func:`synthetic.caption` names; the caption must be exactly that list
    ("A red tile with a blue centre, a ... and a ...") with the rims in the order of ``COLORS``."""
    tiles = CAPTION_TILE.findall(text)
    assert tiles, text
    parts = [f"a {rim} tile with a {centre} centre" for rim, centre in tiles]
    listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    assert text == "A" + listing[1:] + ".", text
    order = list(COLORS)
    assert [order.index(rim) for rim, _ in tiles] == sorted(order.index(rim) for rim, _ in tiles), text
    return tiles


def test_training_images_are_rendered_frames(datasets):
    from PIL import Image

    folder, files = datasets["a"]
    images = sorted((folder / "images").glob("*.png"))
    assert len(images) == SMALL["images"]
    captions = {r["image"]: r["conversations"][1]["value"] for r in json.loads(files["stage1"].read_text())
                if "image" in r}
    rim_pixels = PATCH * PATCH - int(centre_mask(PATCH).sum())
    centre_pixels = int(centre_mask(PATCH).sum())
    for path in images:
        array = np.asarray(Image.open(path).convert("RGB"))
        assert array.shape == (SIZE, SIZE, 3)
        pixels = [tuple(int(v) for v in p) for p in array.reshape(-1, 3)]
        colors = set(pixels)
        # PNG is lossless: only the background and the tiles' colors appear
        assert colors <= {(BACKGROUND,) * 3, *COLORS.values()}
        tiles = _caption_tiles(captions[f"images/{path.name}"])
        assert len(tiles) == N_OBJECTS
        # every tile is visible in a 1-frame scene: its rim and its centre, and nothing else besides the background
        assert colors == {(BACKGROUND,) * 3} | {COLORS[c] for tile in tiles for c in tile}
        for name, rgb in COLORS.items():  # each rim covers the cell outside the centre, each centre the rest
            expected = sum(rim_pixels * (rim == name) + centre_pixels * (centre == name) for rim, centre in tiles)
            assert pixels.count(rgb) == expected, (path.name, name)


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


def test_eval_items_ask_about_a_tile_in_the_shared_block(datasets):
    _, files = datasets["a"]
    items = json.loads(_task_file(files).read_text())
    assert len(items) == SMALL["eval_videos"]
    for item in items:
        assert set(item) == {"video", "question", "candidates", "answer", "cell", "at_group_centre",
                             "block_centres", "objects"}
        rim = COLOR_QUESTION.fullmatch(item["question"]).group(1)
        assert item["question"] == synthetic.color_question(rim)
        assert len(item["objects"]) == N_OBJECTS
        for obj in item["objects"]:
            assert set(obj) == {"rim", "centre", "cell", "appears", "in_block"}
            assert obj["rim"] in COLORS and obj["centre"] in COLORS and obj["rim"] != obj["centre"]
        assert len({o["rim"] for o in item["objects"]}) == N_OBJECTS
        assert len({o["centre"] for o in item["objects"]}) == N_OBJECTS
        (asked,) = [o for o in item["objects"] if o["rim"] == rim]
        assert item["candidates"] == list(COLORS)
        assert item["answer"] in item["candidates"]
        assert item["answer"] in item["block_centres"]
        assert asked["centre"] == item["answer"]
        assert item["answer"] != rim  # the answer is the centre, never the named rim
        assert asked["cell"] == item["cell"]
        assert asked["in_block"]
        in_block = [o for o in item["objects"] if o["in_block"]]
        assert len(in_block) == IN_BLOCK
        assert item["block_centres"] == sorted(o["centre"] for o in in_block)
        # the block's top-left corner is a multiple of BLOCK; the asked cell's offset inside it decides centre
        top, left = (min(o["cell"][axis] for o in in_block) // BLOCK * BLOCK for axis in (0, 1))
        offset = (item["cell"][0] - top, item["cell"][1] - left)
        assert 0 <= offset[0] < BLOCK and 0 <= offset[1] < BLOCK
        assert item["at_group_centre"] == (offset == (1, 1))


# ---- scenes -----------------------------------------------------------------------------------------


def test_scene_invariants_over_many_seeds():
    places = set()
    for k in range(200):
        scene = sample_scene(random.Random(k), frames=16, cells=7)
        assert len(scene.objects) == N_OBJECTS
        rims = [o.rim for o in scene.objects]
        assert len(set(rims)) == N_OBJECTS and set(rims) <= set(COLORS)
        centres = [o.centre for o in scene.objects]
        assert len(set(centres)) == N_OBJECTS and set(centres) <= set(COLORS)
        assert all(o.rim != o.centre for o in scene.objects)  # no tile is one color
        assert all(scene.find(o.rim) == o for o in scene.objects)
        assert len({(o.row, o.col) for o in scene.objects}) == N_OBJECTS
        assert all(0 <= o.row < 7 and 0 <= o.col < 7 for o in scene.objects)
        assert scene.block[0] % BLOCK == 0 and scene.block[1] % BLOCK == 0
        assert scene.block[0] + BLOCK <= 7 and scene.block[1] + BLOCK <= 7
        inside = [o for o in scene.objects if scene.in_block(o)]
        assert len(inside) == IN_BLOCK
        assert {o.appears for o in scene.objects} <= {0, 16 // 4, 16 // 2}
        # no two tiles are neighbours (nor diagonally): a 2 x 2 pooling never mixes two of them
        for k, a in enumerate(scene.objects):
            assert all(max(abs(a.row - b.row), abs(a.col - b.col)) >= 2 for b in scene.objects[:k])
        places |= {(o.row - scene.block[0], o.col - scene.block[1]) for o in inside}
    # so a tile of the block is never at its centre (every other cell of it is a neighbour) and every
    # other cell of the block is used
    assert places == {(r, c) for r in range(BLOCK) for c in range(BLOCK)} - {(1, 1)}


def test_sample_colors_pairs_distinct_rims_with_distinct_other_centres():
    pairs_seen = set()
    for count in range(1, len(COLORS) + 1):
        for k in range(50):
            pairs = sample_colors(random.Random(k), count)
            assert pairs == sample_colors(random.Random(k), count)  # a function of the rng
            assert len(pairs) == count
            rims, centres = [r for r, _ in pairs], [c for _, c in pairs]
            assert len(set(rims)) == count and set(rims) <= set(COLORS)
            assert len(set(centres)) == count and set(centres) <= set(COLORS)
            assert all(r != c for r, c in pairs)
            pairs_seen.update(pairs)
    # every two-tone combination turns up: nothing but "rim != centre" constrains a pair
    assert pairs_seen == {(r, c) for r in COLORS for c in COLORS if r != c}


def test_sample_scene_is_a_function_of_the_rng():
    assert sample_scene(random.Random(7), 16, 7) == sample_scene(random.Random(7), 16, 7)
    assert any(sample_scene(random.Random(7), 16, 7) != sample_scene(random.Random(k), 16, 7) for k in range(8, 12))


def test_sample_scene_rejects_a_grid_without_a_block():
    with pytest.raises(ValueError):
        sample_scene(random.Random(0), 4, 2)


# ---- rendering ------------------------------------------------------------------------------------


def _cell(image: np.ndarray, row: int, col: int) -> np.ndarray:
    return image[row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH]


def _assert_tile(cell: np.ndarray, obj: SceneObject) -> None:
    """The whole cell is the tile: its rim color outside :func:`centre_mask`, its centre color inside."""
    centre = centre_mask(PATCH)
    assert (cell[~centre] == np.array(COLORS[obj.rim], np.uint8)).all(), obj
    assert (cell[centre] == np.array(COLORS[obj.centre], np.uint8)).all(), obj


def test_render_frame_paints_each_tile_in_its_cell_and_background_elsewhere():
    for k in range(20):
        scene = sample_scene(random.Random(k), frames=16, cells=CELLS)
        last = render_frame(scene, scene.frames - 1, SIZE, PATCH)
        assert last.shape == (SIZE, SIZE, 3) and last.dtype == np.uint8
        mask = np.zeros((SIZE, SIZE), bool)
        for obj in scene.objects:
            _assert_tile(_cell(last, obj.row, obj.col), obj)
            mask[obj.row * PATCH:(obj.row + 1) * PATCH, obj.col * PATCH:(obj.col + 1) * PATCH] = True
        assert mask.sum() == N_OBJECTS * PATCH * PATCH
        assert (last[~mask] == BACKGROUND).all()


def test_tiles_are_absent_before_they_appear():
    objects = (
        SceneObject("red", "blue", 0, 0, appears=0),
        SceneObject("green", "yellow", 1, 1, appears=4),
        SceneObject("blue", "purple", 2, 2, appears=8),
        SceneObject("yellow", "red", 5, 5, appears=0),
    )
    scene = Scene(objects, block=(0, 0), frames=16)
    for frame in range(16):
        image = render_frame(scene, frame, SIZE, PATCH)
        for obj in objects:
            cell = _cell(image, obj.row, obj.col)
            visible = (cell != BACKGROUND).any()
            assert visible == (frame >= obj.appears), (frame, obj)
            if frame >= obj.appears:
                _assert_tile(cell, obj)
            else:
                assert (cell == BACKGROUND).all()


def _square(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (end-exclusive) of ``mask``, asserting it is one filled rectangle."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    filled = np.zeros_like(mask)
    filled[top:bottom, left:right] = True
    assert (mask == filled).all(), mask.astype(int)
    return int(top), int(bottom), int(left), int(right)


def test_centre_mask_is_a_centred_even_aligned_square():
    mask = centre_mask(PATCH)
    assert mask.shape == (PATCH, PATCH) and mask.dtype == bool
    assert 0 < mask.sum() < mask.size  # neither empty nor the whole cell: both tones show
    assert mask.sum() * 4 == mask.size  # a quarter of the cell
    top, bottom, left, right = _square(mask)
    assert bottom - top == right - left  # a square ...
    assert (top, left) == (PATCH - bottom, PATCH - right)  # ... centred in the cell
    # yuv420p keeps chroma per 2 x 2 pixels: an even-aligned centre shares no chroma sample with the rim
    assert all(edge % 2 == 0 for edge in (top, bottom, left, right))
    for patch in (4, 14, 16):  # the same geometry at other patch sizes
        top, bottom, left, right = _square(centre_mask(patch))
        assert 0 < top == left == patch - bottom == patch - right
    assert centre_mask(16).sum() * 4 == 16 * 16
    assert all(edge % 2 == 0 for edge in _square(centre_mask(16)))


# ---- training annotations use the eval's prompt --------------------------------------------------


def _descriptions(stage2: list[dict]) -> dict[tuple[str, str], str]:
    """``{(video, rim): centre}`` from the stage-2 descriptions (:func:`synthetic.describe`'s format)."""
    described = {}
    for record in stage2:  # "Describe the red tile." -> "The red tile has a blue centre. It is at ..."
        human, gpt = (turn["value"] for turn in record["conversations"])
        rim, centre = DESCRIPTION.fullmatch(gpt).groups()
        assert human == f"<video>\nDescribe the {rim} tile."
        assert rim != centre
        assert (record["video"], rim) not in described
        described[(record["video"], rim)] = centre
    return described


def test_stage3_multiple_choice_matches_the_mvbench_prompt(datasets):
    _, files = datasets["a"]
    stage3 = json.loads(files["stage3"].read_text())
    prompt_fn = BENCHMARKS["mvbench"].prompts["release"]
    options = tuple(COLORS)
    mcqa = [r for r in stage3 if "\nOptions:\n" in r["conversations"][0]["value"]]
    assert len(mcqa) == SMALL["videos"] * N_OBJECTS
    assert all(re.fullmatch(r"vid\d+_q\d+", r["id"]) for r in mcqa)
    described = _descriptions(json.loads(files["stage2"].read_text()))
    assert len(described) == len(mcqa)
    asked = set()
    for record in mcqa:
        human, gpt = (turn["value"] for turn in record["conversations"])
        rim = re.search(rf"What color is the centre of the ({COLOR}) tile\?", human).group(1)
        asked.add((record["video"], rim))
        centre = described[(record["video"], rim)]
        assert centre != rim
        letter = LETTERS[options.index(centre)]
        question = VideoQuestion(qid="x", question=synthetic.color_question(rim), videos=(record["video"],),
                                 options=options, answer=letter, task="Moving Attribute")
        expected = prompt_fn(question, None)
        assert expected == synthetic.multiple_choice_prompt(question.question, options)
        assert human == f"<video>\n{expected}"
        assert gpt == f"({letter}) {centre}"
        assert re.fullmatch(rf"\([{LETTERS[:len(options)]}]\) ({COLOR})", gpt)
    assert asked == set(described)  # one question per tile of every video


def test_other_records_agree_with_the_descriptions(datasets):
    """Captions, the open centre question, the tile list, the stage-3 descriptions and the text-only turns
    all tell the same scene as the stage-2 descriptions."""
    _, files = datasets["a"]
    stage1 = json.loads(files["stage1"].read_text())
    stage2 = json.loads(files["stage2"].read_text())
    stage3 = json.loads(files["stage3"].read_text())
    described = _descriptions(stage2)
    scenes: dict[str, dict[str, str]] = {}
    for (video, rim), centre in described.items():
        scenes.setdefault(video, {})[rim] = centre
    assert len(scenes) == SMALL["videos"] and all(len(t) == N_OBJECTS for t in scenes.values())
    by_id = {r["id"]: r for r in stage3}
    stage2_answers = {r["conversations"][1]["value"] for r in stage2}
    for index in range(SMALL["videos"]):
        video = f"videos/vid_{index:04d}.mp4"
        tiles = scenes[video]
        (caption_record,) = [r for r in stage1 if r.get("video") == video]
        assert caption_record["conversations"][0]["value"] == "<video>"
        assert dict(_caption_tiles(caption_record["conversations"][1]["value"])) == tiles
        record = by_id[f"vid{index}_c"]
        assert record["video"] == video
        assert record["conversations"][0]["value"] == f"<video>\n{synthetic.CAPTION_PROMPT}"
        assert dict(_caption_tiles(record["conversations"][1]["value"])) == tiles
        record = by_id[f"vid{index}_s"]
        centre = re.fullmatch(rf"<video>\nWhich tile has a ({COLOR}) centre\?",
                              record["conversations"][0]["value"]).group(1)
        (rim,) = [r for r, c in tiles.items() if c == centre]
        assert record["conversations"][1]["value"] == f"The {rim} tile."
        record = by_id[f"vid{index}_p"]
        assert record["conversations"][0]["value"] == "<video>\nWhich tiles are in the video?"
        rims = [c for c in COLORS if c in tiles]  # in the order of COLORS
        assert record["conversations"][1]["value"] == f"{rims[0].capitalize()}, {rims[1]} and {rims[2]} tiles."
        extra = [by_id[f"vid{index}_i{k}"] for k in range(2)]
        for record in extra:
            human, gpt = (turn["value"] for turn in record["conversations"])
            rim, centre = DESCRIPTION.fullmatch(gpt).groups()
            assert tiles[rim] == centre and human == f"<video>\nDescribe the {rim} tile."
            assert gpt in stage2_answers  # the same words as the stage-2 description of that tile
        assert len({DESCRIPTION.fullmatch(r["conversations"][1]["value"]).group(1) for r in extra}) == 2
    text_only = [r for r in stage3 if "video" not in r and "image" not in r]
    assert len(text_only) == max(2, SMALL["videos"] // 8)
    for record in text_only:
        human, gpt = (turn["value"] for turn in record["conversations"])
        rim, centre = re.fullmatch(rf"A tile has a ({COLOR}) rim and a ({COLOR}) centre\. What color is its centre\?",
                                   human).groups()
        assert rim != centre and gpt == f"{centre.capitalize()}."
    assert len(stage3) == SMALL["videos"] * (N_OBJECTS + 5) + len(text_only)


def test_multiple_choice_answer_letters():
    options = tuple(COLORS)
    assert [synthetic.multiple_choice_answer(c, options) for c in options] == [
        f"({letter}) {color}" for letter, color in zip(LETTERS, options)]
    assert synthetic.multiple_choice_answer("blue", options) == f"({LETTERS[options.index('blue')]}) blue"
    assert list(COLORS)[:3] == ["red", "green", "blue"]  # the fixed option order: blue is (C)
    assert synthetic.multiple_choice_answer("blue", options) == "(C) blue"


def test_stage3_mcqa_is_the_multiple_choice_part_of_stage3(datasets):
    _, files = datasets["a"]
    stage3 = json.loads(files["stage3"].read_text())
    mcqa = json.loads(files["stage3_mcqa"].read_text())
    assert mcqa == [r for r in stage3 if "\nOptions:\n" in r["conversations"][0]["value"]]
    assert len(mcqa) == SMALL["videos"] * N_OBJECTS
