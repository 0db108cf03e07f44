"""Conversation templates: how a chat is rendered into the prompt string the LLM sees.

A ``Conversation`` holds a system prompt, two role names and a list of ``[role, message]`` turns;
``get_prompt()`` renders them according to ``sep_style``. The rendered strings must match
LLaVA-NeXT byte for byte, because published checkpoints were trained on them and lmms-eval's
stock wrappers build prompts through ``conv_templates[name].copy()``.

Typical use::

    conv = get_conv_template("qwen_1_5")
    conv.append_message(conv.roles[0], "<image>\\nWhat is shown?")
    conv.append_message(conv.roles[1], None)   # None = "the model speaks next"
    prompt = conv.get_prompt()

A message may also be a tuple ``(text, image_or_images, mode)`` as the serving UI produces; only
its text is rendered (the first user turn is normalised to start with ``<image>``).

Nothing here touches the network: the Llama-3 format is rendered from strings instead of loading
the Meta-Llama-3 tokenizer at import time as upstream does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from enum import Enum, auto
from typing import Any

from llava.constants import DEFAULT_IMAGE_TOKEN

__all__ = [
    "Conversation",
    "SeparatorStyle",
    "UnknownConversationTemplateError",
    "conv_templates",
    "default_conversation",
    "get_conv_template",
]


class SeparatorStyle(Enum):
    """How turns are joined when a ``Conversation`` is rendered."""

    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    CHATML = auto()
    LLAMA_2 = auto()
    LLAMA_3 = auto()
    QWEN = auto()  # kept for enum compatibility; no template uses it and it cannot be rendered
    GEMMA = auto()


# Llama-3 special strings; the format is the Meta-Llama-3-Instruct chat template.
_LLAMA3_BOS = "<|begin_of_text|>"
_LLAMA3_EOT = "<|eot_id|>"


def _llama3_header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


def _image_count(images: Any) -> int:
    return len(images) if isinstance(images, (list, tuple)) else 1


@dataclasses.dataclass
class Conversation:
    """A chat history plus the rules for rendering it into a prompt.

    Field order matches upstream so positional construction keeps working.
    ``tokenizer_id`` and ``tokenizer`` are accepted for compatibility with code that sets them;
    rendering never uses them.
    """

    system: str
    roles: Sequence[str]
    messages: list[list[Any]]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"

    tokenizer_id: str = ""
    tokenizer: Any = None
    # Extra stop string(s) / token ids for generation besides EOS.
    stop_str: str | list[str] | None = None
    stop_token_ids: list[int] | None = None

    skip_next: bool = False

    # ------------------------------------------------------------------ editing

    def append_message(self, role: str, message: Any) -> None:
        """Append a turn; ``message=None`` leaves the turn open for the model to complete."""
        self.messages.append([role, message])

    def copy(self) -> Conversation:
        """Return an independent copy (the message list and each turn are new lists)."""
        return dataclasses.replace(self, messages=[[role, message] for role, message in self.messages])

    # ---------------------------------------------------------------- rendering

    def get_prompt(self) -> str:
        """Render the conversation into the prompt string for ``sep_style``."""
        renderer = _RENDERERS.get(self.sep_style)
        if renderer is None:
            raise ValueError(
                f"Conversation.sep_style={self.sep_style} has no renderer; "
                f"supported: {', '.join(style.name for style in _RENDERERS)}"
            )
        return renderer(self, self._turns_for_rendering())

    def _turns_for_rendering(self) -> list[tuple[str, str | None]]:
        """Turn ``messages`` into ``(role, text or None)`` pairs, resolving image tuples.

        The first turn, when it is a tuple, is normalised the way upstream does it: its text
        starts with ``<image>\\n`` (or, for ``mmtag`` versions, a two-turn image preamble is
        inserted before it). Later tuples contribute their text; CHATML and Llama-3 additionally
        prefix one ``<image>`` per attached image, as upstream's multi-image server expects.
        """
        prefix_images = self.sep_style in (SeparatorStyle.CHATML, SeparatorStyle.LLAMA_3)
        turns: list[tuple[str, str | None]] = []
        for index, (role, message) in enumerate(self.messages):
            if isinstance(message, tuple):
                text, images = message[0], (message[1] if len(message) > 1 else None)
                if index == 0 and "mmtag" in self.version:
                    turns += [(self.roles[0], "<Image><image></Image>"), (self.roles[1], "Received.")]
                    message = text.replace(DEFAULT_IMAGE_TOKEN, "").strip()
                elif index == 0 and not text.startswith(DEFAULT_IMAGE_TOKEN):
                    message = DEFAULT_IMAGE_TOKEN + "\n" + text.replace(DEFAULT_IMAGE_TOKEN, "").strip()
                elif index > 0 and prefix_images and images is not None:
                    message = DEFAULT_IMAGE_TOKEN * _image_count(images) + text
                else:
                    message = text
            turns.append((role, message))
        return turns

    # ------------------------------------------------------------------ exports

    def dict(self) -> dict[str, Any]:
        """A JSON-friendly snapshot; image tuples are reduced to their text."""
        return {
            "system": self.system,
            "roles": self.roles,
            "messages": [[role, _text_of(message)] for role, message in self.messages],
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
        }

    def to_gradio_chatbot(self) -> list[list[str | None]]:
        """``[[user_text, assistant_text_or_None], ...]`` for the turns after ``offset``."""
        pairs: list[list[str | None]] = []
        for index, (_, message) in enumerate(self.messages[self.offset :]):
            if index % 2 == 0:
                pairs.append([_text_of(message), None])
            else:
                pairs[-1][1] = _text_of(message)
        return pairs


def _text_of(message: Any) -> Any:
    return message[0] if isinstance(message, tuple) else message


# ---------------------------------------------------------------------- renderers
# Each renderer takes the conversation and its resolved (role, text-or-None) turns. A falsy text
# (None or "") means "open turn": only the role marker is emitted, as upstream does.

Turns = list[tuple[str, Any]]


def _render_single(conv: Conversation, turns: Turns) -> str:
    out = conv.system + conv.sep
    for role, text in turns:
        out += f"{role}: {text}{conv.sep}" if text else f"{role}:"
    return out


def _render_two(conv: Conversation, turns: Turns) -> str:
    seps = (conv.sep, conv.sep2)
    out = conv.system + conv.sep
    for index, (role, text) in enumerate(turns):
        out += f"{role}: {text}{seps[index % 2]}" if text else f"{role}:"
    return out


def _render_chatml(conv: Conversation, turns: Turns) -> str:
    out = "" if conv.system == "" else conv.system + conv.sep + "\n"
    for role, text in turns:
        out += f"{role}\n{text}{conv.sep}\n" if text else f"{role}\n"
    return out


def _render_llama3(conv: Conversation, turns: Turns) -> str:
    # Same output as Meta-Llama-3-8B-Instruct's chat template with add_generation_prompt=True:
    # BOS, a system block, one block per non-empty turn (content trimmed), then an open
    # assistant header.
    out = _LLAMA3_BOS + _llama3_header("system") + conv.system.strip() + _LLAMA3_EOT
    for role, text in turns:
        if text:
            out += _llama3_header(role) + text.strip() + _LLAMA3_EOT
    return out + _llama3_header("assistant")


def _render_mpt(conv: Conversation, turns: Turns) -> str:
    out = conv.system + conv.sep
    for role, text in turns:
        out += f"{role}{text}{conv.sep}" if text else role
    return out


def _render_gemma(conv: Conversation, turns: Turns) -> str:
    out = ""
    for index, (role, text) in enumerate(turns):
        expected = conv.roles[index % 2]
        if role != expected:
            raise ValueError(
                f"Gemma conversations must alternate {conv.roles[0]!r}/{conv.roles[1]!r}; "
                f"turn {index} has role {role!r}, expected {expected!r}"
            )
        out += f"{role}{text}{conv.sep}" if text else role
    return out


def _render_llama2(conv: Conversation, turns: Turns) -> str:
    if turns and not turns[0][1]:
        raise ValueError("Llama-2 conversations need a non-empty first message")
    if turns and turns[0][0] != conv.roles[0]:
        raise ValueError(f"Llama-2 conversations must start with role {conv.roles[0]!r}, got {turns[0][0]!r}")
    out = ""
    for index, (_, text) in enumerate(turns):
        if not text:
            continue
        if index == 0 and conv.system:
            text = f"<<SYS>>\n{conv.system}\n<</SYS>>\n\n{text}"
        if index % 2 == 0:
            out += f"{conv.sep}[INST] {text} [/INST]"
        else:
            out += f" {text} {conv.sep2}"
    return out.removeprefix(conv.sep)


def _render_plain(conv: Conversation, turns: Turns) -> str:
    # Upstream leaves sep2 unset for "plain" and would crash on an answered turn; use sep then.
    seps = (conv.sep, conv.sep if conv.sep2 is None else conv.sep2)
    out = conv.system
    for index, (_, text) in enumerate(turns):
        if text:
            out += text + seps[index % 2]
    return out


_RENDERERS: dict[SeparatorStyle, Callable[[Conversation, Turns], str]] = {
    SeparatorStyle.SINGLE: _render_single,
    SeparatorStyle.TWO: _render_two,
    SeparatorStyle.CHATML: _render_chatml,
    SeparatorStyle.LLAMA_3: _render_llama3,
    SeparatorStyle.MPT: _render_mpt,
    SeparatorStyle.GEMMA: _render_gemma,
    SeparatorStyle.LLAMA_2: _render_llama2,
    SeparatorStyle.PLAIN: _render_plain,
}


# ---------------------------------------------------------------------- templates
# System prompts and separators are reproduced exactly from LLaVA-NeXT; checkpoints depend on them.

_VICUNA_V0_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_MMTAG_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant is able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
    "The visual content will be provided with the following format: <Image>visual content</Image>."
)
_LLAVA_LLAMA_SYSTEM = (
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
)
_LLAMA_2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased "
    "and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of "
    "answering something not correct. If you don't know the answer to a question, please don't "
    "share false information."
)
_VICUNA_V0_EXAMPLE = [
    ["Human", "What are the key differences between renewable and non-renewable energy sources?"],
    [
        "Assistant",
        "Renewable energy sources are those that can be replenished naturally in a relatively "
        "short amount of time, such as solar, wind, hydro, geothermal, and biomass. "
        "Non-renewable energy sources, on the other hand, are finite and will eventually be "
        "depleted, such as coal, oil, and natural gas. Here are some key differences between "
        "renewable and non-renewable energy sources:\n"
        "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable "
        "energy sources are finite and will eventually run out.\n"
        "2. Environmental impact: Renewable energy sources have a much lower environmental impact "
        "than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, "
        "and other negative effects.\n"
        "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically "
        "have lower operational costs than non-renewable sources.\n"
        "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote "
        "locations than non-renewable sources.\n"
        "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different "
        "situations and needs, while non-renewable sources are more rigid and inflexible.\n"
        "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
        "non-renewable sources are not, and their depletion can lead to economic and social instability.\n",
    ],
]

_CHATML_USER_ASSISTANT = ("<|im_start|>user\n", "<|im_start|>assistant\n")


def _llama2_style(system: str, version: str = "llama_v2", sep: str = "<s>") -> Conversation:
    return Conversation(
        system=system,
        roles=("USER", "ASSISTANT"),
        messages=[],
        offset=0,
        sep_style=SeparatorStyle.LLAMA_2,
        sep=sep,
        sep2="</s>",
        version=version,
    )


def _mpt_style(system: str, roles: tuple[str, str] = _CHATML_USER_ASSISTANT, sep: str = "<|im_end|>") -> Conversation:
    return Conversation(
        system=system, roles=roles, messages=[], offset=0, sep_style=SeparatorStyle.MPT, sep=sep, version="mpt"
    )


def _qwen_style(system_text: str) -> Conversation:
    return Conversation(
        system="<|im_start|>system\n" + system_text,
        roles=("<|im_start|>user", "<|im_start|>assistant"),
        messages=[],
        offset=0,
        sep_style=SeparatorStyle.CHATML,
        sep="<|im_end|>",
        version="qwen",
    )


conv_vicuna_v0 = Conversation(
    system=_VICUNA_V0_SYSTEM,
    roles=("Human", "Assistant"),
    messages=[list(turn) for turn in _VICUNA_V0_EXAMPLE],
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)
conv_vicuna_v1 = Conversation(
    system=_VICUNA_V1_SYSTEM,
    roles=("USER", "ASSISTANT"),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
    version="v1",
)
conv_llama_2 = _llama2_style(_LLAMA_2_SYSTEM)
conv_llava_llama_2 = _llama2_style(_LLAVA_LLAMA_SYSTEM)
conv_llava_llama_2_simple = _llama2_style("Answer the questions about the visual content that the user provides.")
conv_llava_llama_2_mmtag = _llama2_style(
    "Answer the questions about the visual content that the user provides."
    "The visual content will be provided with the following format: <Image>visual content</Image>.",
    version="llama_v2_mmtag",
)
conv_mistral_instruct = _llama2_style("", sep="")
conv_llava_llama_3 = Conversation(
    system=_LLAVA_LLAMA_SYSTEM,
    roles=("user", "assistant"),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.LLAMA_3,
    sep=_LLAMA3_EOT,
    version="llama_v3",
    tokenizer_id="meta-llama/Meta-Llama-3-8B-Instruct",
    stop_token_ids=[128009],  # <|eot_id|> in the Llama-3 vocabulary
)
conv_mpt = _mpt_style(
    "<|im_start|>system\n"
    "A conversation between a user and an LLM-based AI assistant. The assistant gives helpful and honest answers."
)
conv_mistral_orca = _mpt_style(
    "<|im_start|>system\n"
    "You are MistralOrca, a large language model trained by Alignment Lab AI. "
    "Write out your reasoning step-by-step to be sure you get the right answers!"
)
conv_mistral_zephyr = _mpt_style(
    "<|system|>\nYou are a helpful AI assistant.", roles=("<|user|>\n", "<|assistant|>\n"), sep="</s>"
)
conv_mistral_direct = _mpt_style("<|im_start|>system\nAnswer the questions.")
conv_chatml_direct = _mpt_style("<|im_start|>system\nAnswer the questions.")
conv_qwen = _qwen_style("You are a helpful assistant.")
conv_qwen_2_5 = _qwen_style("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
conv_gemma_instruct = Conversation(
    system="",
    roles=("<start_of_turn>user\n", "<start_of_turn>model\n"),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.GEMMA,
    sep="<end_of_turn>\n",
    version="gemma",
)
conv_llava_plain = Conversation(
    system="", roles=("", ""), messages=[], offset=0, sep_style=SeparatorStyle.PLAIN, sep="\n"
)
conv_llava_v0 = Conversation(
    system=_VICUNA_V0_SYSTEM,
    roles=("Human", "Assistant"),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)
conv_llava_v0_mmtag = Conversation(
    system=_MMTAG_SYSTEM,
    roles=("Human", "Assistant"),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
    version="v0_mmtag",
)
conv_llava_v1 = Conversation(
    system=_VICUNA_V0_SYSTEM,
    roles=("USER", "ASSISTANT"),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
    version="v1",
)
conv_llava_v1_mmtag = dataclasses.replace(conv_llava_v1, system=_MMTAG_SYSTEM, messages=[], version="v1_mmtag")


class UnknownConversationTemplateError(KeyError, ValueError):
    """Raised for a template name that is not in ``conv_templates``.

    It is both a ``KeyError`` (what ``dict[...]`` callers expect) and a ``ValueError`` (what
    argument validation expects), and its message lists the known names.
    """

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


class _TemplateRegistry(dict):
    """``dict`` of name -> Conversation whose missing-key error lists the known names."""

    def __missing__(self, name: str) -> Conversation:
        raise UnknownConversationTemplateError(
            f"Unknown conversation template {name!r}; known templates: {', '.join(sorted(self))}"
        )


conv_templates: dict[str, Conversation] = _TemplateRegistry(
    {
        "default": conv_vicuna_v0,
        "v0": conv_vicuna_v0,
        "v1": conv_vicuna_v1,
        "vicuna_v1": conv_vicuna_v1,
        "llama_2": conv_llama_2,
        "mistral_instruct": conv_mistral_instruct,
        "mistral_orca": conv_mistral_orca,
        "mistral_zephyr": conv_mistral_zephyr,
        "mistral_direct": conv_mistral_direct,
        "plain": conv_llava_plain,
        "v0_plain": conv_llava_plain,
        "chatml_direct": conv_chatml_direct,
        "llava_v0": conv_llava_v0,
        "llava_v0_mmtag": conv_llava_v0_mmtag,
        "llava_v1": conv_llava_v1,
        "llava_v1_mmtag": conv_llava_v1_mmtag,
        "llava_llama_2": conv_llava_llama_2,
        "llava_llama_3": conv_llava_llama_3,
        "llava_llama_2_simple": conv_llava_llama_2_simple,
        "llava_llama_2_mmtag": conv_llava_llama_2_mmtag,
        "llava_mistral_instruct": conv_mistral_instruct,
        "mpt": conv_mpt,
        "qwen_1_5": conv_qwen,
        "qwen_2": conv_qwen,
        "qwen_2_5": conv_qwen_2_5,
        "gemma_instruct": conv_gemma_instruct,
    }
)

# The template training preprocessing uses; ``llava.train`` reassigns it from ``--version``.
default_conversation = conv_vicuna_v0


def get_conv_template(name: str) -> Conversation:
    """Return a fresh copy of template ``name``.

    Raises:
        UnknownConversationTemplateError: (a ``KeyError`` and ``ValueError``) listing known names.
    """
    return conv_templates[name].copy()
