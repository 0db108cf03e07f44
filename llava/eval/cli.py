"""What every evaluation command shares: the question-set flags and turning expected errors into a
one-line message and exit status 2 instead of a traceback."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from llava.conversation import UnknownConversationTemplateError
from llava.video import VideoDecodeError

from .answers import AnswerFileError, merge_answer_files
from .benchmarks import BENCHMARKS, UnknownPromptStyleError, load_questions
from .questions import QuestionFileError, VideoQuestion, question_set_fingerprint

logger = logging.getLogger(__name__)


class MissingVideoError(FileNotFoundError):
    """Videos of the question set are not under ``--video-folder``."""


class JudgeNotConfiguredError(RuntimeError):
    """No LLM judge endpoint / model was given."""


class UsageError(ValueError):
    """Flags that do not fit together."""


#: errors caused by the user's inputs: reported in one line, exit status 2
INPUT_ERRORS = (QuestionFileError, AnswerFileError, MissingVideoError, JudgeNotConfiguredError, UsageError,
                UnknownConversationTemplateError, UnknownPromptStyleError, VideoDecodeError,
                FileNotFoundError)


def add_question_args(parser: argparse.ArgumentParser, kind: str | None = None) -> None:
    names = sorted(n for n, b in BENCHMARKS.items() if kind is None or b.kind == kind)
    parser.add_argument("--benchmark", required=True, choices=names, help="the benchmark's question format and scoring")
    parser.add_argument("--question-file", required=True,
                        help="the benchmark's released question file (or folder of task files); see llava.eval.benchmarks")
    parser.add_argument("--gt-file", default=None,
                        help="separate ground-truth file (EgoSchema subset_answers.json, ActivityNet-QA test_a.json)")


def questions_from_args(args: argparse.Namespace) -> tuple[list[VideoQuestion], str]:
    """The question set named by the flags, and its fingerprint."""
    questions = load_questions(args.benchmark, args.question_file, args.gt_file)
    return questions, question_set_fingerprint(args.benchmark, questions)


def add_answers_args(parser: argparse.ArgumentParser) -> None:
    """``--answers-file`` of a scoring command, optionally merged first from chunk files."""
    parser.add_argument("--answers-file", required=True, help="merged answers (llava.eval.merge)")
    parser.add_argument("--merge-from", nargs="+", default=None, metavar="CHUNK_FILE",
                        help="first merge these chunk answers files into --answers-file (as llava.eval.merge does)")
    parser.add_argument("--allow-partial", action="store_true", help="go on even if some questions are unanswered")


def merge_if_asked(args: argparse.Namespace, questions: list[VideoQuestion], fingerprint: str) -> None:
    if args.merge_from:
        counts = merge_answer_files([Path(p) for p in args.merge_from], Path(args.answers_file), fingerprint,
                                    questions, allow_partial=args.allow_partial)
        logger.info("merged %s into %s: %s", args.merge_from, args.answers_file, counts)


def command(run: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser):
    """Wraps ``run(args)`` as a ``main(argv)`` that logs, and reports input errors without a traceback."""

    @functools.wraps(run)
    def main(argv: Sequence[str] | None = None) -> int:
        args = parser.parse_args(argv)
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
        try:
            return run(args) or 0
        except INPUT_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return main
