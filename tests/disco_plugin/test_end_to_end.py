"""DisCo end to end at toy scale: stage 1 (caption alignment with VCD + TFC) through
``scripts/train/disco/tiny/stage1_align.sh`` under ``deepspeed --num_gpus 2`` with ZeRO-3 on CPU ranks;
stage 2 (instruction tuning, LM loss only) in-process with the flags its script launches; then the MCQA
evaluation script, lmms-eval's ``llava_vid`` call pattern, and export + reload."""

from __future__ import annotations

import json
import shlex
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llava.eval import model_video_mcqa
from tests.helpers.eval_fixtures import write_mvbench
from tests.helpers.training import REPO, make_synthetic_data, stage_env

SCRIPTS = REPO / "scripts" / "train" / "disco" / "tiny"
BAD = {"not a list": "a red tile", "empty": ["a red tile", ""], "too many": ["a", "b", "c", "d", "e"]}


def _stage1_data(data):
    """The synthetic captions (each with its ``instances``), one without them, three with bad ones."""
    records = json.loads((data / "stage1.json").read_text())
    assert all(r["instances"] and r["conversations"][1]["value"].lower().startswith(r["instances"][0])
               for r in records)  # the generator writes the tiles it drew, in the caption's order
    records[0].pop("instances")
    for record, value in zip(records[1:], BAD.values()):
        record["instances"] = value
    path = data / "stage1_disco.json"
    path.write_text(json.dumps(records))
    return path


def _script_flags(script, env) -> list[str]:
    """The train_mem.py flags ``script`` launches (``LAUNCHER=print``: one shell-quoted command line)."""
    printed = subprocess.run(["bash", str(script)], cwd=REPO, env={**env, "LAUNCHER": "print", "DS_CONFIG": ""},
                             capture_output=True, text=True, check=True).stdout
    words = shlex.split(printed)
    return words[words.index("llava/train/train_mem.py") + 1:]


@pytest.fixture(scope="module")
def run(tiny_dir, tmp_path_factory):
    from llava.train.train import train

    data = make_synthetic_data(tmp_path_factory.mktemp("disco-data"))
    out = tmp_path_factory.mktemp("disco-run")
    env = stage_env(tiny_dir, data, out, MAX_STEPS=3, SAVE_STEPS=3, STAGE1_DATA=_stage1_data(data), FRAMES=4)
    result = subprocess.run(["bash", str(SCRIPTS / "stage1_align.sh")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=400)
    if result.returncode != 0:
        raise AssertionError(f"DisCo stage 1 failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    train(argv=_script_flags(SCRIPTS / "stage2_instruction_tuning.sh", {**env, "MAX_STEPS": "2", "SAVE_STEPS": "2"}))
    return SimpleNamespace(stage1=out / "stage1", stage2=out / "stage2", data=data)


def test_stage1_logs_both_losses_every_step_and_counts_bad_instances(run):
    history = json.loads((run.stage1 / "trainer_state.json").read_text())["log_history"]
    steps = [e for e in history if "loss" in e]
    assert len(steps) == 3
    assert all(e["loss_disco_vcd"] > 0 and e["loss_disco_tfc"] > 0 for e in steps)
    report = json.loads((run.stage1 / "data_report.json").read_text())
    assert report["skipped"] == {"bad_instances": len(BAD)}
    config = json.loads((run.stage1 / "config.json").read_text())
    assert config["aux_loss_weights"] == {"disco_vcd": 1.0, "disco_tfc": 1.0}
    assert config["disco_config"]["num_queries"] == 12 and "disco_preset" not in config
    adapter = torch.load(run.stage1 / "mm_projector.bin", weights_only=True)
    assert any(".heads.v_proj." in k for k in adapter) and any(".resampler.queries" in k for k in adapter)
    assert not any("instance_encoder" in k for k in adapter)  # the frozen text tower loads itself


def test_stage2_trains_with_the_lm_loss_only(run):
    history = json.loads((run.stage2 / "trainer_state.json").read_text())["log_history"]
    steps = [e for e in history if "loss" in e]
    assert len(steps) == 2 and not any(k.startswith("loss_disco") for e in steps for k in e)
    config = json.loads((run.stage2 / "config.json").read_text())
    assert config["aux_loss_weights"] == {"disco_vcd": 0.0, "disco_tfc": 0.0}


def test_mcqa_script_answers_every_question(run, tmp_path):
    data = write_mvbench(tmp_path / "mvbench")
    answers = tmp_path / "answers.jsonl"
    assert model_video_mcqa.main(["--model-path", str(run.stage2), *data.args(), "--video-folder",
                                  str(data.video_folder), "--answers-file", str(answers), "--num-frames", "4",
                                  "--max-new-tokens", "3", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == 4 and all("text" in row for row in rows)


def test_lmms_llava_vid_call_pattern_generates_without_instances(run):
    from llava.mm_utils import tokenizer_image_token
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(run.stage2), None, "llava_qwen", device_map="cpu",
                                                           torch_dtype="float32")
    frames = np.random.default_rng(0).integers(0, 256, size=(6, 48, 64, 3), dtype=np.uint8)
    clip = processor.preprocess(frames, return_tensors="pt")["pixel_values"]
    prompt = "<|im_start|>user\n<image>\nWhich tiles are in the video?<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None]
    assert [model.num_visual_tokens(t, "video") for t in (1, 6, 32, 64, 128)] == [12] * 5
    with torch.inference_mode():
        out = model.generate(inputs=ids, images=[clip], modalities="video", do_sample=False, max_new_tokens=4)
    assert 1 <= out.shape[1] <= 4


def test_export_reloads_identically(run, tmp_path):
    from llava.export import export
    from llava.model.builder import load_pretrained_model

    exported = export(run.stage2, tmp_path / "export")
    assert (exported / "instance_tokenizer").is_dir()
    assert "DisCo options (`config.json` → `disco_config`)" in (exported / "README.md").read_text()
    frames = np.random.default_rng(1).integers(0, 256, size=(4, 40, 40, 3), dtype=np.uint8)
    logits = []
    for folder in (run.stage2, exported):
        _, model, processor, _ = load_pretrained_model(str(folder), None, "x", device_map="cpu", torch_dtype="float32")
        clip = processor.preprocess(frames, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            logits.append(model(input_ids=torch.tensor([[5, -200, 6, 7]]), images=[clip], modalities=["video"]).logits)
    assert logits[0].shape[1] == 3 + 12  # K visual tokens, whatever the frame count
    torch.testing.assert_close(logits[0], logits[1], atol=0, rtol=0)
