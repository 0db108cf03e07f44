"""Conversation -> ids/labels: labels by construction, for each supported template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import tokenizer_image_token
from llava.train.preprocess import move_placeholder_first, preprocess_conversation

TURNS = [{"from": "human", "value": "What is this? <image>"}, {"from": "gpt", "value": "A cat."},
         {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Black."}]


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir / "qwen2-tiny")


def supervised_text(tokenizer, ids, labels):
    return tokenizer.decode([i for i, l in zip(ids, labels) if l != IGNORE_INDEX])


def test_ids_equal_the_rendered_prompt_tokenised_whole(tokenizer):
    ids, labels = preprocess_conversation(TURNS, tokenizer, "qwen_1_5")
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat is this?")
    conv.append_message(conv.roles[1], "A cat.")
    conv.append_message(conv.roles[0], "Colour?")
    conv.append_message(conv.roles[1], "Black.")
    assert ids == tokenizer_image_token(conv.get_prompt(), tokenizer)
    assert len(labels) == len(ids) and ids.count(IMAGE_TOKEN_INDEX) == 1


def test_only_answers_and_their_end_markers_are_supervised(tokenizer):
    ids, labels = preprocess_conversation(TURNS, tokenizer, "qwen_1_5")
    assert supervised_text(tokenizer, ids, labels) == "A cat.<|im_end|>\nBlack.<|im_end|>\n"
    last_ids, last_labels = preprocess_conversation(TURNS, tokenizer, "qwen_1_5", supervise="last")
    assert last_ids == ids and supervised_text(tokenizer, ids, last_labels) == "Black.<|im_end|>\n"


def test_onevision_label_mode_also_supervises_markers_in_user_turns(tokenizer):
    ids, labels = preprocess_conversation(TURNS, tokenizer, "qwen_1_5", label_mode="onevision")
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    starts = [i for i, t in enumerate(ids) if t == im_start]
    assert all(labels[i] == im_start for i in starts)  # system and user markers too
    answer_ids, answer_labels = preprocess_conversation(TURNS, tokenizer, "qwen_1_5")
    assert sum(l != IGNORE_INDEX for l in labels) > sum(l != IGNORE_INDEX for l in answer_labels)


def test_plain_template_keeps_only_the_placeholder_and_caption(tokenizer):
    ids, labels = preprocess_conversation(TURNS[:2], tokenizer, "plain")
    assert ids[0] == IMAGE_TOKEN_INDEX and labels[0] == IGNORE_INDEX
    assert tokenizer.decode(ids[1:]) == "A cat.\n" and supervised_text(tokenizer, ids, labels) == "A cat.\n"


def test_vicuna_template_supervises_answers_with_separator(tokenizer):
    ids, labels = preprocess_conversation(TURNS, tokenizer, "vicuna_v1")
    text = supervised_text(tokenizer, ids, labels)
    assert text.replace(" ", "").startswith("Acat.") and "Black." in text and "USER" not in text


def test_template_that_does_not_render_incrementally_is_refused(tokenizer):
    with pytest.raises(ValueError, match="llava_llama_3.*does not render turn by turn"):
        preprocess_conversation(TURNS, tokenizer, "llava_llama_3")


def test_bad_conversations_raise(tokenizer):
    with pytest.raises(ValueError, match="alternate"):
        preprocess_conversation(TURNS[:3], tokenizer, "qwen_1_5")
    with pytest.raises(ValueError, match="supervise"):
        preprocess_conversation(TURNS, tokenizer, "qwen_1_5", supervise="first")


def test_placeholder_moves_to_the_front_only_when_single():
    assert move_placeholder_first("Look <image> here") == "<image>\nLook  here"
    assert move_placeholder_first("<image> a <image> b") == "<image> a <image> b"
