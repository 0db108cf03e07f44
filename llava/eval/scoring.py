"""Letter extraction from a model's answer, reproducing each benchmark's official rule.

``--parser-version`` picks the rule where it changed over time:

=========  ==================================================================================
legacy     lmms-eval up to v0.7.1, the rule behind the 2024-25 papers. Video-MME: drop the "The
           answer is"-style prefixes, then the first capital A-D anywhere (inside words too).
           MLVU: the character before the first ")" (or the whole reply when it has none).
current    lmms-eval v0.7.2+ for Video-MME and MLVU: candidates by format, highest priority first
           (a standalone letter at the start, at the end, after an answer phrase, "(X)", "X.",
           "X:", "X)", "X ", anywhere), the later one within a format.
release    the released evaluation scripts' rule (VideoLLaMA2's, kept by the video LLMs built on
           it): the first capital in the option range after removing the word "answer"; else the
           first option whose text the reply contains. Those scripts then defaulted to "C" -- here
           that is a parse failure. (Their quirks are not reproduced: a comma right after the
           letter also fell back to "C", and Video-MME option texts lost their last character
           before the text match.)
=========  ==================================================================================

MVBench (lmms-eval's ``mcq_acc``) and EgoSchema (the MMMU-style parser) did not change between
lmms-eval versions, so ``legacy`` and ``current`` are the same rule there.

Every parser returns a letter or ``None``: a reply without a usable letter is a parse failure,
counted and reported, and never mapped to an option. (lmms-eval's random EgoSchema letter is an
opt-in of the scorer, ``--egoschema-random-fallback``, and counted there.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

PARSER_VERSIONS = ("legacy", "current", "release")

_EDGE_PUNCTUATION = (",", ".", "!", "?", ";", ":", "'", '"')

# "<phrase> X": the letter after the first occurrence of the phrase (lmms-eval v0.7.2's list)
_ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
    "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)
# format -> priority; within one format the later position wins
_FORMATS = (("({})", 6), ("{}.", 5), ("{}:", 4), ("{})", 3), ("{} ", 2))
_PRIORITY_START, _PRIORITY_END, _PRIORITY_PHRASE, _PRIORITY_ANYWHERE = 10, 9, 7, 0


def _strip_each(text: str, chars: Sequence[str]) -> str:
    """``str.strip`` with each character in turn, as the official code does (order matters)."""
    for char in chars:
        text = text.strip(char)
    return text


def extract_letter_current(reply: str, choices: str = "ABCD") -> str | None:
    """lmms-eval v0.7.2+ ``extract_mcq_answer``: the best-ranked candidate letter, case-sensitive."""
    if not reply or not reply.strip():
        return None
    padded = " " + _strip_each(reply.strip(), _EDGE_PUNCTUATION) + " "
    candidates: list[tuple[int, int, str]] = []  # (priority, position, letter)
    for template, priority in _FORMATS:
        for letter in choices:
            position = padded.rfind(template.format(letter))
            if position >= 0:
                candidates.append((priority, position, letter))
    lowered = padded.lower()
    for phrase in _ANSWER_PHRASES:
        at = lowered.find(phrase)
        if at >= 0:
            for letter in choices:
                position = padded.find(letter, at + len(phrase))
                if position >= 0:
                    candidates.append((_PRIORITY_PHRASE, position, letter))
    core = padded.strip()
    for letter in choices:
        if core.startswith(letter) and (len(core) == 1 or not core[1].isalpha()):
            candidates.append((_PRIORITY_START, 0, letter))
        if core.endswith(letter) and (len(core) == 1 or not core[-2].isalpha()):
            candidates.append((_PRIORITY_END, len(padded) - 1, letter))
    if not candidates:
        candidates = [(_PRIORITY_ANYWHERE, padded.rfind(letter), letter) for letter in choices if letter in padded]
    return max(candidates)[2] if candidates else None


# Two entries are fused strings in the original list (a missing comma), so they never match.
_VIDEOMME_LEGACY_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                             "The best option isThe correct option is", "Best answer:Best option:")


def extract_letter_legacy_videomme(reply: str) -> str | None:
    """lmms-eval <= v0.7.1 Video-MME: the first capital A-D after removing the answer prefixes."""
    text = reply.strip()
    for prefix in _VIDEOMME_LEGACY_PREFIXES:
        text = text.replace(prefix, "")
    match = re.search("[ABCD]", text)
    return match.group(0) if match else None


def extract_letter_legacy_mlvu(reply: str, choices: str = "ABCD") -> str | None:
    """lmms-eval <= v0.7.1 MLVU: the character before the first ")", else the whole reply; a letter
    only if that result is one of ``choices``."""
    text = reply.strip()
    if ")" in text:
        at = text.index(")")
        text = text[at - 1 : at] if at > 0 else ""
    return text if len(text) == 1 and text in choices else None


_DIGIT_WORDS = dict(zip("0123456789", ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")))


def extract_letter_release(reply: str, options: Sequence[str], option_text_fallback: bool = True) -> str | None:
    """The release scripts' rule: the first capital in ``A..<last letter>`` once "answer"/"Answer" are
    removed; else (``option_text_fallback``) the first option whose text occurs in the reply, a digit
    option also matching its English word."""
    letters = "ABCDEFGHIJ"[: len(options)]
    text = reply.replace("answer", "").replace("Answer", "")
    match = re.search(f"[{letters[0]}-{letters[-1]}]", text) if letters else None
    if match:
        return match.group(0)
    if option_text_fallback:
        lowered = text.lower()
        for letter, option in zip(letters, options):
            variants = {option.lower(), _DIGIT_WORDS.get(option.strip(), option).lower()}
            if any(v and v in lowered for v in variants):
                return letter
    return None


# --------------------------------------------------------------------------- MVBench

# lmms-eval applies VQA-style punctuation handling before looking for a standalone letter.
_MVBENCH_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                        ",", "?", "!")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
_OPTION_LINE = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)
_STANDALONE = re.compile(r"\b([A-E])\b", re.IGNORECASE)


def _mvbench_punctuation(text: str) -> str:
    out = text
    for p in _MVBENCH_PUNCTUATION:
        if p + " " in text or " " + p in text or _DIGIT_COMMA.search(text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official call passes re.UNICODE where the count goes: at most 32 periods are removed.
    return _PERIOD.sub("", out, count=32)


def mvbench_normalise(reply: str) -> str:
    """lmms-eval's MVBench ``mcq_acc`` normalisation: a letter ``"A"``-``"E"``, or the cleaned text."""
    match = _OPTION_LINE.match(reply.strip())
    if match:
        return match.group(1).upper()
    text = reply.replace("\n", " ").replace("\t", " ").strip()
    text = _mvbench_punctuation(text)
    text = text.strip("'").strip('"').strip(")").strip("(").strip().lower()
    match = _STANDALONE.search(text)
    return match.group(1).upper() if match else text


def mvbench_letter(reply: str) -> str | None:
    """The letter ``mcq_acc`` compares with the ground truth (note: the article "a" reads as A)."""
    normalised = mvbench_normalise(reply)
    return normalised if len(normalised) == 1 and normalised in "ABCDE" else None


# --------------------------------------------------------------------------- EgoSchema


def egoschema_letter(reply: str, options: Sequence[str]) -> str | None:
    """lmms-eval's EgoSchema parser (MMMU-derived).

    Candidates "(X)", "X " and "X."; with several, the one whose last occurrence comes first. With
    none and more than five words, option texts (as lmms-eval formats them, "A. text") contained in
    the reply. Otherwise ``None`` (where lmms-eval picks a random letter).
    """
    letters = "ABCDE"
    text = " " + _strip_each(reply, _EDGE_PUNCTUATION[:-1]) + " "
    candidates = [f"({x})" for x in letters if f"({x})" in text]
    candidates += [f"{x} " for x in letters if f"{x} " in text]
    candidates += [f"{x}." for x in letters if f"{x}." in text]
    by_text = False
    if not candidates and len(text.split()) > 5:
        lettered = {x: f"{x}. {o}".strip().lower() for x, o in zip(letters, options)}
        candidates = [x for x, o in lettered.items() if o in text.lower()]
        by_text = True
    if not candidates:
        return None
    if by_text:
        positions = [text.lower().rfind(f"{x}. {o}".strip().lower()) for x, o in zip(letters, options) if x in candidates]
    else:
        positions = [text.rfind(c) for c in candidates]
    best = candidates[positions.index(min(positions))]
    return best.strip("().").strip() if not by_text else best


# --------------------------------------------------------------------------- dispatch


def extract_letter(benchmark: str, version: str, reply: str, options: Sequence[str]) -> str | None:
    """The letter a benchmark's official rule (``version``) reads from ``reply``, or ``None``."""
    if version not in PARSER_VERSIONS:
        raise ValueError(f"parser version {version!r} is not one of {PARSER_VERSIONS}")
    if version == "release":
        return extract_letter_release(reply, options, option_text_fallback=benchmark != "egoschema")
    if benchmark == "mvbench":
        return mvbench_letter(reply)
    if benchmark == "egoschema":
        return egoschema_letter(reply, options)
    # Video-MME and MLVU score A-D only; MLVU-Test's E/F options could never be credited that way,
    # so an item with more options widens the range to its own letters.
    choices = "ABCDEFGHIJ"[: max(4, len(options))]
    if version == "current":
        return extract_letter_current(reply, choices)
    if benchmark == "mlvu":
        return extract_letter_legacy_mlvu(reply, choices)
    return extract_letter_legacy_videomme(reply)
