"""B-VLLM end to end at toy scale: the three stages of ``scripts/train/bvllm/tiny`` under the real trainer
(stages 1-2 in this process with the scripts' own flags, stage 3 under ``deepspeed --num_gpus 2`` with
ZeRO-3 on CPU ranks), then multiple-choice evaluation, lmms-eval's ``llava_vid`` call pattern (the
instruction recovered from ``input_ids``) and export + reload."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import eval_fixtures as fx
from tests.helpers.training import REPO, logged_losses, make_synthetic_data, stage_env

SCRIPTS = REPO / "scripts" / "train" / "bvllm" / "tiny"
STAGES = {1: "stage1_pretrain.sh", 2: "stage2_sampler.sh", 3: "stage3_sft.sh"}
STEPS = 3
QUESTION = "What color is the centre of the yellow tile?"


def script_argv(stage: int, env: dict) -> list[str]:
    """The flags the stage script passes to ``train_mem.py`` (its ``LAUNCHER=print`` output)."""
    printed = subprocess.run(["bash", str(SCRIPTS / STAGES[stage])], cwd=REPO, capture_output=True, check=True,
                             env={**env, "LAUNCHER": "print", "DS_CONFIG": ""}).stdout.decode()
    return shlex.split(printed)[2:]


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    from llava.train.train import train

    data = make_synthetic_data(tmp_path_factory.mktemp("bvllm_data"))
    out = tmp_path_factory.mktemp("bvllm_runs")
    env = stage_env(tiny_dir, data, out, MAX_STEPS=STEPS, SAVE_STEPS=STEPS)
    for stage in (1, 2):
        train(argv=script_argv(stage, env))
    result = subprocess.run(["bash", str(SCRIPTS / STAGES[3])], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"out": out, "data": data, "tiny": tiny_dir}


def projector_state(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_each_stage_trains_its_parts(runs):
    out = runs["out"]
    for stage in (1, 2, 3):
        losses = logged_losses(out / f"stage{stage}")
        assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(v)) for v in losses.values()), stage
    stage1, stage2 = projector_state(out / "stage1" / "mm_projector.bin"), projector_state(out / "stage2" / "mm_projector.bin")
    assert sorted(stage1) == sorted(stage2) and all(k.startswith("model.mm_projector.") for k in stage1)
    changed = {k for k in stage1 if not torch.equal(stage1[k], stage2[k])}
    sampler = {k for k in stage1 if ".spatial_" in k}
    assert sampler & changed  # stage 2 trains Q-Former_S ...
    assert any(".temporal_" in k for k in changed)  # ... and the rest of the adapter
    # stage 1: the optimizer held exactly the selector and the linears (Q-Former_S frozen)
    groups = json.loads((out / "stage1" / "optimizer_groups.json").read_text())
    trainable = sum(v.numel() for k, v in stage1.items() if ".spatial_" not in k)
    assert sum(g["numel"] for g in groups) == trainable
    # stage 3 (ZeRO-3, 2 ranks): the LLM moved, the tower did not, the adapter came from stage 2 and moved on
    trained = load_file(out / "stage3" / "model.safetensors")
    llm = load_file(runs["tiny"] / "qwen2-tiny" / "model.safetensors")
    assert any(not torch.equal(llm[k], trained[k]) for k in llm if k.startswith("model.layers."))
    siglip = load_file(runs["tiny"] / "siglip-tiny" / "model.safetensors")
    tower = {k: v for k, v in trained.items() if k.startswith("model.vision_tower.vision_tower.")}
    assert tower and all(torch.equal(v, siglip[k.removeprefix("model.vision_tower.vision_tower.")]) for k, v in tower.items())
    assert any(not torch.equal(stage2[k], trained[k]) for k in stage2 if ".spatial_qformer." in k)


def test_mcqa_evaluation_answers_every_question(runs, tmp_path):
    from llava.eval import model_video_mcqa
    from llava.eval.benchmarks import load_questions

    fixture = fx.write_mvbench(tmp_path / "mvbench")
    answers = tmp_path / "answers.jsonl"
    rc = model_video_mcqa.main(["--model-path", str(runs["out"] / "stage3"), *fixture.args(), "--video-folder",
                                str(fixture.video_folder), "--answers-file", str(answers), "--num-frames", "4",
                                "--max-new-tokens", "3", "--device", "cpu"])
    assert rc == 0
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(lines) == len(load_questions(fixture.benchmark, fixture.question_file, fixture.gt_file)) == 4


def _video_prompt(tokenizer):
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import tokenizer_image_token

    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + QUESTION)
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]


def test_llava_vid_generation_export_and_reload(runs, tmp_path):
    """lmms-eval's ``llava_vid`` passes ``input_ids`` only: the question is recovered and generation equals an
    explicit call; the exported folder (with its Q-Former tokenizer) reloads to identical logits."""
    from llava.export import export
    from llava.model.builder import load_pretrained_model
    from llava.utils import load_video_frames

    stage3 = runs["out"] / "stage3"
    tokenizer, model, processor, _ = load_pretrained_model(str(stage3), None, "llava_qwen", device_map="cpu",
                                                           torch_dtype="float32")
    frames = load_video_frames(str(runs["data"] / "videos" / "vid_0000.mp4"), num_frames=6).frames
    clip = processor.preprocess(frames, return_tensors="pt")["pixel_values"]
    ids = _video_prompt(tokenizer)
    mask = torch.ones_like(ids)
    assert model.recover_instructions(ids, mask) == [QUESTION]
    kwargs = dict(images=[clip], modalities=["video"], attention_mask=mask, do_sample=False, max_new_tokens=3,
                  eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        implicit = model.generate(inputs=ids, **kwargs)
        explicit = model.generate(inputs=ids, instructions=[QUESTION], **kwargs)
    assert implicit.shape == (1, 3) and torch.equal(implicit, explicit)
    counts = model.get_model().mm_projector.last_selection["token_counts"]
    assert 0 < counts[0] <= model.num_visual_tokens(6, "video")

    folder = export(stage3, tmp_path / "exported")
    assert (folder / "qformer_tokenizer").is_dir() and str(tmp_path) not in (folder / "config.json").read_text()
    config = json.loads((folder / "config.json").read_text())
    assert config["bvllm_qformer_tokenizer"] == "qformer_tokenizer" and config["bvllm_config"]["num_slots"] == 4
    assert "B-VLLM options" in (folder / "README.md").read_text()
    _, again, _, _ = load_pretrained_model(str(folder), None, "llava_qwen", device_map="cpu", torch_dtype="float32")
    batch = dict(input_ids=ids, images=[clip], modalities=["video"])
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, model(**batch).logits, atol=0, rtol=0)
