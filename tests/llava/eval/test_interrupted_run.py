"""Interrupting inference (SIGKILL) and rerunning answers each question exactly once, with exactly the
answers of an uninterrupted run (sampling with per-question seeds). Chunking over two processes is
tested through the shell driver in ``test_scripts.py``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava.eval import merge, model_video_oqa
from tests.helpers.eval_fixtures import Fixture, make_video

REPO = Path(__file__).resolve().parents[3]
QUESTIONS = 18


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """ActivityNet-QA layout: 3 videos x 4 questions."""
    root = tmp_path_factory.mktemp("anet")
    questions = []
    for v in range(3):
        make_video(root / "videos" / f"v_vid{v}.mp4")
        questions += [{"video_name": f"vid{v}", "question": f"what happens {q} in video {v}",
                       "question_id": f"v_vid{v}_{q}"} for q in range(QUESTIONS // 3)]
    (root / "test_q.json").write_text(json.dumps(questions))
    return Fixture("activitynet", root / "test_q.json", root / "videos")


def argv(model, fixture, answers, *extra):
    return ["--model-path", str(model), *fixture.args(), "--video-folder", str(fixture.video_folder),
            "--answers-file", str(answers), "--num-frames", "4", "--max-new-tokens", "8", "--temperature", "1.0",
            "--seed", "7", "--device", "cpu", *extra]


def spawn(model, fixture, answers, *extra):
    """The inference command in its own process; its log goes to ``<answers>.log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(f"{answers}.log", "w")  # a file, not a pipe: nobody reads while it runs
    command = [sys.executable, "-m", "llava.eval.model_video_oqa", *argv(model, fixture, answers, *extra)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    return proc


def log_tail(answers: Path) -> str:
    return Path(f"{answers}.log").read_text()[-2000:]


def complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture(scope="module")
def single(dataset, tiny_hicom, tmp_path_factory):
    """The reference: every question answered by one in-process run."""
    path = tmp_path_factory.mktemp("single") / "answers.jsonl"
    assert model_video_oqa.main(argv(tiny_hicom, dataset, path)) == 0  # one thread, as the subprocesses
    lines = path.read_text().splitlines()
    assert len(lines) == QUESTIONS
    assert len({json.loads(line)["text"] for line in lines}) > 1  # sampled answers differ between questions
    return lines


def test_killed_run_resumes_and_answers_each_question_once(dataset, tiny_hicom, single, tmp_path):
    answers = tmp_path / "answers.jsonl"
    proc = spawn(tiny_hicom, dataset, answers)
    deadline = time.monotonic() + 120
    while complete_lines(answers) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before it could be interrupted: {log_tail(answers)}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = complete_lines(answers)
    assert 2 <= done < QUESTIONS
    # a write cut short by the kill: a half line without its newline
    with answers.open("a") as handle:
        handle.write('{"question_id": "v_vid2_3", "prompt": "what hap')

    assert model_video_oqa.main(argv(tiny_hicom, dataset, answers)) == 0
    lines = answers.read_text().splitlines()
    ids = [json.loads(line)["question_id"] for line in lines]
    assert sorted(ids) == sorted(json.loads(line)["question_id"] for line in single)
    assert len(ids) == len(set(ids)) == QUESTIONS
    assert {json.loads(line)["question_id"]: json.loads(line) for line in lines} == {
        json.loads(line)["question_id"]: json.loads(line) for line in single}

    merged = tmp_path / "merge.jsonl"
    assert merge.main([*dataset.args(), "--output", str(merged), str(answers)]) == 0
    assert merged.read_text().splitlines() == single
