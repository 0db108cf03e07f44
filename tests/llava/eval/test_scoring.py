"""Letter extraction on hand-written replies: each benchmark's official rule, parser versions, and the
cases where the pre-0.7.2 and current lmms-eval rules disagree."""

import pytest

from llava.eval.scoring import (
    egoschema_letter,
    extract_letter,
    extract_letter_current,
    extract_letter_legacy_mlvu,
    extract_letter_legacy_videomme,
    extract_letter_release,
    mvbench_letter,
)

# reply -> (current v0.7.2+, legacy Video-MME <= v0.7.1, legacy MLVU <= v0.7.1)
CASES = {
    "B": ("B", "B", "B"),
    "(C)": ("C", "C", "C"),
    "The answer is (C).": ("C", "C", "C"),
    "C. Because A is wrong": ("C", "C", None),
    "I choose C": ("C", "C", None),
    "D: the man": ("D", "D", None),
    "Best option: (B) the dog": ("B", "B", "B"),
    "C) folding clothes": ("C", "C", "C"),
    "答案是B": ("B", "B", None),
    # the two versions disagree:
    "After watching the video, the answer is B.": ("B", "A", None),  # legacy: the A of "After"
    "Answer: D": ("D", "A", None),  # "Answer" is not one of the legacy prefixes
    "Both A and B are possible, but the best answer is D": ("D", "B", None),  # legacy: the B of "Both"
    "The correct option is B, not A.": ("A", "B", None),  # current: a letter at the end outranks the phrase
    "A man walks (C)": ("A", "A", "C"),  # current: a standalone letter at the start ranks first
    "Because of A) and B)": ("B", "B", "A"),  # MLVU legacy: the letter before the first ")"
    "The answer is C": ("C", "C", None),  # MLVU legacy keeps the whole reply: no letter
    # no letter at all, or only inside words / lower case:
    "Dog": ("D", "D", None),
    "b": (None, None, None),
    "": (None, None, None),
    "It is not clear from the video what happens next here at all": (None, None, None),
}


@pytest.mark.parametrize("reply", list(CASES))
def test_current_and_legacy_rules(reply):
    current, legacy_videomme, legacy_mlvu = CASES[reply]
    assert extract_letter_current(reply, "ABCD") == current
    assert extract_letter_legacy_videomme(reply) == legacy_videomme
    assert extract_letter_legacy_mlvu(reply) == legacy_mlvu
    options = ["w", "x", "y", "z"]
    assert extract_letter("videomme", "current", reply, options) == current
    assert extract_letter("videomme", "legacy", reply, options) == legacy_videomme
    assert extract_letter("mlvu", "current", reply, options) == current
    assert extract_letter("mlvu", "legacy", reply, options) == legacy_mlvu


def test_current_rule_is_case_sensitive_and_limited_to_choices():
    assert extract_letter_current("(e)", "ABCD") is None
    assert extract_letter_current("The answer is E", "ABCD") is None
    assert extract_letter_current("The answer is E", "ABCDE") == "E"
    # within one format the later occurrence wins
    assert extract_letter_current("(A) is wrong, (C) is right", "ABCD") == "C"


def test_mlvu_items_with_more_than_four_options_can_score_e_and_f():
    six = ["o1", "o2", "o3", "o4", "o5", "o6"]
    assert extract_letter("mlvu", "current", "F) the sixth", six) == "F"
    assert extract_letter("mlvu", "current", "F) the sixth", six[:4]) is None


@pytest.mark.parametrize("reply, letter", [
    ("(B) red", "B"),
    ("B. The man", "B"),
    ("Option E", "E"),
    ("The answer is (C).", "C"),
    ("(d)", "D"),
    ("b", "B"),
    ("I think it's C, because", "C"),
    ("A person is walking", "A"),  # the article "a" reads as option A (official quirk)
    ("red", None),
    ("1.5 seconds", None),
    ("", None),
])
def test_mvbench_mcq_acc(reply, letter):
    assert mvbench_letter(reply) == letter
    for version in ("legacy", "current"):  # unchanged across lmms-eval versions
        assert extract_letter("mvbench", version, reply, ["p", "q", "r", "s"]) == letter


OPTIONS5 = [f"c is doing thing {i}" for i in range(5)]


@pytest.mark.parametrize("reply, letter", [
    ("Answer: B", "B"),
    ("(C) folding clothes", "C"),
    ("(A) or (C)", "A"),  # several candidates: the one whose last occurrence comes first
    ("The answer is E.", "E"),
    ("(D).", "D"),
    ("I believe it is A. c is doing thing 0 for sure", "A"),
    ("B) cleaning", None),  # lmms-eval picks a random letter here
    ("c is doing thing 2 in this clip", None),  # option texts only match with their "C. " prefix
])
def test_egoschema_parser(reply, letter):
    assert egoschema_letter(reply, OPTIONS5) == letter
    assert extract_letter("egoschema", "legacy", reply, OPTIONS5) == letter


def test_release_rule():
    opts = ["It rolls.", "It flies.", "It melts.", "It sings."]
    assert extract_letter_release("The best answer is: (B)", opts) == "B"
    assert extract_letter_release("After watching, the answer is B.", opts) == "A"
    assert extract_letter_release("it flies.", opts) == "B"  # option text when there is no capital
    assert extract_letter_release("four", ["2", "3", "4", "5"]) == "C"  # digits also match their word
    assert extract_letter_release("E", opts) is None  # out of the option range: a failure, not the release's "C"
    assert extract_letter("egoschema", "release", "c is doing thing 3", OPTIONS5) is None  # no text fallback
    assert extract_letter("mvbench", "release", "(E) five", ["a", "b", "c", "d", "e"]) == "E"


def test_unknown_version():
    with pytest.raises(ValueError, match="parser version"):
        extract_letter("videomme", "v2", "A", ["a", "b"])
