"""``python -m llava.serve.cli``: one-shot answers equal a direct greedy ``generate``, chat keeps the history
and streams, every turn is conditioned on its own question, token counts match the encoder, bad inputs
exit with status 2 and a one-line message."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import assemble_llava_qwen, load_pretrained_model
from llava.serve import cli
from llava.toy.tiny import LLAVA_QWEN_DIRNAME
from llava.video import load_video_frames
from tests.helpers.videos import write_test_video

FRAMES = 4
MAX_NEW_TOKENS = 8
QUESTIONS = ("what moves in the video?", "describe the red square")
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def hicom_dir(tiny_dir, tmp_path_factory) -> Path:
    """A tiny HICom checkpoint (paper preset) whose output head is untied from the input embeddings.

    With tied random weights the tiny LLM copies its last input token ("\\n") forever, so every answer
    would be empty and equal to every other; an independent random head makes the answers depend on the
    question, the history and the video, which is what the comparisons below need.
    """
    out = tmp_path_factory.mktemp("serve") / "tiny-hicom"
    assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", out, mm_projector_type="hicom",
                        hicom_preset="paper")
    _, model, _, _ = load_pretrained_model(str(out), None, "hicom", device_map="cpu", torch_dtype="float32")
    model.config.tie_word_embeddings = False
    generator = torch.Generator().manual_seed(0)
    model.lm_head.weight = nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=generator))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def hicom(hicom_dir):
    return load_pretrained_model(str(hicom_dir), None, "hicom", device_map="cpu", torch_dtype="float32")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    # 64x48: not square, so the checkpoint's image_aspect_ratio="pad" changes the pixels
    return write_test_video(tmp_path_factory.mktemp("video") / "stripes.mp4", num_frames=24, width=64, height=48)


def reference_answers(hicom, video: Path, questions) -> list[str]:
    """Greedy answers of a multi-turn chat, built directly: frames padded to squares as in training, the
    video in the first user turn only, and each turn's own question as the HICom instruction."""
    tokenizer, model, processor, _ = hicom
    assert model.config.image_aspect_ratio == "pad"
    frames = load_video_frames(video, num_frames=FRAMES).frames
    pixels = process_images([Image.fromarray(f) for f in frames], processor, model.config)
    conv = conv_templates["qwen_1_5"].copy()
    answers = []
    for turn, question in enumerate(questions):
        conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}" if turn == 0 else question)
        conv.append_message(conv.roles[1], None)
        ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]
        out = model.generate(ids, images=[pixels], modalities=["video"], instructions=[question],
                             max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()
        conv.messages[-1][1] = answer
        answers.append(answer)
    return answers


def cli_args(model_dir: Path, video: Path, *extra: str) -> list[str]:
    return ["--model-path", str(model_dir), "--video-file", str(video), "--num-frames", str(FRAMES),
            "--max-new-tokens", str(MAX_NEW_TOKENS), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def references(hicom, video) -> dict[str, str]:
    first, second = reference_answers(hicom, video, QUESTIONS)
    return {"first": first, "second": second, "second_alone": reference_answers(hicom, video, QUESTIONS[1:])[0]}


def test_one_shot_prints_the_reference_answer_only(hicom_dir, video, references):
    assert references["first"]  # the untied head gives a non-trivial answer to compare with
    env = dict(os.environ, PYTHONIOENCODING="utf-8", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [sys.executable, "-m", "llava.serve.cli", *cli_args(hicom_dir, video, "--question", QUESTIONS[0])]
    result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", cwd=REPO, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == references["first"] + "\n"
    assert "41 visual tokens" in result.stderr  # logs go to stderr


def test_chat_reads_stdin_and_streams_both_answers_with_history(hicom_dir, video, references, monkeypatch, capsys):
    # the history changes the second answer, so finding it below shows the history was kept
    assert references["second"] != references["second_alone"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(QUESTIONS) + "\n"))
    assert cli.main(cli_args(hicom_dir, video)) == 0
    stdout = capsys.readouterr().out
    turns = stdout.split(f"{cli.ASSISTANT_LABEL}: ")
    assert turns[0] == f"{cli.USER_LABEL}: " and len(turns) == 3  # a prompt, then one streamed answer per question
    assert references["first"] in turns[1] and references["second"] in turns[2]
    assert turns[2].endswith(f"\n{cli.USER_LABEL}: \n")  # EOF ends the chat


def test_streaming_hands_out_text_piece_by_piece(hicom_dir, video):
    chat = cli.start_chat(cli.build_parser().parse_args(cli_args(hicom_dir, video)))
    pieces: list[str] = []
    answer = chat.respond(QUESTIONS[0], on_text=pieces.append)
    assert len(pieces) > 1
    assert "".join(pieces).strip() == answer
    assert chat.conv.messages[-1][1] == answer  # recorded in the history


def record_generate_calls(chat, monkeypatch) -> list[dict]:
    """Makes ``chat.model.generate`` record its keyword arguments (and still generate)."""
    calls = []
    generate = chat.model.generate

    def recording(**kwargs):
        calls.append(kwargs)
        return generate(**kwargs)

    monkeypatch.setattr(chat.model, "generate", recording)
    return calls


def test_every_turn_is_conditioned_on_its_own_question(hicom_dir, video, monkeypatch):
    chat = cli.start_chat(cli.build_parser().parse_args(cli_args(hicom_dir, video)))
    calls = record_generate_calls(chat, monkeypatch)
    chat.respond(QUESTIONS[0])
    chat.respond(QUESTIONS[1])
    assert [c["instructions"] for c in calls] == [[QUESTIONS[0]], [QUESTIONS[1]]]
    assert [int((c["inputs"] == IMAGE_TOKEN_INDEX).sum()) for c in calls] == [1, 1]  # video attached once
    assert calls[1]["inputs"].shape[1] > calls[0]["inputs"].shape[1]  # the second prompt holds the first turn
    assert all(c["images"][0].shape == (FRAMES, 3, 56, 56) for c in calls)


def test_video_and_image_are_two_items_of_the_first_turn(hicom_dir, hicom, video, tmp_path, monkeypatch):
    _, model, _, _ = hicom
    image = tmp_path / "wide.png"
    Image.fromarray(np.full((48, 64, 3), 200, dtype=np.uint8)).save(image)
    chat = cli.start_chat(cli.build_parser().parse_args(cli_args(hicom_dir, video, "--image-file", str(image))))
    calls = record_generate_calls(chat, monkeypatch)
    chat.respond(QUESTIONS[0])
    (call,) = calls
    assert call["modalities"] == ["video", "image"] and call["instructions"] == [QUESTIONS[0]] * 2
    assert int((call["inputs"] == IMAGE_TOKEN_INDEX).sum()) == 2
    assert [tuple(p.shape) for p in call["images"]] == [(FRAMES, 3, 56, 56), (1, 3, 56, 56)]
    with torch.no_grad():
        encoded = model.encode_visual_items(call["images"], call["modalities"], call["instructions"])
    assert [item.num_tokens for item in chat.items] == [t.shape[0] for t in encoded]


def test_json_reports_answer_frames_and_the_encoders_token_count(hicom_dir, hicom, video, references, capsys):
    _, model, processor, _ = hicom
    assert cli.main(cli_args(hicom_dir, video, "--question", QUESTIONS[0], "--json")) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[1:] == [""]
    record = json.loads(lines[0])
    frames = load_video_frames(video, num_frames=FRAMES).frames
    pixels = cli.frames_to_pixels(frames, processor, "pad")
    with torch.no_grad():
        encoded = model.encode_visual_items([pixels], ["video"], [QUESTIONS[0]])[0].shape[0]
    assert record == {"question": QUESTIONS[0], "answer": references["first"], "frames": FRAMES,
                      "visual_tokens": encoded}


def test_num_frames_defaults_to_the_checkpoint_config_then_32(hicom_dir, video, tmp_path):
    def frames_used(model_dir: Path) -> int:
        args = cli.build_parser().parse_args(["--model-path", str(model_dir), "--video-file", str(video),
                                              "--device", "cpu"])
        return cli.start_chat(args).items[0].num_frames

    assert frames_used(hicom_dir) == cli.DEFAULT_NUM_FRAMES == 32  # the video has 24 frames: some repeat
    with_config = tmp_path / "with-num-frames"
    shutil.copytree(hicom_dir, with_config)
    config = json.loads((with_config / "config.json").read_text())
    (with_config / "config.json").write_text(json.dumps({**config, "num_frames": 6}))
    assert frames_used(with_config) == 6


def test_pad_aspect_pads_frames_to_squares_with_the_mean_colour(hicom):
    _, _, processor, _ = hicom
    frames = np.full((2, 48, 64, 3), 255, dtype=np.uint8)  # white, wider than tall
    padded = cli.frames_to_pixels(frames, processor, "pad")
    squashed = cli.frames_to_pixels(frames, processor, None)
    assert padded.shape == squashed.shape == (2, 3, 56, 56)
    background = (int(0.5 * 255) / 255 - 0.5) / 0.5  # the mean colour, normalised
    torch.testing.assert_close(padded[:, :, 0, :], torch.full((2, 3, 56), background), atol=1e-3, rtol=0)
    torch.testing.assert_close(squashed, torch.ones_like(squashed), atol=1e-3, rtol=0)


def test_token_count_of_tokenwise_projectors_matches_the_encoder(tiny_dir):
    _, model, _, _ = load_pretrained_model(str(tiny_dir / LLAVA_QWEN_DIRNAME), None, "ov", device_map="cpu",
                                           torch_dtype="float32")
    model.get_model().image_newline = nn.Parameter(torch.randn(model.config.hidden_size))
    items = [(1, "image"), (3, "video"), (5, "video")]
    torch.manual_seed(0)
    pixels = [torch.randn(frames, 3, 56, 56) for frames, _ in items]
    layouts = [("flat", "no_token")] + [("spatial_unpad", p) for p in ("one_token", "frame", "grid")]
    # 7x7 patch grid: average pooling floors to 3x3, bilinear rounds up to 4x4
    for pool_mode in ("average", "bilinear"):
        for merge, newline in layouts:
            config = model.config
            config.mm_spatial_pool_mode = pool_mode
            config.mm_patch_merge_type, config.mm_newline_position = merge, newline
            with torch.no_grad():
                encoded = [t.shape[0] for t in model.encode_visual_items(pixels, [m for _, m in items])]
            counted = [cli.visual_token_count(model, frames, modality) for frames, modality in items]
            assert counted == encoded, (pool_mode, merge, newline)


@pytest.mark.parametrize("chat_mode", [False, True])
def test_missing_video_is_a_one_line_error(hicom_dir, tmp_path, capsys, chat_mode):
    missing = tmp_path / "nowhere.mp4"
    extra = [] if chat_mode else ["--question", "what?"]
    assert cli.main(cli_args(hicom_dir, missing, *extra)) == cli.EXIT_INPUT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(missing) in captured.err and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1


def test_corrupt_video_and_missing_model_are_one_line_errors(hicom_dir, video, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00not a video" * 64)
    assert cli.main(cli_args(hicom_dir, corrupt, "--question", "what?")) == cli.EXIT_INPUT_ERROR
    err = capsys.readouterr().err
    assert str(corrupt) in err and err.count("\n") == 1
    no_model = tmp_path / "no-model"
    assert cli.main(cli_args(no_model, video, "--question", "what?")) == cli.EXIT_INPUT_ERROR
    err = capsys.readouterr().err
    assert str(no_model) in err and err.count("\n") == 1


def test_flags_that_do_not_fit_together_exit_with_usage(hicom_dir, video):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--model-path", str(hicom_dir)])  # neither a video nor an image
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(cli_args(hicom_dir, video, "--json"))  # --json without --question
    assert exc.value.code == 2


def _one_line_error(capsys, *needles) -> str:
    captured = capsys.readouterr()
    err = "\n".join(line for line in captured.err.splitlines()  # log lines and the loading bar aside
                     if line.strip() and " INFO: " not in line and "Loading weights" not in line)
    assert captured.out == "" and "Traceback" not in captured.err and err.count("\n") == 0, captured.err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_model_folders_and_oversized_inputs_are_one_line_errors(hicom_dir, video, tmp_path, capsys):
    import struct
    import zlib

    half = tmp_path / "half"
    shutil.copytree(hicom_dir, half)
    (half / "config.json").write_text((hicom_dir / "config.json").read_text()[:150])  # killed while writing
    assert cli.main(cli_args(half, video, "--question", "what?")) == cli.EXIT_INPUT_ERROR
    _one_line_error(capsys, str(half / "config.json"), "not valid JSON")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(hicom_dir, corrupt)
    weights = next(corrupt.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:4000])
    assert cli.main(cli_args(corrupt, video, "--question", "what?")) == cli.EXIT_INPUT_ERROR
    _one_line_error(capsys, str(corrupt), "cannot load the model weights")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = tmp_path / "bomb.png"  # a header claiming 20000x20000 pixels (> PIL's 179 MP limit)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    assert cli.main(["--model-path", str(hicom_dir), "--image-file", str(bomb), "--question", "what?"]) == 2
    _one_line_error(capsys, str(bomb), "image too large")

    assert cli.main(cli_args(hicom_dir, video, "--num-frames", "3000", "--question", "what?")) == 2
    _one_line_error(capsys, "visual tokens", "3000 frame(s)", "use fewer --num-frames")


def test_export_errors_are_one_line(hicom_dir, tmp_path, capsys):
    from llava import export

    unknown = tmp_path / "unknown"
    shutil.copytree(hicom_dir, unknown)
    config = json.loads((unknown / "config.json").read_text())
    config["mm_projector_type"] = "no_such_projector"
    (unknown / "config.json").write_text(json.dumps(config))
    assert export.main(["--src", str(unknown), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_projector" in err and str(unknown) in err
