"""Rendered prompts must equal LLaVA-NeXT's byte for byte (checkpoints were trained on them)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from llava import conversation
from llava.conversation import (
    Conversation,
    SeparatorStyle,
    UnknownConversationTemplateError,
    conv_templates,
    get_conv_template,
)

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
HUMAN_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
# Meta-Llama-3-8B-Instruct's chat template, the one upstream rendered llava_llama_3 with.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

REQUIRED_TEMPLATES = {
    "default", "v0", "v1", "vicuna_v1", "llama_2", "mistral_instruct", "plain", "v0_plain", "chatml_direct",
    "llava_v0", "llava_v1", "llava_llama_2", "mpt", "qwen_1_5", "qwen_2", "qwen_2_5", "gemma_instruct",
    "llava_llama_3",
}


def render(name: str, *turns) -> str:
    """Render template ``name`` after appending ``turns`` (alternating user / assistant)."""
    conv = get_conv_template(name)
    for index, message in enumerate(turns):
        conv.append_message(conv.roles[index % 2], message)
    return conv.get_prompt()


def test_required_templates_and_styles_exist():
    assert REQUIRED_TEMPLATES <= set(conv_templates)
    assert {style.name for style in SeparatorStyle} == {
        "SINGLE", "TWO", "MPT", "PLAIN", "CHATML", "LLAMA_2", "LLAMA_3", "QWEN", "GEMMA",
    }
    assert conversation.default_conversation is conv_templates["default"]


@pytest.mark.parametrize("name", ["qwen_1_5", "qwen_2"])
def test_qwen_prompt(name):
    assert render(name, "<image>\nQ", None) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nQ<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen_2_5_prompt_has_its_own_system_text():
    assert render("qwen_2_5", "<image>\nQ", None) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nQ<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen_multi_turn_with_answers():
    assert render("qwen_1_5", "Q1", "A1", "Q2", None) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("name", ["plain", "v0_plain"])
def test_plain_prompt(name):
    assert render(name, "<image>\nQ", None) == "<image>\nQ\n"
    # Upstream crashes on an answered plain turn (sep2 is unset); we fall back to sep.
    assert render(name, "<image>", "caption") == "<image>\ncaption\n"


@pytest.mark.parametrize(
    "name, system", [("vicuna_v1", VICUNA_V1_SYSTEM), ("v1", VICUNA_V1_SYSTEM), ("llava_v1", HUMAN_SYSTEM)]
)
def test_vicuna_v1_style_prompt(name, system):
    assert render(name, "<image>\nQ", None) == system + " USER: <image>\nQ ASSISTANT:"
    assert render(name, "Q1", "A1", "Q2", None) == system + " USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"


def test_llava_v0_single_style():
    assert render("llava_v0", "Q", None) == HUMAN_SYSTEM + "###Human: Q###Assistant:"


def test_default_template_keeps_its_example_turns():
    prompt = render("default", "Q", None)
    assert prompt.startswith(
        HUMAN_SYSTEM + "###Human: What are the key differences between renewable and non-renewable energy sources?"
        "###Assistant: Renewable energy sources are those"
    )
    assert prompt.endswith("instability.\n###Human: Q###Assistant:")
    assert conv_templates["default"].offset == 2


def test_llama_2_prompts():
    assert render("llava_llama_2", "Q", "A", "Q2", None) == (
        "[INST] <<SYS>>\nYou are a helpful language and vision assistant. You are able to understand the visual "
        "content that the user provides, and assist the user with a variety of tasks using natural language."
        "\n<</SYS>>\n\nQ [/INST] A </s><s>[INST] Q2 [/INST]"
    )
    assert render("mistral_instruct", "Q", None) == "[INST] Q [/INST]"
    assert render("llava_mistral_instruct", "Q", "A", "Q2", None) == "[INST] Q [/INST] A </s>[INST] Q2 [/INST]"
    with pytest.raises(ValueError, match="non-empty first message"):
        render("llama_2", None)


def test_mpt_style_prompts():
    assert render("chatml_direct", "<image>\nQ", None) == (
        "<|im_start|>system\nAnswer the questions.<|im_end|>"
        "<|im_start|>user\n<image>\nQ<|im_end|><|im_start|>assistant\n"
    )
    assert render("mistral_zephyr", "Q", None) == (
        "<|system|>\nYou are a helpful AI assistant.</s><|user|>\nQ</s><|assistant|>\n"
    )


def test_gemma_prompt_and_role_check():
    assert render("gemma_instruct", "Q", None) == "<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n"
    conv = get_conv_template("gemma_instruct")
    conv.append_message(conv.roles[1], "A")
    with pytest.raises(ValueError, match="alternate"):
        conv.get_prompt()


def _llama3_reference_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({"<unk>": 0, "<|begin_of_text|>": 1}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", unk_token="<unk>")
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    return tokenizer


def test_llama_3_is_rendered_without_a_tokenizer_and_matches_the_chat_template():
    conv = get_conv_template("llava_llama_3")
    assert conv.tokenizer is None
    for index, message in enumerate(["<image>\n  Q ", "A  ", "Q2", None]):
        conv.append_message(conv.roles[index % 2], message)
    chat = [{"role": "system", "content": conv.system}]
    chat += [{"role": role, "content": message} for role, message in conv.messages if message]
    expected = _llama3_reference_tokenizer().apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert conv.get_prompt() == expected
    assert conv.get_prompt().endswith(
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\n  Q<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQ2<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert conv.stop_token_ids == [128009]


def test_first_turn_image_tuple_is_normalised_to_lead_with_image_token():
    assert render("qwen_1_5", ("What is <image> this?", object(), "Default"), None) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhat is  this?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render("vicuna_v1", ("<image>\nQ", object(), "Default"), None) == (
        VICUNA_V1_SYSTEM + " USER: <image>\nQ ASSISTANT:"
    )


def test_mmtag_versions_get_the_image_preamble():
    assert render("llava_v1_mmtag", ("<image>\nQ", object(), "Default"), None).endswith(
        " USER: <Image><image></Image> ASSISTANT: Received.</s>USER: Q ASSISTANT:"
    )


def test_chatml_prefixes_one_image_token_per_image_in_later_tuples():
    prompt = render("qwen_1_5", "Q1", "A1", ("Q2", ["img_a", "img_b"], "Default"), None)
    assert "<|im_start|>user\n<image><image>Q2<|im_end|>\n" in prompt
    # Other styles use the text only.
    prompt = render("vicuna_v1", "Q1", "A1", ("Q2", ["img_a", "img_b"], "Default"), None)
    assert prompt.endswith("USER: Q2 ASSISTANT:")


def test_copy_is_independent_and_messages_are_mutable_lists():
    template = conv_templates["qwen_1_5"]
    conv = template.copy()
    conv.append_message(conv.roles[0], "Q")
    conv.append_message(conv.roles[1], None)
    conv.messages[-1][1] = "answer"  # lmms-eval's loglikelihood path assigns like this
    assert template.messages == []
    assert conv.messages == [["<|im_start|>user", "Q"], ["<|im_start|>assistant", "answer"]]
    assert get_conv_template("llava_llama_3").stop_token_ids == [128009]
    assert get_conv_template("qwen_2_5") is not conv_templates["qwen_2_5"]


def test_dict_and_gradio_export_reduce_tuples_to_text():
    conv = get_conv_template("vicuna_v1")
    conv.append_message(conv.roles[0], ("<image>\nQ", object(), "Default"))
    conv.append_message(conv.roles[1], "A")
    snapshot = conv.dict()
    assert snapshot["messages"] == [["USER", "<image>\nQ"], ["ASSISTANT", "A"]]
    assert (snapshot["sep"], snapshot["sep2"], snapshot["offset"]) == (" ", "</s>", 0)
    assert conv.to_gradio_chatbot() == [["<image>\nQ", "A"]]


def test_unknown_template_error_lists_known_names():
    with pytest.raises(KeyError) as info:
        conv_templates["qwen15"]
    message = str(info.value)
    assert message.startswith("Unknown conversation template 'qwen15'; known templates: ")
    assert "qwen_1_5" in message and "vicuna_v1" in message
    with pytest.raises(ValueError, match="known templates: .*llava_llama_3"):
        get_conv_template("nope")
    assert issubclass(UnknownConversationTemplateError, KeyError)
    assert conv_templates.get("nope") is None


def test_unrenderable_style_raises_value_error():
    conv = Conversation(system="", roles=("a", "b"), messages=[["a", "x"]], offset=0, sep_style=SeparatorStyle.QWEN)
    with pytest.raises(ValueError, match="QWEN"):
        conv.get_prompt()
