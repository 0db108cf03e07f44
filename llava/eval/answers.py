"""Answers files: one JSON line per question, appended as each answer is produced.

A line (``model_vqa``'s record plus what resuming and scoring need)::

    {"question_id": "action_sequence/0", "prompt": "...", "text": "(B) ...", "model_id": "ckpt",
     "failed": null, "question_set": "3f2a...", "run": {"num_frames": 32, ...}}

``run["model_weights"]`` is :func:`model_fingerprint` of the model folder (and of ``--model-base``),
and each line names the folder it was answered by (``model_path``): two checkpoints whose folders share a
name (every run's ``stage3``, every ``checkpoint-N``) never complete each other's answers file.

``failed`` holds the reason when the item could not be answered (a corrupt video); ``text`` is then
``null``. ``question_set`` is the fingerprint of the question set, so an answers file written from
another question file is refused by resume, merge and scoring. ``run`` holds the settings that shape
the answers; resuming with different ones is refused.

A run killed mid-write can leave a truncated last line: reading ignores it (and resuming cuts it off),
so the question is simply answered again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .questions import VideoQuestion

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("question_id", "text", "failed", "question_set", "run")


#: Bytes read from each end of every weight file's data for :func:`model_fingerprint`.
FINGERPRINT_SAMPLE = 1 << 16
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class AnswerFileError(ValueError):
    """An answers file is unreadable, inconsistent, or belongs to another question set or run."""


def model_fingerprint(folder: str | os.PathLike | None) -> str | None:
    """A short digest identifying the weights in ``folder`` without reading them whole: ``config.json``,
    and for every weight file its name, size and the first and last 64 KiB (which hold a safetensors
    header and trained values, so two runs of one architecture differ). Not a folder (a hub id,
    ``None``): ``None``."""
    if folder is None or not Path(folder).is_dir():
        return None
    digest = hashlib.sha256()
    root = Path(folder)
    files = sorted(p for p in root.iterdir() if p.is_file() and (p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES))
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}\n".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(FINGERPRINT_SAMPLE))
            if size > 2 * FINGERPRINT_SAMPLE:
                handle.seek(size - FINGERPRINT_SAMPLE)
                digest.update(handle.read(FINGERPRINT_SAMPLE))
    return digest.hexdigest()[:16]


def read_answers(path: Path, repair: bool = False) -> dict[str, dict]:
    """``{question_id: line}`` of an answers file (``{}`` if it does not exist).

    A last line without its newline that is not valid JSON is a write cut short by a kill: it is
    ignored, and with ``repair`` removed from the file (a complete one only gets its newline back).
    Any other bad line is an error.
    """
    if not path.exists():
        return {}
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    answers: dict[str, dict] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            if number == len(lines):  # no newline after it: the writer was interrupted
                logger.warning("%s: ignoring a truncated last line (an interrupted run)", path)
                if repair:
                    with path.open("r+b") as handle:
                        handle.truncate(len(raw) - len(line))
                break
            raise AnswerFileError(f"{path}:{number}: not a JSON line ({err})") from err
        if not isinstance(record, dict) or any(key not in record for key in REQUIRED_KEYS):
            raise AnswerFileError(f"{path}:{number}: not an answer record (needs keys {list(REQUIRED_KEYS)})")
        qid = record["question_id"]
        if qid in answers:
            raise AnswerFileError(f"{path}:{number}: question {qid!r} is answered twice")
        answers[qid] = record
    if repair and raw and not raw.endswith(b"\n") and path.read_bytes() == raw:  # cut right before the newline
        with path.open("ab") as handle:
            handle.write(b"\n")
    return answers


def check_answers(path: Path, answers: Mapping[str, dict], fingerprint: str, questions: Sequence[VideoQuestion],
                  run: Mapping | None = None, model_path: str | None = None) -> None:
    """Refuses answers of another question set, unknown ids, and (if ``run`` is given) other settings,
    another model's answers first (``model_path``: this run's folder, named in the error)."""
    if not answers:
        return
    foreign = {record["question_set"] for record in answers.values()} - {fingerprint}
    if foreign:
        raise AnswerFileError(
            f"{path} holds answers for a different question set (fingerprint {sorted(foreign)[0]}, expected "
            f"{fingerprint}): it was not produced from this question file / benchmark"
        )
    known = {q.qid for q in questions}
    unknown = [qid for qid in answers if qid not in known]
    if unknown:
        raise AnswerFileError(f"{path}: {len(unknown)} answers to unknown question ids, e.g. {unknown[:3]}")
    if run is not None:
        for record in answers.values():
            if record["run"] != run:
                theirs = record["run"]
                if theirs.get("model_weights") != run.get("model_weights"):
                    raise AnswerFileError(
                        f"{path} was written by another model: {record.get('model_path', record.get('model_id'))} "
                        f"(weights {theirs.get('model_weights')}), this run loads {model_path or run.get('model_id')} "
                        f"(weights {run.get('model_weights')}); use another --answers-file")
                changed = sorted(k for k in set(run) | set(theirs) if run.get(k) != theirs.get(k))
                was = ", ".join(f"{k}={theirs.get(k)!r}" for k in changed)
                now = ", ".join(f"{k}={run.get(k)!r}" for k in changed)
                raise AnswerFileError(f"{path} was written with other settings ({was}; this run has {now}): "
                                      "use another --answers-file")


def load_checked(path: Path, fingerprint: str, questions: Sequence[VideoQuestion]) -> dict[str, dict]:
    """An existing answers file, checked against the question set; one ``run`` across its lines."""
    if not path.is_file():
        raise AnswerFileError(f"answers file {path} does not exist")
    answers = read_answers(path)
    run = next(iter(answers.values()))["run"] if answers else None
    check_answers(path, answers, fingerprint, questions, run=run)
    return answers


class AnswerWriter:
    """Appends one line per answer and flushes it, so a killed run loses at most the line in flight."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("a", encoding="utf-8")

    def write(self, record: Mapping) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> AnswerWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_lines(path: Path, records: Iterable[Mapping]) -> None:
    """Writes a whole answers file atomically (a temporary sibling renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def merge_answer_files(inputs: Sequence[Path], output: Path, fingerprint: str, questions: Sequence[VideoQuestion],
                       allow_partial: bool = False) -> dict[str, int]:
    """Concatenates chunk answers files into ``output`` in question order.

    Refuses files of another question set or of other run settings, and a question answered in two
    files. Unless ``allow_partial``, a question answered nowhere is an error (the chunk that should
    have answered it was interrupted: rerunning it resumes).
    """
    merged: dict[str, dict] = {}
    source: dict[str, Path] = {}
    run = None
    for path in inputs:
        if not path.is_file():
            raise AnswerFileError(f"answers file {path} does not exist (did that chunk run?)")
        answers = read_answers(path)
        if answers and run is None:
            run = next(iter(answers.values()))["run"]
        check_answers(path, answers, fingerprint, questions, run=run)
        for qid, record in answers.items():
            if qid in merged:
                raise AnswerFileError(f"question {qid!r} is answered in both {source[qid]} and {path}")
            merged[qid] = record
            source[qid] = path
    missing = [q.qid for q in questions if q.qid not in merged]
    if missing and not allow_partial:
        raise AnswerFileError(
            f"{len(missing)} of {len(questions)} questions have no answer in {[str(p) for p in inputs]}, e.g. "
            f"{missing[:3]}: rerun the interrupted chunk(s) (they resume), or pass --allow-partial"
        )
    write_lines(output, (merged[q.qid] for q in questions if q.qid in merged))
    failed = sum(1 for record in merged.values() if record["failed"])
    return {"questions": len(questions), "answered": len(merged) - failed, "failed": failed, "missing": len(missing)}
