"""Multiple-choice evaluation end to end with a tiny HICom model: inference on fixture sets in the
released layouts, merge, scoring (numbers checked on known replies), and clear errors for bad input."""

import json
import shutil

import pytest

from llava.eval import eval_video_mcqa, merge, model_video_mcqa
from llava.eval.answers import read_answers
from llava.eval.benchmarks import load_questions
from tests.helpers import eval_fixtures as fx
from tests.helpers.eval_fixtures import run_in_process

FAST = ["--num-frames", "4", "--max-new-tokens", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcqa")
    return {
        "videomme": fx.write_videomme(root / "videomme"),
        "mvbench": fx.write_mvbench(root / "mvbench"),
        "egoschema": fx.write_egoschema(root / "egoschema"),
        "mlvu": fx.write_mlvu(root / "mlvu"),
    }


def infer(model, fixture, answers, *extra):
    subs = ["--subtitle-folder", str(fixture.subtitle_folder)] if fixture.subtitle_folder else []
    return model_video_mcqa.main(["--model-path", str(model), *fixture.args(), "--video-folder",
                                  str(fixture.video_folder), "--answers-file", str(answers), *subs, *FAST, *extra])


def rewrite_texts(path, texts):
    """Replaces the model's replies by known ones (everything else of the lines kept)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        line["text"] = texts[line["question_id"]]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def score(fixture, answers, tmp_path, *extra):
    report = tmp_path / "report.json"
    rc = eval_video_mcqa.main([*fixture.args(), "--answers-file", str(answers), "--report", str(report), *extra])
    assert rc == 0
    return json.loads(report.read_text())


# benchmark -> (known replies by question id, {parser version: expected report values})
KNOWN = {
    "videomme": (
        {"001-1": "B", "001-2": "After watching the video, the answer is C.", "002-1": "C", "002-2": "nothing"},
        {"legacy": {"correct": 2, "accuracy": 50.0, "parse_failures": 1},
         "current": {"correct": 3, "accuracy": 75.0, "parse_failures": 1}},
    ),
    "mvbench": (
        {"action_sequence/0": "(B) sitting down", "action_sequence/1": "", "action_antonym/0": "pushing",
         "episodic_reasoning/0": "B"},
        {"legacy": {"correct": 2, "scored": 3, "empty_replies": 1, "parse_failures": 1,
                    "mean_of_tasks": pytest.approx(200 / 3)}},
    ),
    "egoschema": (
        {"0a1b-uid-1": "Answer: B", "0a1b-uid-2": "B) cleaning", "0a1b-uid-3": "(C)"},
        {"legacy": {"correct": 1, "scored": 2, "accuracy": 50.0, "parse_failures": 1, "no_ground_truth": 1}},
    ),
    "mlvu": (
        {"1_plotQA/0": "C) the man", "1_plotQA/1": "The answer is A", "4_count/0": "(C)"},
        {"legacy": {"correct": 2, "parse_failures": 1, "mean_of_tasks": 75.0},
         "current": {"correct": 3, "parse_failures": 0, "mean_of_tasks": 100.0}},
    ),
}


@pytest.fixture(scope="module")
def answered(sets, tiny_hicom, tiny_hicom_loaded, tmp_path_factory):
    """One inference run per benchmark (a single chunk); tests work on copies of its answers file."""
    out = {}
    for name, fixture in sets.items():
        out[name] = tmp_path_factory.mktemp(name) / "1_0.jsonl"
        if name == "videomme":  # through the command line once; the others reuse the loaded model
            assert infer(tiny_hicom, fixture, out[name]) == 0
        else:
            argv = ["--model-path", str(tiny_hicom), *fixture.args(), "--video-folder", str(fixture.video_folder),
                    "--answers-file", str(out[name]), *FAST]
            assert run_in_process(tiny_hicom_loaded, "mcqa", argv)["answered"] == len(load_questions(
                fixture.benchmark, fixture.question_file, fixture.gt_file))
    return out


def copy_of(path, tmp_path):
    return shutil.copy(path, tmp_path / path.name)


@pytest.mark.parametrize("name", list(KNOWN))
def test_inference_merge_and_scoring(name, sets, answered, tmp_path):
    fixture = sets[name]
    questions = load_questions(fixture.benchmark, fixture.question_file, fixture.gt_file)
    merged = tmp_path / "merge.jsonl"
    assert merge.main([*fixture.args(), "--output", str(merged), str(answered[name])]) == 0
    lines = [json.loads(line) for line in merged.read_text().splitlines()]
    assert [line["question_id"] for line in lines] == [q.qid for q in questions]
    assert all(line["failed"] is None and isinstance(line["text"], str) for line in lines)
    assert all(q.question in line["prompt"] and q.options[-1] in line["prompt"] for q, line in zip(questions, lines))
    report = score(fixture, merged, tmp_path)
    assert report["questions"] == len(questions) and report["failed_items"] == 0
    assert report["correct"] + report["parse_failures"] <= report["scored"]

    replies, expected = KNOWN[name]
    rewrite_texts(merged, replies)
    for version, values in expected.items():
        report = score(fixture, merged, tmp_path, "--parser-version", version)
        assert {key: report[key] for key in values} == values, version


def test_videomme_subtitles_and_tables(sets, answered, tmp_path):
    answers = copy_of(answered["videomme"], tmp_path)
    first = json.loads(answers.read_text().splitlines()[0])
    assert first["prompt"].startswith("This video's subtitles are listed below:\na red ball rolls\n")
    assert first["run"]["subtitles"] is True
    rewrite_texts(answers, KNOWN["videomme"][0])
    report = score(sets["videomme"], answers, tmp_path, "--parser-version", "legacy")
    assert {r["name"]: r["accuracy"] for r in report["tables"]["duration"]} == {"short": 50.0, "medium": 50.0}
    assert report["parse_failure_examples"] == [{"question_id": "002-2", "text": "nothing"}]


def test_egoschema_random_fallback_and_submission(sets, answered, tmp_path):
    answers = copy_of(answered["egoschema"], tmp_path)
    rewrite_texts(answers, KNOWN["egoschema"][0])
    submission = tmp_path / "submission.json"
    report = score(sets["egoschema"], answers, tmp_path, "--egoschema-random-fallback", "0",
                   "--egoschema-submission", str(submission))
    assert report["random_fallbacks"] == 1 and report["parse_failures"] == 0 and report["scored"] == 2
    assert json.loads(submission.read_text())["0a1b-uid-3"] == 2


def test_instruction_is_the_bare_question_and_frames_are_a_runtime_choice(sets, tiny_hicom, tiny_hicom_loaded,
                                                                          tmp_path, monkeypatch):
    fixture = sets["mvbench"]
    calls = []
    generate = tiny_hicom_loaded.model.generate

    def spy(*a, **kw):
        calls.append((kw["instructions"], kw["images"][0].shape, kw["modalities"]))
        return generate(*a, **kw)

    monkeypatch.setattr(tiny_hicom_loaded.model, "generate", spy)
    counts = run_in_process(tiny_hicom_loaded, "mcqa", [
        "--model-path", str(tiny_hicom), *fixture.args(), "--video-folder", str(fixture.video_folder),
        "--answers-file", str(tmp_path / "a.jsonl"), "--num-frames", "6", "--max-new-tokens", "2",
        "--num-chunks", "2", "--chunk-idx", "1"])
    assert counts["answered"] == 2
    questions = load_questions("mvbench", fixture.question_file)[2:]
    assert [c[0] for c in calls] == [[q.question] for q in questions]
    assert {c[1] for c in calls} == {(6, 3, 56, 56)} and {tuple(c[2]) for c in calls} == {("video",)}


def _broken_mvbench(sets, tmp_path):
    """A copy of the MVBench set with the Action Antonym video corrupt and the TVQA frames missing."""
    data = tmp_path / "mvbench"
    shutil.copytree(sets["mvbench"].question_file.parent, data)
    fx.corrupt_file(data / "video/ssv2_video/12.webm.mp4")
    shutil.rmtree(data / "video/tvqa/frames_fps3_hq/ep1_seg")
    return fx.Fixture("mvbench", data / "json", data / "video")


def test_missing_video_stops_before_loading_the_model(sets, tmp_path, capsys):
    fixture = _broken_mvbench(sets, tmp_path)
    rc = infer(tmp_path / "no-model-needed", fixture, tmp_path / "a.jsonl")
    assert rc == 2
    err = capsys.readouterr().err
    assert "1 of 4 questions to answer have no video" in err
    assert str(fixture.video_folder / "tvqa/frames_fps3_hq/ep1_seg") in err and "--allow-missing-videos" in err


def test_corrupt_and_missing_videos_are_counted_failures(sets, tiny_hicom, tmp_path):
    fixture = _broken_mvbench(sets, tmp_path)
    answers = tmp_path / "a.jsonl"
    assert infer(tiny_hicom, fixture, answers, "--allow-missing-videos") == 0
    records = read_answers(answers)
    assert len(records) == 4
    corrupt, missing = records["action_antonym/0"], records["episodic_reasoning/0"]
    assert corrupt["text"] is None and "cannot decode video" in corrupt["failed"] and "12.webm.mp4" in corrupt["failed"]
    assert missing["text"] is None and "video not found" in missing["failed"]
    assert [r["failed"] for r in records.values()].count(None) == 2
    rewrite_texts(answers, {qid: "A" if r["text"] is not None else None for qid, r in records.items()})
    report = score(fixture, answers, tmp_path)
    assert report["failed_items"] == 2 and report["scored"] == 4
    assert {r["name"]: r["failed"] for r in report["tables"]["task"]} == {
        "Action Sequence": 0, "Action Antonym": 1, "Episodic Reasoning": 1}
    assert score(fixture, answers, tmp_path, "--skip-failed")["scored"] == 2


def test_malformed_question_file(tmp_path, capsys):
    bad = tmp_path / "questions.json"
    bad.write_text('[{"q_uid": "x", "question": "q"')
    rc = model_video_mcqa.main(["--model-path", str(tmp_path), "--benchmark", "egoschema", "--question-file",
                                str(bad), "--video-folder", str(tmp_path), "--answers-file", str(tmp_path / "a.jsonl")])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not valid JSON" in err
    bad.write_bytes(b'[{"q_uid": "caf\xe9", "question": "q"}]')  # Latin-1, not UTF-8
    rc = model_video_mcqa.main(["--model-path", str(tmp_path), "--benchmark", "egoschema", "--question-file",
                                str(bad), "--video-folder", str(tmp_path), "--answers-file", str(tmp_path / "a.jsonl")])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not UTF-8" in err


def test_unknown_prompt_style_stops_before_anything_else(sets, tmp_path, capsys):
    rc = infer(tmp_path / "no-model-needed", sets["mlvu"], tmp_path / "a.jsonl", "--prompt-style", "nope")
    assert rc == 2
    assert "unknown prompt style 'nope'; styles: release, lmms; aliases:" in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists()


def test_answers_of_another_question_set_are_refused(sets, answered, tmp_path, capsys):
    fixture = sets["egoschema"]
    answers = copy_of(answered["egoschema"], tmp_path)
    other = tmp_path / "questions.json"
    other.write_text(json.dumps(json.loads(fixture.question_file.read_text())[:2]))
    other_fixture = fx.Fixture("egoschema", other, fixture.video_folder)
    capsys.readouterr()
    assert eval_video_mcqa.main([*other_fixture.args(), "--answers-file", str(answers)]) == 2
    assert merge.main([*other_fixture.args(), "--output", str(tmp_path / "m.jsonl"), str(answers)]) == 2
    assert infer(tmp_path / "no-model-needed", other_fixture, answers) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and all(str(answers) in e and "different question set" in e for e in errors)


def test_resuming_with_other_settings_is_refused(sets, answered, tiny_hicom, tmp_path, capsys, monkeypatch):
    fixture = sets["mlvu"]
    answers = copy_of(answered["mlvu"], tmp_path)
    before = answers.read_text()
    capsys.readouterr()
    assert infer(tiny_hicom, fixture, answers, "--num-frames", "8") == 2
    assert "(num_frames=4; this run has num_frames=8)" in capsys.readouterr().err and answers.read_text() == before
    # same settings: nothing is left to answer, so the model is not even loaded
    monkeypatch.setattr("llava.eval.video_infer.load_model", lambda args: pytest.fail("model loaded"))
    assert infer(tiny_hicom, fixture, answers) == 0 and answers.read_text() == before


def test_scoring_refuses_unanswered_questions_unless_partial(sets, answered, tmp_path, capsys):
    fixture = sets["mlvu"]
    answers = copy_of(answered["mlvu"], tmp_path)
    answers.write_text("".join(answers.read_text().splitlines(keepends=True)[:2]))
    assert eval_video_mcqa.main([*fixture.args(), "--answers-file", str(answers)]) == 2
    assert "1 of 3 questions are unanswered" in capsys.readouterr().err
    report = score(fixture, answers, tmp_path, "--allow-partial")
    assert report["missing"] == 1 and report["scored"] == 3


def test_a_token_reducer_is_a_recorded_runtime_choice(sets, answered, tiny_hicom, tmp_path, capsys):
    """``--token-reducer`` applies a registered reducer to the checkpoint; the answers record it, so a
    run without it does not resume them; an unknown name stops with the registered names."""
    from llava.model.token_reduction import register_token_reducer, unregister_token_reducer
    from tests.helpers.reducers import FirstTokens

    fixture = sets["mlvu"]
    capsys.readouterr()
    assert infer(tiny_hicom, fixture, tmp_path / "x.jsonl", "--token-reducer", "test_missing_reducer") == 2
    assert "Unknown mm_token_reducer 'test_missing_reducer'; registered token reducers" in capsys.readouterr().err
    register_token_reducer("test_eval_first_tokens")(FirstTokens)
    try:
        answers = tmp_path / "reduced.jsonl"
        assert infer(tiny_hicom, fixture, answers, "--token-reducer", "test_eval_first_tokens",
                     "--token-reducer-config", '{"keep": 3}') == 0
        first = json.loads(answers.read_text().splitlines()[0])
        assert "test_eval_first_tokens" in json.dumps(first) and '"keep": 3' in json.dumps(first)
        capsys.readouterr()
        assert infer(tiny_hicom, fixture, answers) == 2
        assert "other settings" in capsys.readouterr().err
    finally:
        unregister_token_reducer("test_eval_first_tokens")


def test_resuming_refuses_another_model_whose_folder_has_the_same_name(sets, answered, tiny_hicom, tmp_path, capsys):
    """Two runs' ``stage3`` folders: an answers file begun by one is not completed by the other."""
    from safetensors.torch import load_file, save_file

    from llava.eval.answers import model_fingerprint

    other = tmp_path / "other_run" / tiny_hicom.name
    shutil.copytree(tiny_hicom, other)
    assert model_fingerprint(other) == model_fingerprint(tiny_hicom)  # a copy is the same model
    weights = next(other.glob("*.safetensors"))
    state = load_file(weights)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = state[name] + 1
    save_file(state, weights, metadata={"format": "pt"})
    assert model_fingerprint(other) != model_fingerprint(tiny_hicom)

    fixture = sets["mvbench"]
    answers = copy_of(answered["mvbench"], tmp_path)
    lines = answers.read_text().splitlines()
    answers.write_text("\n".join(lines[:2]) + "\n")  # begun by the first model, then interrupted
    assert infer(other, fixture, answers) == 2
    err = capsys.readouterr().err
    assert "written by another model" in err and str(tiny_hicom) in err and str(other) in err
    assert len(read_answers(answers)) == 2


@pytest.mark.parametrize("uid", ["../../outside", "/etc/passwd"])
def test_video_paths_leaving_the_video_folder_are_refused(uid, tmp_path, capsys):
    questions = tmp_path / "questions.json"
    row = {"q_uid": uid, "question": "What is c doing?", **{f"option {i}": f"thing {i}" for i in range(5)}}
    questions.write_text(json.dumps([row]))
    argv = ["--model-path", str(tmp_path / "no-model-needed"), "--benchmark", "egoschema", "--question-file",
            str(questions), "--video-folder", str(tmp_path / "videos"), "--answers-file", str(tmp_path / "a.jsonl")]
    assert model_video_mcqa.main(argv) == 2
    err = capsys.readouterr().err
    assert f"question {uid}" in err and "leaves --video-folder" in err and "--allow-outside-data-root" in err
    # allowed: the run goes on (to the missing-video check, or to loading the absent model: /etc/passwd exists)
    assert model_video_mcqa.main([*argv, "--allow-outside-data-root"]) == 2
    err = capsys.readouterr().err
    assert "leaves --video-folder" not in err and ("have no video" in err or "no-model-needed" in err)
