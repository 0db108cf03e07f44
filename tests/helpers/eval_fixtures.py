"""Small benchmark fixture sets in each benchmark's released layout, with real (tiny) mp4 files.

Every ``write_<benchmark>(root)`` returns a :class:`Fixture` whose fields map onto the inference
flags (``--question-file``, ``--gt-file``, ``--video-folder``, ``--subtitle-folder``). Videos are
index-coded clips from ``helpers.videos``; questions, options and answers are made up.
``run_in_process`` answers with an already loaded model, as the inference command would.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image

from llava.eval.video_infer import build_parser, run_inference
from tests.helpers.videos import frame_with_index, write_test_video

VIDEO_FRAMES = 24
VIDEO_FPS = 8


@dataclasses.dataclass(frozen=True)
class Fixture:
    benchmark: str
    question_file: Path
    video_folder: Path
    gt_file: Path | None = None
    subtitle_folder: Path | None = None

    def args(self) -> list[str]:
        out = ["--benchmark", self.benchmark, "--question-file", str(self.question_file)]
        return out + (["--gt-file", str(self.gt_file)] if self.gt_file else [])


def make_video(path: Path, frames: int = VIDEO_FRAMES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_test_video(path, num_frames=frames, fps=VIDEO_FPS)


def _json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))
    return path


def write_videomme(root: Path, grouped: bool = False) -> Fixture:
    """Two videos x two questions; rows as in the parquet (or grouped per video as the official JSON)."""
    videos = {"vidAAAA0001": "short", "vidBBBB0002": "medium"}
    rows = []
    for number, (video_id, duration) in enumerate(videos.items(), 1):
        make_video(root / "data" / f"{video_id}.mp4")
        (root / "subtitle").mkdir(parents=True, exist_ok=True)
        (root / "subtitle" / f"{video_id}.srt").write_text(
            "1\n00:00:00,000 --> 00:00:01,500\n<font color=\"white\">a red ball rolls</font>\n\n"
            "2\n00:00:01,500 --> 00:00:03,000\nthe ball stops\n"
        )
        for q in range(2):
            rows.append({
                "video_id": f"{number:03d}", "duration": duration, "domain": "Knowledge", "sub_category": "Physics",
                "url": f"https://www.youtube.com/watch?v={video_id}", "videoID": video_id,
                "question_id": f"{number:03d}-{q + 1}", "task_type": ["Counting Problem", "Object Recognition"][q],
                "question": f"What does the ball do in clip {number}, question {q}?",
                "options": ["A. It rolls.", "B. It flies.", "C. It melts.", "D. It sings."],
                "answer": "ABCD"[(number + q) % 4],
            })
    if grouped:
        keys = ("question_id", "task_type", "question", "options", "answer")
        by_video: dict[str, dict] = {}
        for row in rows:
            entry = by_video.setdefault(row["videoID"], {k: row[k] for k in row if k not in keys} | {"questions": []})
            entry["questions"].append({k: row[k] for k in keys})
        question_file = _json(root / "videomme_grouped.json", list(by_video.values()))
    else:
        question_file = _json(root / "videomme.json", rows)
    return Fixture("videomme", question_file, root / "data", subtitle_folder=root / "subtitle")


def _frame_folder(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(frame_with_index(index, 64, 48)).save(folder / f"{index + 1:05d}.jpg", quality=95)


def write_mvbench(root: Path) -> Fixture:
    """Three tasks: a bounded one (Charades), a plain one, and the frame-folder one (TVQA, bounded)."""
    make_video(root / "video/star/Charades_v1_480/clip1.mp4")
    make_video(root / "video/ssv2_video/12.webm.mp4")
    _frame_folder(root / "video/tvqa/frames_fps3_hq/ep1_seg", 12)
    candidates = ["walking", "sitting down", "opening a door"]
    _json(root / "json/action_sequence.json", [
        {"video": "clip1.mp4", "question": "What did the person do first?", "candidates": candidates,
         "answer": "sitting down", "start": 0.5, "end": 2.0},
        {"video": "clip1.mp4", "question": "What did the person do last?", "candidates": candidates,
         "answer": "walking", "start": 1.0, "end": 2.5},
    ])
    _json(root / "json/action_antonym.json", [
        {"video": "12.webm.mp4", "question": "What is the action?", "candidates": ["pushing", "pulling", "not sure"],
         "answer": "pulling"},
    ])
    _json(root / "json/episodic_reasoning.json", [
        {"video": "ep1_seg", "question": "Why does Sheldon leave?", "candidates": ["bored", "late", "hungry", "sad"],
         "answer": "late", "start": 1.0, "end": 3.0},
    ])
    return Fixture("mvbench", root / "json", root / "video")


def write_egoschema(root: Path) -> Fixture:
    """Three questions; the subset answers cover two of them (the third is like the full set's)."""
    uids = ["0a1b-uid-1", "0a1b-uid-2", "0a1b-uid-3"]
    rows = []
    for number, uid in enumerate(uids):
        make_video(root / "good_clips_git" / f"{uid}.mp4")
        rows.append({"q_uid": uid, "google_drive_id": "x", "question": f"What is c doing in clip {number}?",
                     **{f"option {i}": f"c is doing thing {i}" for i in range(5)}})
    _json(root / "questions.json", rows)
    gt = _json(root / "subset_answers.json", {uids[0]: 1, uids[1]: 4})
    return Fixture("egoschema", root / "questions.json", root / "good_clips_git", gt_file=gt)


def write_mlvu(root: Path) -> Fixture:
    """Two question types with two and one questions."""
    make_video(root / "video/1_plotQA/movie1.mp4")
    make_video(root / "video/4_count/count1.mp4")
    _json(root / "json/1_plotQA.json", [
        {"video": "movie1.mp4", "duration": 3.0, "question": "Who opens the door?",
         "candidates": ["the cat", "the dog", "the man", "nobody"], "answer": "the man", "question_type": "plotQA"},
        {"video": "movie1.mp4", "duration": 3.0, "question": "What colour is the car?",
         "candidates": ["red", "blue", "green", "white"], "answer": "red", "question_type": "plotQA"},
    ])
    _json(root / "json/4_count.json", [
        {"video": "count1.mp4", "duration": 3.0, "question": "How many jumps?",
         "candidates": ["1", "2", "3", "4"], "answer": "3", "question_type": "count"},
    ])
    return Fixture("mlvu", root / "json", root / "video")


def write_activitynet(root: Path) -> Fixture:
    names = ["abc123", "def456"]
    questions, answers = [], []
    for number, name in enumerate(names):
        make_video(root / "all_test" / f"v_{name}.mp4")
        for q in range(2):
            qid = f"v_{name}_{q}"
            questions.append({"video_name": name, "question": f"what is the person doing {q}", "question_id": qid})
            answers.append({"answer": ["cooking", "yes"][q], "type": q, "question_id": qid})
    _json(root / "test_q.json", questions)
    _json(root / "test_a.json", answers)
    return Fixture("activitynet", root / "test_q.json", root / "all_test", gt_file=root / "test_a.json")


def write_vcgpt(root: Path) -> dict[str, Fixture]:
    """The generic, temporal and consistency files of the VideoChatGPT bench (two videos)."""
    names = ["v_vcg_one", "v_vcg_two"]
    for name in names:
        make_video(root / "Test_Videos" / f"{name}.mp4")
    generic = [{"Q": f"Describe video {i}.", "A": f"A man cooks pasta in video {i}.", "video_name": n}
               for i, n in enumerate(names)]
    temporal = [{"Q": "What happens after the man enters?", "A": "He sits down.", "video_name": names[0]}]
    consistency = [{"Q1": "What is the man holding?", "Q2": "What object is in the man's hand?", "A": "A cup.",
                    "video_name": n} for n in names]
    folder = root / "Test_Videos"
    return {
        "vcgpt_generic": Fixture("vcgpt_generic", _json(root / "generic_qa.json", generic), folder),
        "vcgpt_temporal": Fixture("vcgpt_temporal", _json(root / "temporal_qa.json", temporal), folder),
        "vcgpt_consistency": Fixture("vcgpt_consistency", _json(root / "consistency_qa.json", consistency), folder),
    }


def corrupt_file(path: Path) -> Path:
    """Overwrites ``path`` with bytes no decoder accepts (a "corrupt video")."""
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def run_in_process(loaded, kind: str, argv: list[str]) -> dict:
    """Parses ``argv`` like the ``kind`` inference command and answers with the already loaded model."""
    return run_inference(build_parser(kind, 16, "").parse_args(argv), loaded)
