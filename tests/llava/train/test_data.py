"""Training data: annotation formats, samples, collation, and every kind of bad input."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model.multimodal_encoder.siglip_processor import SigLipImageProcessor
from llava.train.data import (
    DataCollatorForSupervisedDataset,
    DataReport,
    LazySupervisedDataset,
    apply_sampling_strategy,
    expand_data_path,
)
from tests.helpers.videos import write_test_video

QUESTION = "<video>\nWhat moves?"


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir / "qwen2-tiny", model_max_length=256, padding_side="right")


@pytest.fixture(scope="module")
def processor(tiny_dir):
    return SigLipImageProcessor.from_pretrained(tiny_dir / "siglip-tiny") if (
        tiny_dir / "siglip-tiny" / "preprocessor_config.json").is_file() else SigLipImageProcessor(
        size={"height": 56, "width": 56})


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """Good and bad media files, made once."""
    root = tmp_path_factory.mktemp("media")
    write_test_video(root / "good.mp4", num_frames=12, fps=6)
    write_test_video(root / "one_frame.mp4", num_frames=1, fps=6)
    write_test_video(root / "three_frames.mp4", num_frames=3, fps=6)
    data = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "not_a_video.mp4").write_bytes(b"this is a text file, not an mp4 container\n" * 40)
    (root / "empty.mp4").write_bytes(b"")
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(root / "rgb.png")
    Image.fromarray(np.full((40, 60), 90, np.uint8), mode="L").save(root / "gray.png")
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 30:, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    _write_huge_png(root / "huge.png", 30000, 30000)
    return root


def _write_huge_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (its pixel data is never decoded)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def video_record(name: str, question: str = QUESTION, answer: str = "A red square.", **extra) -> dict:
    return {"id": name, "video": name, "conversations": [{"from": "human", "value": question},
                                                          {"from": "gpt", "value": answer}], **extra}


def make_args(processor, folder, data_path, **overrides):
    args = dict(data_path=str(data_path), image_folder=str(folder), video_folder=str(folder),
                image_aspect_ratio="pad", image_grid_pinpoints=None, video_fps=1, frames_upbound=0,
                force_sample=False, add_time_instruction=False, num_frames=4, is_multimodal=True,
                image_processor=processor, early_mix_text=False, strict_data=False,
                max_image_pixels=89_478_485, label_mode="answer", version="qwen_1_5", needs_instructions=False,
                seed=0)
    args.update(overrides)
    return SimpleNamespace(**args)


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


def dataset(tmp_path, tokenizer, processor, media, records, **overrides):
    path = write_json(tmp_path / "data.json", records)
    return LazySupervisedDataset(str(path), tokenizer, make_args(processor, media, path, **overrides))


# --------------------------------------------------------------------------- formats


def test_brace_list_expands_to_each_file():
    assert expand_data_path("dir/{a,b, c}.json") == ["dir/a.json", "dir/b.json", "dir/c.json"]
    assert expand_data_path("dir/plain.json") == ["dir/plain.json"]


@pytest.mark.parametrize("strategy, expected", [
    ("all", list(range(10))), ("first:3", [0, 1, 2]), ("end:2", [8, 9]), ("first:25%", [0, 1, 2]),
])
def test_sampling_strategies(strategy, expected):
    assert apply_sampling_strategy(list(range(10)), strategy, __import__("random").Random(0), "x") == expected


def test_random_sampling_is_seeded_and_a_subset():
    import random

    a = apply_sampling_strategy(list(range(100)), "random:10%", random.Random(3), "x")
    b = apply_sampling_strategy(list(range(100)), "random:10%", random.Random(3), "x")
    assert a == b and len(a) == 10 and len(set(a)) == 10


def test_bad_sampling_strategy_names_the_entry():
    with pytest.raises(ValueError, match="mix.yaml datasets\\[0\\].*sideways:3"):
        apply_sampling_strategy([1], "sideways:3", None, "mix.yaml datasets[0]")


def test_yaml_mixture_with_json_jsonl_and_braces(tmp_path, tokenizer, processor, media):
    write_json(tmp_path / "a.json", [video_record("good.mp4", answer=f"a{i}") for i in range(4)])
    write_json(tmp_path / "b.json", [video_record("good.mp4", answer=f"b{i}") for i in range(2)])
    with open(tmp_path / "c.jsonl", "w") as handle:
        for i in range(6):
            handle.write(json.dumps(video_record("good.mp4", answer=f"c{i}")) + "\n")
    (tmp_path / "mix.yaml").write_text(
        "datasets:\n  - json_path: a.json\n    sampling_strategy: first:2\n"
        "  - json_path: c.jsonl\n    sampling_strategy: end:50%\n")
    ds = LazySupervisedDataset(str(tmp_path / "mix.yaml"), tokenizer, make_args(processor, media, "x"))
    answers = [s.conversations[-1]["value"] for s in ds.specs]
    assert answers == ["a0", "a1", "c3", "c4", "c5"]
    braces = LazySupervisedDataset(str(tmp_path / "{a,b}.json"), tokenizer, make_args(processor, media, "x"))
    assert len(braces) == 6


def test_video_sample_tensors_and_labels(tmp_path, tokenizer, processor, media):
    ds = dataset(tmp_path, tokenizer, processor, media, [video_record("good.mp4")])
    sample = ds[0]
    (pixels, size, modality), = sample["image"]
    assert modality == "video" and pixels.shape == (4, 3, 56, 56)
    ids, labels = sample["input_ids"], sample["labels"]
    assert (ids == IMAGE_TOKEN_INDEX).sum() == 1 and labels[ids == IMAGE_TOKEN_INDEX].eq(IGNORE_INDEX).all()
    supervised = tokenizer.decode(ids[labels != IGNORE_INDEX])
    assert supervised == "A red square.<|im_end|>\n"
    assert sample["instructions"] == ["What moves?"] and sample["data_events"] == []


def test_video_cache_decodes_each_video_once_and_changes_no_tensor(tmp_path, tokenizer, processor, media,
                                                                   monkeypatch):
    import llava.video as decoding

    records = [video_record("good.mp4", answer=f"a{i}") for i in range(3)]
    plain = dataset(tmp_path, tokenizer, processor, media, records)
    expected = [plain[i]["image"][0][0] for i in range(3)]
    decodes = []
    real = dict(decoding._DECODERS)
    for name, decoder in real.items():
        monkeypatch.setitem(decoding._DECODERS, name,
                            lambda path, select, decoder=decoder: decodes.append(path) or decoder(path, select))
    cached = dataset(tmp_path, tokenizer, processor, media, records, video_cache_mb=1)
    for epoch in range(2):
        for i in range(3):
            assert torch.equal(cached[i]["image"][0][0], expected[i])
    assert len(decodes) == 1 and (cached._videos.hits, cached._videos.misses) == (5, 1)
    again = dataset(tmp_path, tokenizer, processor, media, records)  # off, as LLaVA: every read decodes
    for i in range(3):
        again[i]
    assert len(decodes) == 4
    with pytest.raises(ValueError, match="--video_cache_mb -1: must be >= 0"):
        dataset(tmp_path, tokenizer, processor, media, records, video_cache_mb=-1)


def test_guided_expansion_one_sample_per_answer(tmp_path, tokenizer, processor, media):
    record = video_record("good.mp4")
    record["conversations"] += [{"from": "human", "value": "And then?"}, {"from": "gpt", "value": "It stops."}]
    text_only = {"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."},
                                              {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye."}]}
    ds = dataset(tmp_path, tokenizer, processor, media, [record, text_only], needs_instructions=True)
    assert len(ds) == 3  # two turns of the video sample, the text sample once
    first, second, text = ds[0], ds[1], ds[2]
    assert first["instructions"] == ["What moves?"] and second["instructions"] == ["And then?"]
    assert tokenizer.decode(second["input_ids"][second["labels"] != IGNORE_INDEX]) == "It stops.<|im_end|>\n"
    assert text["image"][0][2] == "text" and text["instructions"] == [""]
    assert tokenizer.decode(text["input_ids"][text["labels"] != IGNORE_INDEX]) == "Hello.<|im_end|>\nBye.<|im_end|>\n"


def test_collator_pads_and_flattens_items(tmp_path, tokenizer, processor, media):
    records = [video_record("good.mp4"), {"id": "i", "image": ["rgb.png", "gray.png"], "conversations": [
        {"from": "human", "value": "<image> and <image>: same?"}, {"from": "gpt", "value": "No, they differ a lot."}]}]
    ds = dataset(tmp_path, tokenizer, processor, media, records)
    batch = DataCollatorForSupervisedDataset(tokenizer)([ds[0], ds[1]])
    lengths = [len(ds[0]["input_ids"]), len(ds[1]["input_ids"])]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["modalities"] == ["video", "image", "image"] and len(batch["images"]) == 3
    assert len(batch["instructions"]) == 3
    short = lengths.index(min(lengths))
    assert (batch["labels"][short, min(lengths):] == IGNORE_INDEX).all()


# --------------------------------------------------------------------------- bad data


READ_TIME_CASES = {
    "missing_file": video_record("nowhere.mp4"),
    "empty_file": video_record("empty.mp4"),
    "undecodable_video": video_record("truncated.mp4"),
    "undecodable_video ": video_record("not_a_video.mp4"),
    "image_too_large": {"id": "h", "image": "huge.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "Black."}]},
}


@pytest.mark.parametrize("kind", sorted(READ_TIME_CASES))
def test_unreadable_media_is_a_counted_skip_or_a_strict_error(kind, tmp_path, tokenizer, processor, media):
    records = [READ_TIME_CASES[kind], video_record("good.mp4")]
    ds = dataset(tmp_path, tokenizer, processor, media, records)
    sample = ds[0]  # falls through to the next good sample
    assert sample["id"] == "good.mp4"
    (what, reason, message), = sample["data_events"]
    assert (what, reason) == ("skip", kind.strip())
    assert str(READ_TIME_CASES[kind].get("video") or READ_TIME_CASES[kind].get("image")) in message
    strict = dataset(tmp_path, tokenizer, processor, media, records, strict_data=True)
    with pytest.raises(ValueError, match="--strict_data"):
        strict[0]


def test_truncated_mp4_error_names_file(tmp_path, tokenizer, processor, media):
    strict = dataset(tmp_path, tokenizer, processor, media, [video_record("truncated.mp4")], strict_data=True)
    with pytest.raises(ValueError, match="truncated.mp4"):
        strict[0]


@pytest.mark.parametrize("name, frames", [("one_frame.mp4", 1), ("three_frames.mp4", 3)])
def test_short_videos_use_every_frame_once_with_a_note(name, frames, tmp_path, tokenizer, processor, media):
    sample = dataset(tmp_path, tokenizer, processor, media, [video_record(name)])[0]
    assert sample["image"][0][0].shape[0] == frames
    (what, kind, message), = sample["data_events"]
    assert (what, kind) == ("note", "fewer_frames") and name in message


@pytest.mark.parametrize("name", ["gray.png", "rgba.png"])
def test_grayscale_and_rgba_images_become_rgb(name, tmp_path, tokenizer, processor, media):
    record = {"id": name, "image": name, "conversations": [{"from": "human", "value": "<image>\nColour?"},
                                                           {"from": "gpt", "value": "Grey."}]}
    sample = dataset(tmp_path, tokenizer, processor, media, [record])[0]
    pixels = sample["image"][0][0]
    assert pixels.shape == (1, 3, 56, 56) and sample["data_events"] == []
    if name == "rgba.png":  # transparent half composited on white, opaque half red
        left, right = pixels[0, :, 28, 12], pixels[0, :, 28, 44]
        assert torch.allclose(left, torch.ones(3), atol=0.02)
        assert right[0] > 0.9 and right[1] < -0.9


LOAD_TIME_CASES = {
    "placeholder_mismatch": video_record("good.mp4", question="What moves?"),
    "placeholder_mismatch ": video_record("good.mp4", question="<video>\n<video> What moves?"),
    "no_answer": {"id": "n", "video": "good.mp4", "conversations": [{"from": "human", "value": QUESTION}]},
    "malformed_record": {"id": "m", "video": "good.mp4", "conversations": "not a list"},
    "empty_instruction": video_record("good.mp4", question="<video>\n  "),
}


@pytest.mark.parametrize("kind", sorted(LOAD_TIME_CASES))
def test_structural_problems_are_dropped_at_load_and_counted(kind, tmp_path, tokenizer, processor, media):
    records = [LOAD_TIME_CASES[kind], video_record("good.mp4")]
    ds = dataset(tmp_path, tokenizer, processor, media, records, needs_instructions=True)
    assert len(ds) == 1 and ds.load_report.skipped == {kind.strip(): 1}
    assert "data.json[0]" in ds.load_report.examples[kind.strip()][0]
    with pytest.raises(Exception, match="data.json\\[0\\].*--strict_data"):
        dataset(tmp_path, tokenizer, processor, media, records, needs_instructions=True, strict_data=True)


def test_corrupt_jsonl_line_is_counted_with_its_line_number(tmp_path, tokenizer, processor, media):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(video_record("good.mp4")) + "\n{\"id\": broken\n" + json.dumps(video_record("good.mp4")) + "\n")
    ds = LazySupervisedDataset(str(path), tokenizer, make_args(processor, media, path))
    assert len(ds) == 2 and ds.load_report.skipped == {"corrupt_json_line": 1}
    assert "data.jsonl:2" in ds.load_report.examples["corrupt_json_line"][0]


def test_invalid_json_file_and_missing_file_are_errors_naming_the_file(tmp_path, tokenizer, processor, media):
    (tmp_path / "bad.json").write_text("[{\"id\": 1,,]")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        LazySupervisedDataset(str(tmp_path / "bad.json"), tokenizer, make_args(processor, media, "x"))
    with pytest.raises(FileNotFoundError, match="absent.json"):
        LazySupervisedDataset(str(tmp_path / "absent.json"), tokenizer, make_args(processor, media, "x"))


def test_text_longer_than_model_max_length(tmp_path, tokenizer, processor, media):
    long_answer = " ".join(["word"] * 400)
    long_question = "<video>\n" + " ".join(["why"] * 400)
    records = [video_record("good.mp4", answer=long_answer), video_record("good.mp4", question=long_question),
               video_record("good.mp4")]
    ds = dataset(tmp_path, tokenizer, processor, media, records)
    truncated = ds[0]
    assert len(truncated["input_ids"]) == tokenizer.model_max_length
    assert [e[:2] for e in truncated["data_events"]] == [("note", "truncated")]
    skipped = ds[1]  # question alone fills the budget: nothing supervised would remain
    assert skipped["id"] == "good.mp4" and [e[:2] for e in skipped["data_events"]] == [("skip", "too_long")]


def test_report_merges_and_summarises():
    a, b = DataReport(), DataReport()
    a.add(("skip", "missing_file", "x.mp4: file not found"))
    b.add(("skip", "missing_file", "y.mp4: file not found"))
    b.add(("note", "truncated", "z: cut"))
    a.merge(b.to_dict())
    assert a.skipped == {"missing_file": 2} and a.notes == {"truncated": 1}
    assert "2 sample(s) skipped" in a.summary() and "x.mp4" in a.summary()


# --------------------------------------------------------------------------- hardening


def test_non_utf8_bytes_are_a_corrupt_line_in_jsonl_and_an_error_naming_a_json(tmp_path, tokenizer, processor, media):
    good = json.dumps(video_record("good.mp4")).encode()
    path = tmp_path / "data.jsonl"
    path.write_bytes(good + b"\n" + b'{"id": "caf\xe9"}\n' + good + b"\n")
    ds = LazySupervisedDataset(str(path), tokenizer, make_args(processor, media, path))
    assert len(ds) == 2 and ds.load_report.skipped == {"corrupt_json_line": 1}
    assert "data.jsonl:2: not UTF-8" in ds.load_report.examples["corrupt_json_line"][0]
    (tmp_path / "latin.json").write_bytes(b'[{"id": "caf\xe9"}]')
    with pytest.raises(ValueError, match="latin.json: not UTF-8"):
        LazySupervisedDataset(str(tmp_path / "latin.json"), tokenizer, make_args(processor, media, "x"))


def test_skips_count_distinct_samples_and_replacements_spread(tmp_path, tokenizer, processor, media):
    """Three bad videos read in two epochs count 3; the good samples standing in for a run of bad
    ones are drawn, not the neighbour each time."""
    bad = [video_record(f"absent{i}.mp4") for i in range(3)] + [video_record("empty.mp4")] * 3
    records = bad + [dict(video_record("good.mp4"), id=f"good{i}") for i in range(6)]
    ds = dataset(tmp_path, tokenizer, processor, media, records)
    report, used = DataReport(), []
    for _ in range(2):
        for index in range(len(ds)):
            sample = ds[index]
            used.append(sample["id"])
            for event in sample["data_events"]:
                report.add(event)
    assert report.skipped == {"missing_file": 3, "empty_file": 3}  # the 3 empty.mp4 records are 3 samples
    first_epoch = used[: len(ds)]
    assert max(first_epoch.count(f"good{i}") for i in range(6)) < 1 + len(bad)
    assert len({s for s in first_epoch[: len(bad)]}) > 1
    assert DataReport.from_dict(report.to_dict()).to_dict() == report.to_dict()
    again = DataReport.from_dict(report.to_dict())
    again.merge(report.to_dict())  # the same samples seen on another rank: still 3 + 3
    assert again.skipped == report.skipped


def test_a_part_whose_files_are_all_missing_stops_before_training(tmp_path, tokenizer, processor, media):
    from llava.train.data import UnusableDataError

    good = tmp_path / "good.json"
    good.write_text(json.dumps([video_record("good.mp4")]))
    wrong = tmp_path / "wrong_root.json"
    wrong.write_text(json.dumps([video_record(f"v{i}.mp4") for i in range(20)]))
    mixture = tmp_path / "mix.yaml"
    mixture.write_text(f"datasets:\n  - json_path: {good}\n  - json_path: {wrong}\n")
    ds = LazySupervisedDataset(str(mixture), tokenizer, make_args(processor, media, mixture))
    with pytest.raises(UnusableDataError, match="wrong_root.json: none of its first 8 media files"):
        ds.check_media_roots()
    assert ds.load_report.skipped == {"unreadable_part": 1}
    streak = dataset(tmp_path, tokenizer, processor, media, [video_record(f"v{i}.mp4") for i in range(40)])
    with pytest.raises(UnusableDataError, match="32 samples in a row"):
        streak[0]


@pytest.mark.parametrize("name", ["../outside.mp4", "sub/../../outside.mp4", "/etc/passwd"])
def test_media_paths_leaving_the_data_root_are_refused(name, tmp_path, tokenizer, processor, media):
    records = [video_record("good.mp4"), dict(video_record("good.mp4"), video=name)]
    ds = dataset(tmp_path, tokenizer, processor, media, records)
    assert len(ds) == 1 and ds.load_report.skipped == {"outside_data_root": 1}
    assert name in ds.load_report.examples["outside_data_root"][0]
    allowed = dataset(tmp_path, tokenizer, processor, media, records, allow_outside_data_root=True)
    assert len(allowed) == 2
    inside = dataset(tmp_path, tokenizer, processor, media, [dict(video_record("good.mp4"), video="x/../good.mp4")])
    assert len(inside) == 1


def test_training_on_a_part_with_a_wrong_root_stops_with_the_report_written(tiny_dir, tmp_path, capsys):
    from llava.train.train import main

    data = tmp_path / "data.json"
    data.write_text(json.dumps([video_record(f"v{i}.mp4") for i in range(10)]))
    out = tmp_path / "out"
    rc = main(["--model_name_or_path", str(tiny_dir / "qwen2-tiny"), "--vision_tower", str(tiny_dir / "siglip-tiny"),
               "--version", "qwen_1_5", "--mm_projector_type", "mlp2x_gelu", "--mm_tunable_parts", "mm_mlp_adapter",
               "--data_path", str(data), "--video_folder", str(tmp_path / "wrong"), "--image_folder", str(tmp_path),
               "--num_frames", "2", "--output_dir", str(out), "--max_steps", "1", "--report_to", "none",
               "--per_device_train_batch_size", "1", "--gradient_checkpointing", "False"])
    assert rc == 2
    assert "none of its first 8 media files can be read" in capsys.readouterr().err
    report = json.loads((out / "data_report.json").read_text())
    assert report["skipped"] == {"unreadable_part": 1} and str(data) in report["examples"]["unreadable_part"][0]
    assert not (out / "trainer_state.json").exists()
