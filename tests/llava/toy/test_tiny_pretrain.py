"""The shared LLM start of the toy zoo: scenes in words, the added tile tokens, and the cached folder."""

from __future__ import annotations

import json
import random

from transformers import AutoTokenizer

from llava.toy import tiny_pretrain
from llava.toy.synthetic import COLORS
from llava.toy.tiny_pretrain import (
    EMPTY_TOKEN,
    RECORD_NAME,
    PretrainSettings,
    conversation,
    make_pretrained_llm,
    scene_in_words,
    tile_token,
    world_tokens,
)


def test_world_tokens_are_every_two_colour_tile_and_the_empty_cell():
    tokens = world_tokens()
    assert len(tokens) == len(COLORS) * (len(COLORS) - 1) + 1 == 21
    assert len(set(tokens)) == len(tokens) and tokens[-1] == EMPTY_TOKEN
    assert tile_token("red", "red") not in tokens


def test_a_scene_in_words_keeps_each_tile_in_its_slot_from_its_first_frame():
    rng = random.Random(0)
    for _ in range(200):
        tiles = rng.choice((1, 2, 3))
        scene, context = scene_in_words(rng, tiles)
        cells = context.replace("|><|", "|>\n<|").split("\n")
        assert len(cells) <= tiny_pretrain.MAX_CONTEXT and len(scene.objects) == tiles
        slots = len(cells) // scene.frames
        assert slots * scene.frames == len(cells)
        for obj in scene.objects:
            shown = [f for f in range(scene.frames) if cells[f * slots + obj.col] == tile_token(obj.rim, obj.centre)]
            assert shown == list(range(obj.appears, scene.frames))
        assert sum(cell != EMPTY_TOKEN for cell in cells) == sum(scene.frames - o.appears for o in scene.objects)


def test_conversations_ask_what_the_toy_set_asks():
    rng = random.Random(1)
    records = [conversation(rng, k) for k in range(300)]
    answers = [r["conversations"][1]["value"] for r in records]
    assert sum(a.startswith("(") for a in answers) > 150  # mostly the eval's multiple-choice question
    assert any(a.startswith("The ") and a.endswith(" tile.") for a in answers)
    assert all("<image>" not in r["conversations"][0]["value"] and "video" not in r for r in records)


def test_pretrained_llm_reads_tiles_as_single_tokens_and_is_cached(tmp_path, tiny_dir):
    settings = PretrainSettings(steps=2, batch=4)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "qwen2-tiny").symlink_to(tiny_dir / "qwen2-tiny")
    out = make_pretrained_llm(tiny, settings)
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["steps"] == 2 and record["settings"]["steps"] == 2 and record["version"] == tiny_pretrain.PRETRAIN_VERSION
    tokenizer = AutoTokenizer.from_pretrained(out)
    for token in (tile_token("red", "blue"), EMPTY_TOKEN):
        assert len(tokenizer(token + token).input_ids) == 2
    weights = out / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert make_pretrained_llm(tiny, settings) == out and weights.stat().st_mtime_ns == written  # reused
    assert not list(tiny.glob(".*partial"))
