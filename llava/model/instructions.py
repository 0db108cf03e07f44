"""Instructions recovered from a prompt, for projectors conditioned on them when callers pass none.

lmms-eval and most chat front ends hand the model ``input_ids`` only; an instruction-conditioned
projector still needs the question asked about each visual item. It is the text of the user turn after
each ``<image>`` placeholder, up to the end of that turn (or the next placeholder).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from llava.constants import IMAGE_TOKEN_INDEX

#: Tokens that end a user turn besides the tokenizer's EOS (ChatML).
TURN_END_TOKENS = ("<|im_end|>",)


def turn_end_ids(tokenizer) -> set[int]:
    vocab = tokenizer.get_vocab()
    ids = {tokenizer.convert_tokens_to_ids(t) for t in TURN_END_TOKENS if t in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def recover_instructions(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    tokenizer,
    clean: Callable[[str], str] = str.strip,
) -> list[str]:
    """One instruction per visual item, in placeholder order; ``""`` for a row without placeholder
    (the dummy item of a text-only sample).

    Args:
        input_ids: ``(B, L)`` prompt ids with ``IMAGE_TOKEN_INDEX`` placeholders.
        attention_mask: ``(B, L)`` or ``None``; padded positions are ignored.
        tokenizer: the LLM tokenizer (decodes the turn text).
        clean: turns the decoded turn into the instruction (a projector strips benchmark boilerplate).
    """
    end_ids = turn_end_ids(tokenizer)
    instructions: list[str] = []
    for row, ids in enumerate(input_ids):
        if attention_mask is not None:
            ids = ids[attention_mask[row].bool()]
        ids = ids.tolist()
        starts = [i for i, tok in enumerate(ids) if tok == IMAGE_TOKEN_INDEX]
        if not starts:
            instructions.append("")
            continue
        for start in starts:
            end = start + 1
            while end < len(ids) and ids[end] not in end_ids and ids[end] != IMAGE_TOKEN_INDEX:
                end += 1
            instructions.append(clean(tokenizer.decode(ids[start + 1 : end], skip_special_tokens=True)))
    return instructions
