"""The common question record every benchmark loader produces, and safe readers for question files.

A loader (``llava.eval.benchmarks``) maps one benchmark's released files to a list of
:class:`VideoQuestion`; inference, merging and scoring only ever see that list. Its
:func:`question_set_fingerprint` is written into every answer line, so an answers file can be
matched to the question set it was produced from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LETTERS = "ABCDEFGHIJ"


class QuestionFileError(ValueError):
    """A question or ground-truth file is missing, unreadable or not in the expected format."""


@dataclasses.dataclass(frozen=True)
class VideoQuestion:
    """One question about one video.

    Attributes:
        qid: unique within the question set (the benchmark's own id where it has one).
        question: the bare question; this exact text is what the instruction path receives.
        videos: candidate paths relative to ``--video-folder``, tried in order (extensions, prefixes).
            A candidate that is a directory is read as a folder of frame images.
        options: option texts without their letters (multiple choice), in letter order.
        answer: the correct letter (multiple choice) or reference answer (open-ended); ``None`` if
            the released data has no ground truth for this question.
        task: sub-task / question type used for per-task tables.
        bound: ``(start, end)`` seconds of the segment the question is about, if any.
        info: benchmark extras kept for reports (duration class, video id, consistency pair ...).
    """

    qid: str
    question: str
    videos: tuple[str, ...]
    options: tuple[str, ...] = ()
    answer: str | None = None
    task: str = ""
    bound: tuple[float, float] | None = None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]

    def lettered_options(self, template: str = "{letter}. {text}") -> list[str]:
        return [template.format(letter=letter, text=text) for letter, text in zip(self.letters, self.options)]


def question_set_fingerprint(benchmark: str, questions: Sequence[VideoQuestion]) -> str:
    """A short hash of everything that defines the question set (ids, questions, options, videos)."""
    digest = hashlib.sha256(benchmark.encode())
    for q in questions:
        digest.update(json.dumps([q.qid, q.question, list(q.options), q.videos[:1], q.bound]).encode())
    return digest.hexdigest()[:16]


def check_unique_ids(questions: Sequence[VideoQuestion], source: Path) -> None:
    seen: set[str] = set()
    for q in questions:
        if q.qid in seen:
            raise QuestionFileError(f"{source}: question id {q.qid!r} occurs more than once")
        seen.add(q.qid)


def read_json_file(path: str | Path) -> Any:
    """Any JSON value from ``path``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise QuestionFileError(f"{path} does not exist")
    return _parse_json(_read_text(path), str(path))


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a ``.json`` (a list of objects), ``.jsonl`` or ``.parquet`` file."""
    path = Path(path)
    if not path.is_file():
        raise QuestionFileError(f"question file {path} does not exist")
    if path.suffix == ".parquet":
        return _read_parquet(path)
    if path.suffix == ".jsonl":
        lines = _read_text(path).splitlines()
        rows = [_parse_json(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    else:
        rows = read_json_file(path)
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise QuestionFileError(f"{path}: expected a list of JSON objects")
    return rows


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise QuestionFileError(f"{path} is not UTF-8 text (byte {err.start} of the file)") from None


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise QuestionFileError(f"{where} is not valid JSON: {err}") from err


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise QuestionFileError(
            f"{path}: reading parquet needs pyarrow (pip install pyarrow), or convert it to JSON rows"
        ) from err
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for damaged files; name the file
        raise QuestionFileError(f"{path}: not a readable parquet file ({err})") from err


def field(row: Mapping, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """``row[key]`` checked for presence and type; errors name the file and item."""
    if key not in row:
        raise QuestionFileError(f"{where}: missing field {key!r} (has {sorted(row)})")
    value = row[key]
    if not isinstance(value, kind):
        raise QuestionFileError(f"{where}: field {key!r} should be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)
