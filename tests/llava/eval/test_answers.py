"""Answers files: reading (truncated last line, bad lines, duplicates), checks against the question set
and run settings, and merging chunk files."""

import json

import pytest

from llava.eval.answers import AnswerFileError, check_answers, merge_answer_files, read_answers
from llava.eval.questions import VideoQuestion, question_set_fingerprint

QUESTIONS = [VideoQuestion(f"q{i}", f"question {i}?", (f"v{i}.mp4",)) for i in range(4)]
FP = question_set_fingerprint("activitynet", QUESTIONS)
RUN = {"num_frames": 8}


def line(qid, text="x", failed=None, fp=FP, run=RUN):
    return json.dumps({"question_id": qid, "prompt": "p", "text": text, "model_id": "m", "failed": failed,
                       "question_set": fp, "run": run}) + "\n"


def test_truncated_last_line_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(line("q0") + line("q1") + line("q2")[:30])
    assert list(read_answers(path)) == ["q0", "q1"]
    assert path.read_text().count("\n") == 2 and not path.read_text().endswith("\n")  # untouched without repair
    read_answers(path, repair=True)
    assert path.read_text() == line("q0") + line("q1")
    path.write_text(line("q0") + line("q1")[:-1])  # cut right before the newline: the line is whole
    assert list(read_answers(path, repair=True)) == ["q0", "q1"]
    assert path.read_text() == line("q0") + line("q1")


@pytest.mark.parametrize("content, message", [
    (line("q0") + "{broken\n" + line("q1"), ":2: not a JSON line"),
    (line("q0") + json.dumps({"question_id": "q1"}) + "\n", ":2: not an answer record"),
    (line("q0") + line("q0"), ":2: question 'q0' is answered twice"),
])
def test_bad_lines_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "a.jsonl"
    path.write_text(content)
    with pytest.raises(AnswerFileError, match=message) as info:
        read_answers(path)
    assert str(path) in str(info.value)


def test_checks_against_question_set_and_settings(tmp_path):
    path = tmp_path / "a.jsonl"
    check_answers(path, {"q0": json.loads(line("q0"))}, FP, QUESTIONS, run=RUN)
    with pytest.raises(AnswerFileError, match="different question set"):
        check_answers(path, {"q0": json.loads(line("q0", fp="0123"))}, FP, QUESTIONS)
    with pytest.raises(AnswerFileError, match="unknown question ids"):
        check_answers(path, {"zz": json.loads(line("zz"))}, FP, QUESTIONS)
    with pytest.raises(AnswerFileError, match=r"other settings \(num_frames=8; this run has num_frames=16\)"):
        check_answers(path, {"q0": json.loads(line("q0"))}, FP, QUESTIONS, run={"num_frames": 16})


def test_merge_orders_by_question_and_refuses_gaps_and_mixed_runs(tmp_path):
    first, second, out = tmp_path / "2_0.jsonl", tmp_path / "2_1.jsonl", tmp_path / "merge.jsonl"
    first.write_text(line("q1") + line("q0"))
    second.write_text(line("q3", text=None, failed="corrupt") + line("q2"))
    counts = merge_answer_files([first, second], out, FP, QUESTIONS)
    assert counts == {"questions": 4, "answered": 3, "failed": 1, "missing": 0}
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == ["q0", "q1", "q2", "q3"]
    second.write_text(line("q2"))
    with pytest.raises(AnswerFileError, match="1 of 4 questions have no answer"):
        merge_answer_files([first, second], out, FP, QUESTIONS)
    assert merge_answer_files([first, second], out, FP, QUESTIONS, allow_partial=True)["missing"] == 1
    second.write_text(line("q2", run={"num_frames": 4}) + line("q3", run={"num_frames": 4}))
    with pytest.raises(AnswerFileError, match="other settings"):
        merge_answer_files([first, second], out, FP, QUESTIONS)
    with pytest.raises(AnswerFileError, match="does not exist"):
        merge_answer_files([first, tmp_path / "2_9.jsonl"], out, FP, QUESTIONS)
