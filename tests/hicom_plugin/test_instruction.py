"""Instruction cleaning: the release's rules with its lstrip bug fixed, plus lmms-eval prompt formats."""

import pytest

from hicom_plugin.instruction import clean_instruction, last_human_turn


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("<video>\nWhat is the man holding?", "What is the man holding?"),
        ("<image>\nWhat colour is the car? Answer the question using a single word or phrase.",
         "What colour is the car?"),
        # release bug: lstrip("Question: ") would eat the "is " of "is it"
        ("Question: is it raining in the video?\nOptions:\n(A) yes\n(B) no", "is it raining in the video?"),
        ("Question: is it raining?", "is it raining?"),
        # MVBench under lmms-eval
        ("Question:What does the person do after opening the door?\nOption:\n(A) sits down\n(B) leaves\n"
         "Only give the best option.\n", "What does the person do after opening the door?"),
        # Video-MME under lmms-eval (default post-prompt)
        ("Select the best answer to the following multiple-choice question based on the video and the "
         "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nHow many dogs appear?\n"
         "A. One.\nB. Two.\nC. Three.\nD. Four.\n\nAnswer with the option's letter from the given choices directly.",
         "How many dogs appear?"),
        # Video-MME with subtitles under llava_vid
        ("This video's subtitles are listed below: \nhello there\nwelcome back\nSelect the best answer to the "
         "following multiple-choice question based on the video and the subtitles. Respond with only the letter "
         "(A, B, C, or D) of the correct option.\nWho speaks first?\nA. a woman\nB. a man\nC. a child\nD. nobody\n"
         "The best answer is:", "Who speaks first?"),
        # EgoSchema
        ("What is the main goal of c?\nA. cook\nB. clean\nC. read\nD. paint\nE. sleep\n"
         "Answer with the option's letter from the given choices directly.", "What is the main goal of c?"),
        # LLaVA-Video time instruction
        ("<image>\nThe video lasts for 12.50 seconds, and 8 frames are uniformly sampled from it. These frames "
         "are located at 0.00s,1.50s.Please answer the following questions related to this video.\n"
         "Describe the red triangle.", "Describe the red triangle."),
        # recovered from a vicuna_v1 prompt (lmms-eval llava_vid default template)
        ("\nWhat is the dog doing? ASSISTANT:", "What is the dog doing?"),
        # a question that merely contains a capital letter and a period stays whole
        ("Describe what happens to the ball.", "Describe what happens to the ball."),
    ],
)
def test_clean_instruction(prompt, expected):
    assert clean_instruction(prompt) == expected


def test_last_human_turn():
    conv = [
        {"from": "human", "value": "<video>\nfirst"},
        {"from": "gpt", "value": "a"},
        {"from": "human", "value": "second"},
        {"from": "gpt", "value": "b"},
    ]
    assert last_human_turn(conv) == "second"
    assert last_human_turn([{"role": "user", "content": "hi"}]) == "hi"
    assert last_human_turn([]) == ""


def test_the_siglip_tokenizer_loads_without_transformers_warnings(tiny_dir):
    """Read through AutoTokenizer alone, the SigLIP folder's config is rebuilt with the default text
    config, whose special-token ids lie outside a small vocabulary: transformers warns on every load."""
    from hicom_plugin.text_encoder import SiglipTextEncoder
    from tests.helpers.hf_warnings import transformers_warnings

    encoder = SiglipTextEncoder(str(tiny_dir / "siglip-tiny"))
    with transformers_warnings() as messages:
        ids = encoder.tokenize(["what moves?"])
    assert messages == [] and ids.shape == (1, encoder.max_length)
