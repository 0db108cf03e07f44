"""The shared LLM start of the toy zoo: scenes of two-part tiles, the added tokens, and the cached folder."""

from __future__ import annotations

import json
import random

import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM

from llava.toy import tiny_pretrain
from llava.toy.synthetic import COLORS
from llava.toy.tiny_pretrain import (
    EMPTY_TOKEN,
    RECORD_NAME,
    PretrainSettings,
    SceneReader,
    centre_token,
    make_pretrained_llm,
    rim_token,
    sample,
    scene_cells,
    world_tokens,
)


def test_world_tokens_are_a_rim_and_a_centre_per_colour_and_the_empty_cell():
    tokens = world_tokens()
    assert len(tokens) == 2 * len(COLORS) + 1 == 11
    assert len(set(tokens)) == len(tokens) and tokens[-1] == EMPTY_TOKEN
    assert rim_token("red") in tokens and centre_token("red") in tokens


def test_a_scene_keeps_each_tile_in_its_slot_from_its_first_frame():
    rng = random.Random(0)
    for _ in range(200):
        tiles = rng.choice((1, 2, 3))
        pairs, cells, scene, side = scene_cells(rng, tiles)
        assert len(cells) <= tiny_pretrain.MAX_CONTEXT and len(pairs) == tiles
        for pair in pairs:
            shown = [k for k, cell in enumerate(cells) if cell == pair]
            assert shown, pair
            slots = shown[1] - shown[0] if len(shown) > 1 else None
            if slots:  # one slot, every frame from the first on
                assert shown == list(range(shown[0], len(cells), slots))
        assert {c for c in cells if c} == set(pairs)
        slots = len(cells) // scene.frames
        assert (side - 1) ** 2 < slots <= side ** 2
        for obj, pair in zip(scene.objects, pairs):  # the described place: the slot on a square grid
            first = cells.index(pair)
            assert (obj.rim, obj.centre) == pair and first // slots == obj.appears
            assert first % slots == obj.row * side + obj.col


def test_samples_ask_what_the_toy_set_asks():
    rng = random.Random(1)
    samples = [sample(rng) for _ in range(400)]
    share = sum(s.multiple_choice for s in samples) / len(samples)
    assert 0.5 < share < 0.7
    for s in samples:
        if s.multiple_choice:
            letter, color = s.answer[1], s.answer.split(") ")[1]
            assert "ABCDE"["red green blue yellow purple".split().index(color)] == letter
            rim = s.question.split("centre of the ")[1].split(" tile")[0]
            assert (rim, color) in s.tiles
    captions = [s for s in samples if s.question == "Name the objects."]
    assert captions and all(s.answer.count(" tile with a ") == len(s.tiles) for s in captions)
    assert 0.3 < sum(s.plain for s in captions) / len(captions) < 0.7 and not any(s.plain for s in samples if s not in captions)
    described = [s for s in samples if s.question.startswith("Describe the ")]
    assert 0.05 < len(described) / len(samples) < 0.15
    for s in described:
        rim = s.question.split("Describe the ")[1].split(" tile")[0]
        centre = dict(s.tiles)[rim]
        assert s.answer.startswith(f"The {rim} tile has a {centre} centre. It is at the ")


def test_reader_sums_rim_and_centre_and_labels_only_the_answer(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "qwen2-tiny")
    tokenizer.add_tokens(world_tokens(), special_tokens=True)
    model = Qwen2ForCausalLM.from_pretrained(tiny_dir / "qwen2-tiny")
    model.resize_token_embeddings(len(tokenizer) + 8, mean_resizing=False)
    reader = SceneReader(model.eval(), tokenizer, noise=0.5)
    embed = model.get_input_embeddings().weight
    ids = tokenizer.convert_tokens_to_ids
    item = sample(random.Random(3), multiple_choice_only=True)
    short = tiny_pretrain.Sample((("red", "blue"), None), "Name the objects.", "A red tile with a blue centre.",
                                 (("red", "blue"),), False)
    embeds, mask, labels = reader.batch([item, short])
    before = len(tokenizer(tiny_pretrain.CHAT_BEFORE, add_special_tokens=False)["input_ids"])
    for k, cell in enumerate(item.cells):
        want = embed[ids(rim_token(cell[0]))] + embed[ids(centre_token(cell[1]))] if cell else embed[ids(EMPTY_TOKEN)]
        torch.testing.assert_close(embeds[0, before + k], want)
    torch.testing.assert_close(embeds[1, before], embed[ids(rim_token("red"))] + embed[ids(centre_token("blue"))])
    torch.testing.assert_close(embeds[1, before + 1], embed[ids(EMPTY_TOKEN)])
    answer = tokenizer(item.answer + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert labels[0][labels[0] != -100].tolist() == answer
    caption = tokenizer("A red tile with a blue centre.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    after = tokenizer(tiny_pretrain.CHAT_AFTER.format(question="Name the objects."), add_special_tokens=False)["input_ids"]
    assert labels[1][labels[1] != -100].tolist() == caption
    assert int(mask[1].sum()) == before + 2 + len(after) + len(caption)
    assert int(mask[0].sum()) == labels.shape[1] == embeds.shape[1]
    plain = tiny_pretrain.Sample((None, ("red", "blue")), "Name the objects.", "A red tile with a blue centre.",
                                 (("red", "blue"),), False, plain=True)
    alone, alone_mask, alone_labels = reader.batch([plain])  # the alignment stage's frame: scene, caption
    torch.testing.assert_close(alone[0, 0], embed[ids(EMPTY_TOKEN)])
    torch.testing.assert_close(alone[0, 1], embed[ids(rim_token("red"))] + embed[ids(centre_token("blue"))])
    plain_caption = tokenizer("A red tile with a blue centre.\n", add_special_tokens=False)["input_ids"]
    assert alone_labels[0].tolist() == [-100, -100] + plain_caption and int(alone_mask.sum()) == 2 + len(plain_caption)
    # the pre-training's loss, with the LM head on the supervised positions only, is the model's own
    full = model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(tiny_pretrain.answer_loss(model, embeds, mask, labels), full)
    model.train()  # noise on the cells only
    noisy, _, _ = reader.batch([item, short])
    assert not torch.allclose(noisy[0, before], embeds[0, before])
    torch.testing.assert_close(noisy[0, :before], embeds[0, :before])


def test_pretrained_llm_has_the_world_tokens_and_is_cached(tmp_path, tiny_dir):
    settings = PretrainSettings(steps=2, batch=4, warmup=1)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "qwen2-tiny").symlink_to(tiny_dir / "qwen2-tiny")
    out = make_pretrained_llm(tiny, settings)
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["steps"] == 2 and record["settings"]["steps"] == 2 and record["version"] == tiny_pretrain.PRETRAIN_VERSION
    assert 0 <= record["held_out_multiple_choice"]["after"] <= 1
    tokenizer = AutoTokenizer.from_pretrained(out)
    for token in world_tokens():
        assert len(tokenizer(token + token).input_ids) == 2
    weights = out / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert make_pretrained_llm(tiny, settings) == out and weights.stat().st_mtime_ns == written  # reused
    assert not list(tiny.glob(".*partial"))
