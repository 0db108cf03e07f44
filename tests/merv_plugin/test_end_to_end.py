"""MERV end to end at toy scale: ``scripts/train/merv/tiny/stage2_finetune.sh`` (merv-base: projectors +
mixer + LLM, encoders frozen; the mixer at its own LR) under ``deepspeed --num_gpus 2`` with ZeRO-3 on
CPU ranks; then the MCQA evaluation script, lmms-eval's ``llava_vid`` call pattern, export + reload, and
the mixer-weight picture."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llava.eval import model_video_mcqa
from tests.helpers.eval_fixtures import write_mvbench
from tests.helpers.training import REPO, logged_losses, make_synthetic_data, stage_env

STEPS = 3
MIXER_LR = 0.01
SCRIPT = REPO / "scripts" / "train" / "merv" / "tiny" / "stage2_finetune.sh"


@pytest.fixture(scope="module")
def run(tiny_dir, merv_tower_dir, tmp_path_factory):
    data = make_synthetic_data(tmp_path_factory.mktemp("merv-data"))
    out = tmp_path_factory.mktemp("merv-run")
    env = stage_env(tiny_dir, data, out, TOWER=merv_tower_dir, SAVE_STEPS=STEPS,
                    EXTRA=f"--max_steps {STEPS} --merv_mixer_lr {MIXER_LR}")
    result = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    if result.returncode != 0:
        raise AssertionError(f"MERV finetune failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-6000:]}")
    return SimpleNamespace(folder=out / "finetune", data=data, tower=merv_tower_dir)


def test_training_moves_the_projectors_mixer_and_llm_and_never_the_encoders(run, tiny_dir):
    from merv_plugin.tower import MERVVisionTower

    assert len(logged_losses(run.folder)) == STEPS
    trained = load_file(run.folder / "model.safetensors")
    tower = MERVVisionTower(str(run.tower), SimpleNamespace()).state_dict()
    saved = {k.removeprefix("model.vision_tower."): v for k, v in trained.items() if k.startswith("model.vision_tower.")}
    assert saved.keys() == tower.keys() and all(torch.equal(saved[k], tower[k]) for k in tower)
    llm = load_file(tiny_dir / "qwen2-tiny" / "model.safetensors")
    layers = [k for k in llm if k.startswith("model.layers.")]
    assert sum(not torch.equal(llm[k], trained[k]) for k in layers) > len(layers) // 2
    groups = json.loads((run.folder / "optimizer_groups.json").read_text())
    trainable = sum(v.numel() for k, v in trained.items() if not k.startswith("model.vision_tower."))
    tied = trained.get("lm_head.weight")
    trainable -= tied.numel() if tied is not None and torch.equal(tied, trained["model.embed_tokens.weight"]) else 0
    assert sum(g["numel"] for g in groups) == trainable  # projectors + mixer + LLM: nothing of the encoders
    mixer = [g for g in groups if g["name"].startswith("merv_mixer/")]
    mixer_numel = sum(v.numel() for k, v in trained.items() if k.startswith("model.mm_projector.mixer."))
    assert sum(g["numel"] for g in mixer) == mixer_numel and {g["lr"] for g in mixer} == {MIXER_LR}
    assert {g["lr"] for g in groups if g not in mixer} == {1e-3}
    config = json.loads((run.folder / "config.json").read_text())
    assert config["mm_vision_tower_type"] == "merv" and config["merv_config"]["grid"] == [2, 2, 2]
    encoders = config["mm_vision_tower_config"]["encoders"]
    assert [e["name"] for e in encoders] == ["languagebind", "dinov2", "vivit", "siglip"]


def test_mcqa_script_answers_every_question(run, tmp_path):
    data = write_mvbench(tmp_path / "mvbench")
    answers = tmp_path / "answers.jsonl"
    assert model_video_mcqa.main(["--model-path", str(run.folder), *data.args(), "--video-folder",
                                  str(data.video_folder), "--answers-file", str(answers), "--num-frames", "4",
                                  "--max-new-tokens", "3", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == 4 and all(isinstance(row["text"], str) for row in rows)  # the fixture's 4 questions


def test_lmms_llava_vid_call_pattern_generates(run):
    """What lmms-eval's stock ``llava_vid`` does: frames through ``processor.preprocess`` (the primary
    encoder's pixels; the tower derives the others), ``generate(images=[clip], modalities="video")``."""
    from llava.mm_utils import tokenizer_image_token
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(run.folder), None, "llava_qwen", device_map="cpu",
                                                           torch_dtype="float32")
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 48, 64, 3), dtype=np.uint8)
    clip = processor.preprocess(frames, return_tensors="pt")["pixel_values"]
    assert clip.shape == (4, 3, 16, 16)  # the primary (LanguageBind slot) encoder's pixels
    prompt = "<|im_start|>user\n<image>\nWhat moves?<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None]
    with torch.inference_mode():
        out = model.generate(inputs=ids, images=[clip], modalities="video", do_sample=False, max_new_tokens=4)
    assert 1 <= out.shape[1] <= 4


def test_export_reloads_identically_and_its_card_lists_every_encoder(run, tmp_path):
    from llava.export import export
    from llava.model.builder import load_pretrained_model

    exported = export(run.folder, tmp_path / "export")
    card = (exported / "README.md").read_text()
    for name, cls in (("languagebind", "CLIPVisionModel"), ("dinov2", "Dinov2WithRegistersModel"),
                      ("vivit", "VivitModel"), ("siglip", "SiglipVisionModel")):
        assert f"| {name} |" in card and cls in card, name
    assert "cross_attention_avg_lq" in card
    frames = np.random.default_rng(1).integers(0, 256, size=(8, 40, 40, 3), dtype=np.uint8)
    logits = []
    for folder in (run.folder, exported):
        tokenizer, model, processor, _ = load_pretrained_model(str(folder), None, "x", device_map="cpu",
                                                               torch_dtype="float32")
        ids = torch.tensor([[5, -200, 6, 7]])
        with torch.no_grad():
            logits.append(model(input_ids=ids, images=[processor.process_clip(frames)], modalities=["video"]).logits)
    torch.testing.assert_close(logits[0], logits[1], atol=0, rtol=0)


def test_mixer_weight_picture_of_the_trained_model(run, tmp_path):
    from PIL import Image

    from merv_plugin.figures import main as figure

    videos = sorted((run.data / "videos").glob("*.mp4"))[:3]
    out = tmp_path / "weights.png"
    assert figure(["--model-path", str(run.folder), "--out", str(out), *map(str, videos)]) == 0
    weights = json.loads(out.with_suffix(".json").read_text())
    assert weights["encoders"] == ["languagebind", "dinov2", "vivit", "siglip"]
    rows = np.array(list(weights["videos"].values()))
    assert rows.shape == (3, 4) and np.allclose(rows.sum(1), 1, atol=1e-5)
    assert Image.open(out).size == (220 + 4 * 110 + 10, 60 + 3 * 28)
