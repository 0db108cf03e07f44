"""The instruction HICom conditions on: the question alone, without benchmark boilerplate.

Training takes the last human turn of a sample; evaluation harnesses such as lmms-eval only hand the
model a full prompt. Both go through :func:`clean_instruction`, which keeps the question and drops
what is not about the video's content: modality tags, the LLaVA-Video time sentence, benchmark
prefaces and post-prompts, option lists and subtitle blocks.

Differences from the release's ``extract_guided_prompt``: ``"Question: "`` is removed as a prefix
(the release's ``lstrip("Question: ")`` strips a *character set* and so turns
"Question: is it raining?" into "it raining?"), and the lmms-eval prompt formats are recognised.
"""

from __future__ import annotations

import re

#: Sentences that say how to answer, not what to look at; removed wherever they appear.
ANSWER_FORMAT_SENTENCES = (
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "Please provide your answer by stating the letter followed by the full option.",
    "Please respond with only the letter of the correct answer.",
    "Only give the best option.",
    "The best answer is:",
    "Best option:",
    "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
    "Respond with only the letter (A, B, C, or D) of the correct option.",
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option.",
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement "
    "of objects, and the action and pose of persons. Based on your observations, select the best option that "
    "accurately addresses the question.",
)

_MODAL_TAGS = re.compile(r"<(image|video)>")
_TIME_SENTENCE = re.compile(
    r"The video lasts for [\d.]+ seconds, and \d+ frames are uniformly sampled from it\. "
    r"These frames are located at .*?\.\s*Please answer the following questions related to this video\.",
    re.DOTALL,
)
_SUBTITLES = re.compile(r"This video's subtitles are listed below:.*?(?=Select the best answer|$)", re.DOTALL)
# An option list starts at a header ("Options:", "Option:") or at the first line shaped like
# "A. text", "(A) text" or "A) text"; everything from there on is options.
_OPTIONS_START = re.compile(r"(^|\n)\s*(Options?\s*:|\(?[A-E][.)]\s)", re.IGNORECASE)
_QUESTION_PREFIX = re.compile(r"^\s*Question\s*:\s*", re.IGNORECASE)
# A prompt recovered from input_ids under a non-ChatML template (e.g. vicuna_v1, lmms-eval
# llava_vid's default) runs on into the assistant's role marker.
_TRAILING_ROLE = re.compile(r"\s*(###\s*)?(ASSISTANT|Assistant|assistant|GPT)\s*:\s*$")


def clean_instruction(text: str) -> str:
    """The question in ``text`` with modality tags, time sentence, boilerplate and options removed."""
    text = _MODAL_TAGS.sub("", text)
    text = _TRAILING_ROLE.sub("", text)
    text = _TIME_SENTENCE.sub("", text)
    text = _SUBTITLES.sub("", text)
    for sentence in ANSWER_FORMAT_SENTENCES:
        text = text.replace(sentence, "")
    text = text.strip()
    match = _OPTIONS_START.search(text)
    if match is not None and match.start() > 0:
        text = text[: match.start()]
    text = _QUESTION_PREFIX.sub("", text)
    return " ".join(text.split())


def last_human_turn(conversations: list[dict]) -> str:
    """The last ``human``/``user`` message of a LLaVA conversation list ('' if there is none)."""
    for turn in reversed(conversations):
        role = turn.get("from", turn.get("role"))
        if role in ("human", "user"):
            return turn.get("value", turn.get("content", ""))
    return ""
