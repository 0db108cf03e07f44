"""Conversations -> ``input_ids`` and ``labels`` for supervised training.

A LLaVA conversation (``[{"from": "human"|"gpt", "value": ...}, ...]``) is rendered with a
conversation template (``--version``: ``qwen_1_5``, ``plain``, ``vicuna_v1`` ...) and tokenised
piece by piece, so each token's label is known by construction rather than recovered by searching
the rendered string:

* the text the user side contributes (system prompt, user turn, the assistant's role header) is
  masked with ``IGNORE_INDEX``;
* each answer, through its end-of-turn marker (``<|im_end|>\\n`` for ChatML), is supervised;
* ``<image>`` becomes ``IMAGE_TOKEN_INDEX`` (its features are spliced in by the model).

``supervise="last"`` masks every answer but the last: the instruction-conditioned training
form, where each answer is learnt with the visual tokens compressed for its own question.

``label_mode="onevision"`` reproduces LLaVA-OneVision's ``preprocess_qwen`` quirk for bit-level
parity: every ``<|im_start|>``, ``<|im_end|>`` and lone-newline token is supervised, in user turns
too. The default (``"answer"``) supervises answers only, as the instruction-conditioned releases do.

The ``plain`` template (stage-1 alignment) follows upstream: the human turn is replaced by the
placeholder alone and the caption is supervised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llava import conversation as conversation_lib
from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.mm_utils import tokenizer_image_token

ROLE_OF = {"human": 0, "user": 0, "gpt": 1, "assistant": 1}
LABEL_MODES = ("answer", "onevision")


def turn_role(turn: dict) -> int:
    """0 for a user turn, 1 for an assistant turn (LLaVA's ``from`` or the chat ``role`` key)."""
    role = turn.get("from", turn.get("role"))
    if role not in ROLE_OF:
        raise ValueError(f"turn role {role!r} is not one of {sorted(ROLE_OF)}")
    return ROLE_OF[role]


def turn_text(turn: dict) -> str:
    text = turn.get("value", turn.get("content"))
    if not isinstance(text, str):
        raise ValueError(f"turn text must be a string, got {type(text).__name__}")
    return text


def move_placeholder_first(text: str) -> str:
    """Upstream's ``preprocess_multimodal``: a turn with a single ``<image>`` not at its start gets
    it moved to the front as ``<image>\\n...``; multi-image turns keep their tags in place."""
    if text.count(DEFAULT_IMAGE_TOKEN) == 1 and not text.startswith(DEFAULT_IMAGE_TOKEN):
        rest = text.replace(DEFAULT_IMAGE_TOKEN, "").strip()
        return f"{DEFAULT_IMAGE_TOKEN}\n{rest}"
    return text


def _tokenize_piece(text: str, tokenizer: Any, first: bool) -> list[int]:
    ids = tokenizer_image_token(text, tokenizer)
    bos = getattr(tokenizer, "bos_token_id", None)
    if not first and bos is not None and ids[:1] == [bos]:
        ids = ids[1:]
    return ids


def _pieces_plain(pairs: list[tuple[str, str]], conv) -> list[tuple[str, bool]]:
    if len(pairs) != 1 or DEFAULT_IMAGE_TOKEN not in pairs[0][0]:
        raise ValueError("the 'plain' template takes one (<image> prompt, caption) pair")
    return [(DEFAULT_IMAGE_TOKEN, False), (pairs[0][1] + conv.sep, True)]


def _pieces_from_template(pairs: list[tuple[str, str]], conv, version: str) -> list[tuple[str, bool]]:
    """Splits the rendered conversation into (text, supervised) pieces: each answer's text is what
    rendering it adds to the open generation prompt before it."""
    conv = conv.copy()
    conv.messages = []
    pieces: list[tuple[str, bool]] = []
    done = ""
    for question, answer in pairs:
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], None)
        prompt = conv.get_prompt()
        conv.messages[-1][1] = answer
        full = conv.get_prompt()
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError(
                f"conversation template {version!r} does not render turn by turn (a later rendering is "
                f"not an extension of the earlier one), so answer spans cannot be labelled; use a ChatML "
                f"template (qwen_1_5, qwen_2, chatml_direct), vicuna_v1 or plain"
            )
        pieces += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    return pieces


def preprocess_conversation(
    conversations: Sequence[dict],
    tokenizer: Any,
    version: str,
    supervise: str = "all",
    label_mode: str = "answer",
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation rendered with template ``version``.

    Args:
        conversations: alternating user / assistant turns, starting with the user and ending with
            an answer (the dataset has already checked and normalised them).
        supervise: ``"all"`` answers, or only the ``"last"`` one.
        label_mode: ``"answer"`` or ``"onevision"`` (module docstring).
    """
    if supervise not in ("all", "last"):
        raise ValueError(f"supervise must be 'all' or 'last', got {supervise!r}")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    roles = [turn_role(t) for t in conversations]
    if not roles or len(roles) % 2 or roles != [i % 2 for i in range(len(roles))]:
        raise ValueError(f"conversation must alternate user/assistant turns starting with the user, got roles {roles}")
    texts = [turn_text(t) for t in conversations]
    pairs = [(move_placeholder_first(texts[i]), texts[i + 1]) for i in range(0, len(texts), 2)]
    conv = conversation_lib.get_conv_template(version)
    pieces = _pieces_plain(pairs, conv) if version == "plain" else _pieces_from_template(pairs, conv, version)
    last_answer = max(i for i, (_, supervised) in enumerate(pieces) if supervised)

    input_ids: list[int] = []
    labels: list[int] = []
    for index, (text, supervised) in enumerate(pieces):
        ids = _tokenize_piece(text, tokenizer, first=index == 0)
        keep = supervised and (supervise == "all" or index == last_answer)
        input_ids += ids
        labels += [i if keep and i != IMAGE_TOKEN_INDEX else IGNORE_INDEX for i in ids]
    if label_mode == "onevision":
        _supervise_markers(input_ids, labels, tokenizer)
    return input_ids, labels


def _supervise_markers(input_ids: list[int], labels: list[int], tokenizer: Any) -> None:
    markers = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")}
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    if len(newline) == 1:
        markers.add(newline[0])
    markers.discard(getattr(tokenizer, "unk_token_id", None))
    for i, token in enumerate(input_ids):
        if token in markers:
            labels[i] = token
