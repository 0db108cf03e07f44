"""Benchmark loaders on fixture sets in the released layouts, prompts, clear errors for bad question
files, and the frame sampling / subtitle helpers."""

import json
import sys

import numpy as np
import pytest

from llava.eval import benchmarks
from llava.eval.benchmarks import (
    BENCHMARKS,
    PROMPT_STYLES,
    UnknownPromptStyleError,
    load_questions,
    register_prompt_style_alias,
    resolve_prompt_style,
)
from llava.eval.questions import QuestionFileError, question_set_fingerprint
from llava.eval.video_io import bounded_frame_indices, load_clip, read_srt, resolve_video, subtitles_at
from tests.helpers import eval_fixtures as fx
from tests.helpers.videos import decode_frame_indices


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    vcgpt = fx.write_vcgpt(root / "vcgpt")
    return {
        "videomme": fx.write_videomme(root / "videomme"),
        "videomme_grouped": fx.write_videomme(root / "videomme_g", grouped=True),
        "mvbench": fx.write_mvbench(root / "mvbench"),
        "egoschema": fx.write_egoschema(root / "egoschema"),
        "mlvu": fx.write_mlvu(root / "mlvu"),
        "activitynet": fx.write_activitynet(root / "activitynet"),
        **vcgpt,
    }


def load(fixture):
    return load_questions(fixture.benchmark, fixture.question_file, fixture.gt_file)


def test_videomme_flat_and_grouped_layouts_agree(sets):
    flat, grouped = load(sets["videomme"]), load(sets["videomme_grouped"])
    assert [q.qid for q in flat] == ["001-1", "001-2", "002-1", "002-2"]
    assert flat == grouped
    q = flat[0]
    assert q.options == ("It rolls.", "It flies.", "It melts.", "It sings.")  # "A. " removed
    assert q.answer == "B" and q.task == "Counting Problem" and q.info["duration"] == "short"
    assert resolve_video(sets["videomme"].video_folder, q.videos).name == "vidAAAA0001.mp4"


def test_mvbench_tasks_bounds_and_frame_folders(sets):
    questions = load(sets["mvbench"])
    by_id = {q.qid: q for q in questions}
    assert set(by_id) == {"action_sequence/0", "action_sequence/1", "action_antonym/0", "episodic_reasoning/0"}
    seq = by_id["action_sequence/0"]
    assert seq.task == "Action Sequence" and seq.bound == (0.5, 2.0) and seq.answer == "B"
    assert seq.videos == ("star/Charades_v1_480/clip1.mp4",)
    assert by_id["action_antonym/0"].bound is None
    frames = resolve_video(sets["mvbench"].video_folder, by_id["episodic_reasoning/0"].videos)
    assert frames.is_dir()


def test_egoschema_subset_answers(sets):
    questions = load(sets["egoschema"])
    assert [q.answer for q in questions] == ["B", "E", None]  # the third is not in the subset
    assert questions[0].options[4] == "c is doing thing 4"


def test_mlvu_answers_are_letters_of_candidates(sets):
    questions = load(sets["mlvu"])
    assert [(q.task, q.answer) for q in questions] == [("plotQA", "C"), ("plotQA", "A"), ("count", "C")]


def test_open_ended_loaders(sets):
    anet = load(sets["activitynet"])
    assert [q.answer for q in anet] == ["cooking", "yes", "cooking", "yes"]
    assert resolve_video(sets["activitynet"].video_folder, anet[0].videos).name == "v_abc123.mp4"
    pairs = load(sets["vcgpt_consistency"])
    assert [q.qid for q in pairs] == ["0/q1", "0/q2", "1/q1", "1/q2"]
    assert pairs[1].question == "What object is in the man's hand?" and pairs[1].info["pair"] == "0"
    assert len(load(sets["vcgpt_generic"])) == 2


def test_prompts_keep_the_question_and_options_apart(sets):
    mvb = {q.qid: q for q in load(sets["mvbench"])}["action_sequence/0"]
    assert BENCHMARKS["mvbench"].prompt(mvb, "release") == (
        "Question: What did the person do first?\nOptions:\n(A) walking\n(B) sitting down\n(C) opening a door\n"
        "Answer with the option's letter from the given choices directly and only give the best option."
    )
    assert BENCHMARKS["mvbench"].prompt(mvb, "lmms") == (
        "Question:What did the person do first?\nOption:\n(A) walking\n(B) sitting down\n(C) opening a door\n"
        "Only give the best option.\n"
    )
    vm = load(sets["videomme"])[0]
    lmms = BENCHMARKS["videomme"].prompt(vm, "lmms")
    assert lmms.endswith("D. It sings.\n\nAnswer with the option's letter from the given choices directly.")
    with_subs = BENCHMARKS["videomme"].prompt(vm, "release", subtitles="hello")
    assert with_subs.startswith("This video's subtitles are listed below:\nhello\nSelect the best answer")
    assert with_subs.endswith("The best answer is: ")
    ego = load(sets["egoschema"])[0]
    assert BENCHMARKS["egoschema"].prompt(ego, "lmms").endswith(
        "\nE. c is doing thing 4\nAnswer with the option's letter from the given choices directly.")
    mlvu = load(sets["mlvu"])[0]
    assert BENCHMARKS["mlvu"].prompt(mlvu, "lmms").endswith("(D) nobody\nOnly give the best option.\nBest option: (")
    anet = load(sets["activitynet"])[0]
    assert BENCHMARKS["activitynet"].prompt(anet, "release") == "what is the person doing 0"
    assert BENCHMARKS["activitynet"].prompt(anet, "lmms") == (
        "What is the person doing 0? Answer the question using a single word or phrase.")


@pytest.fixture
def no_aliases(monkeypatch):
    """No plugin aliases, whichever plugins this environment has loaded."""
    monkeypatch.setattr(benchmarks, "_PROMPT_STYLE_ALIASES", {})


def test_every_benchmark_has_every_prompt_style():
    assert PROMPT_STYLES == ("release", "lmms")
    assert all(set(b.prompts) == set(PROMPT_STYLES) for b in BENCHMARKS.values())


def test_prompt_style_aliases_resolve_everywhere_a_style_is_read(sets, no_aliases):
    mvb = load(sets["mvbench"])[0]
    with pytest.raises(UnknownPromptStyleError) as info:
        BENCHMARKS["mvbench"].prompt(mvb, "my_method")
    assert str(info.value) == "unknown prompt style 'my_method'; styles: release, lmms; aliases: none registered"
    register_prompt_style_alias("my_method", "release")
    register_prompt_style_alias("my_method", "release")  # the same pair again: a no-op
    assert resolve_prompt_style("my_method") == "release" and resolve_prompt_style("lmms") == "lmms"
    assert BENCHMARKS["mvbench"].prompt(mvb, "my_method") == BENCHMARKS["mvbench"].prompt(mvb, "release")
    with pytest.raises(UnknownPromptStyleError, match="styles: release, lmms; aliases: my_method -> release"):
        resolve_prompt_style("nope")


@pytest.mark.parametrize("alias, style, message", [
    ("x", "nope", "'nope' is not a prompt style"),
    ("lmms", "release", "would shadow the style"),
    ("taken", "lmms", "already names 'release'"),
])
def test_bad_prompt_style_aliases_are_refused(alias, style, message, no_aliases):
    register_prompt_style_alias("taken", "release")
    with pytest.raises(ValueError, match=message):
        register_prompt_style_alias(alias, style)


def test_fingerprint_changes_with_the_questions(sets):
    questions = load(sets["mlvu"])
    fp = question_set_fingerprint("mlvu", questions)
    assert fp == question_set_fingerprint("mlvu", load(sets["mlvu"]))
    assert fp != question_set_fingerprint("mlvu", questions[:-1])
    assert fp != question_set_fingerprint("mvbench", questions)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"a": 1}), "expected a list of JSON objects"),
    (json.dumps([{"video": "v.mp4", "candidates": ["x", "y"], "answer": "x"}]), "item 0: missing field 'question'"),
    (json.dumps([{"video": "v.mp4", "question": "q?", "candidates": ["x", "y"], "answer": "z"}]),
     "the answer 'z' is not one of the candidates"),
    (json.dumps([{"video": "v.mp4", "question": "q?", "candidates": "x y", "answer": "x"}]),
     "field 'candidates' should be list"),
])
def test_malformed_task_file_names_file_and_reason(tmp_path, content, message):
    (tmp_path / "json").mkdir()
    bad = tmp_path / "json" / "1_plotQA.json"
    bad.write_text(content)
    with pytest.raises(QuestionFileError, match=message) as info:
        load_questions("mlvu", tmp_path / "json")
    assert str(bad) in str(info.value)


def test_question_file_errors(tmp_path, sets):
    with pytest.raises(QuestionFileError, match="does not exist"):
        load_questions("activitynet", tmp_path / "nope.json")
    with pytest.raises(QuestionFileError, match="none of the mvbench task files"):
        load_questions("mvbench", tmp_path)
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps([{"video_name": "a", "question": "q", "question_id": "1"}] * 2))
    with pytest.raises(QuestionFileError, match="'1' occurs more than once"):
        load_questions("activitynet", dup)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps([{"question_id": "other", "answer": "x"}]))
    ok = tmp_path / "q.json"
    ok.write_text(json.dumps([{"video_name": "a", "question": "q", "question_id": "1"}]))
    with pytest.raises(QuestionFileError, match="no answer for question 1"):
        load_questions("activitynet", ok, gt)
    with pytest.raises(QuestionFileError, match="not used"):
        load_questions("mvbench", sets["mvbench"].question_file, gt)


def test_bounded_frame_indices():
    # 3 fps, segment [1, 3] s -> frames 2..8 (7 frames); 4 midpoints of 7
    assert bounded_frame_indices(100, 3.0, 4, 1.0, 3.0) == [3, 4, 6, 7]
    assert bounded_frame_indices(100, 3.0, 4, 3.0, 1.0) == bounded_frame_indices(100, 3.0, 4, 1.0, 3.0)
    assert bounded_frame_indices(100, 3.0, 2, 2.0, 2.0) == [6, 7]  # widened to [2, 3] s: frames 5..8
    assert bounded_frame_indices(10, 3.0, 3, 50.0, 60.0) == [9, 9, 9]  # past the end: the last frame


def test_load_clip_video_segment_and_frame_folder(sets):
    root = sets["mvbench"].video_folder
    whole = load_clip(root / "star/Charades_v1_480/clip1.mp4", 4)
    assert whole.frames.shape == (4, 48, 64, 3)
    assert decode_frame_indices(whole.frames) == [3, 9, 14, 20]  # midpoints of 24 frames
    seg = load_clip(root / "star/Charades_v1_480/clip1.mp4", 3, bound=(1.0, 2.0))  # 8 fps: frames 7..15
    assert decode_frame_indices(seg.frames) == [8, 11, 14]
    assert seg.times == pytest.approx((1.0, 11 / 8, 14 / 8))
    folder = load_clip(root / "tvqa/frames_fps3_hq/ep1_seg", 2, bound=(1.0, 3.0))  # 3 fps: frames 2..8
    assert decode_frame_indices(folder.frames) == [4, 7]
    many = load_clip(root / "ssv2_video/12.webm.mp4", 40)  # more frames than the video has: no cap
    assert many.frames.shape[0] == 40 and np.all(np.diff(decode_frame_indices(many.frames)) >= 0)


def test_subtitles(sets):
    cues = read_srt(sets["videomme"].subtitle_folder / "vidAAAA0001.srt")
    assert cues == [(0.0, 1.5, "a red ball rolls"), (1.5, 3.0, "the ball stops")]
    assert subtitles_at(cues, [0.5, 1.0, 1.5, 2.0, 9.0]) == "a red ball rolls\na red ball rolls\nthe ball stops"


@pytest.mark.parametrize("backend", ["decord", "pyav", "no-decord"])
def test_video_segments_decode_with_either_backend(sets, backend, monkeypatch):
    """MVBench's time segments read through decord, PyAV, and PyAV chosen automatically where decord is
    not installed (aarch64 nodes): the same frames."""
    from llava import video as decoding

    clip = sets["mvbench"].video_folder / "star/Charades_v1_480/clip1.mp4"
    if backend == "no-decord":
        decoding._auto_backend.cache_clear()
        monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` raises ImportError
        seg = load_clip(clip, 3, bound=(1.0, 2.0))
        decoding._auto_backend.cache_clear()
    else:
        seg = load_clip(clip, 3, bound=(1.0, 2.0), backend=backend)
    assert decode_frame_indices(seg.frames) == [8, 11, 14]
    assert seg.times == pytest.approx((1.0, 11 / 8, 14 / 8))
