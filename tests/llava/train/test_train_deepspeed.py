"""The three tiny HICom stages under ``deepspeed --num_gpus 2`` with ZeRO-3 on CPU ranks (gloo),
run through the real shell scripts, each stage consuming the previous one's output."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.training import logged_losses, make_synthetic_data, run_stage, stage_env

STEPS = 6


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    data = make_synthetic_data(tmp_path_factory.mktemp("synthetic"))
    out = tmp_path_factory.mktemp("ds_out")
    env = stage_env(tiny_dir, data, out, MAX_STEPS=STEPS, SAVE_STEPS=3)
    for stage in (1, 2, 3):
        run_stage(stage, env)
    return {"out": out, "data": data, "env": env}


def test_loss_falls_in_every_stage(runs):
    for stage in (1, 2, 3):
        losses = list(logged_losses(runs["out"] / f"stage{stage}").values())
        assert len(losses) == STEPS
        assert sum(losses[-2:]) < sum(losses[:2]), f"stage {stage}: {losses}"


def test_stage1_trains_only_the_projector(runs, tiny_dir):
    stage1 = runs["out"] / "stage1"
    assert not (stage1 / "model.safetensors").exists()
    state = torch.load(stage1 / "mm_projector.bin", weights_only=True)
    assert state and all(k.startswith("model.mm_projector.compressor.") for k in state)
    groups = json.loads((stage1 / "optimizer_groups.json").read_text())
    params = sum(v.numel() for k, v in state.items() if "running" not in k)
    assert sum(g["numel"] for g in groups) == params  # nothing but the adapter in the optimizer
    assert {g["name"].split("/")[0] for g in groups} == {"base"} and {g["lr"] for g in groups} == {1e-3}


def test_stage2_injectors_train_with_their_own_learning_rate(runs):
    stage2 = runs["out"] / "stage2"
    groups = {g["name"]: g for g in json.loads((stage2 / "optimizer_groups.json").read_text())}
    injector = [g for name, g in groups.items() if name.startswith("guide_injector/")]
    rest = [g for name, g in groups.items() if name.startswith("base/")]
    assert injector and rest
    assert {g["lr"] for g in injector} == {1e-2} and {g["lr"] for g in rest} == {1e-3}
    stage1 = torch.load(runs["out"] / "stage1" / "mm_projector.bin", weights_only=True)
    stage2_state = torch.load(stage2 / "mm_projector.bin", weights_only=True)
    new = sorted(set(stage2_state) - set(stage1))
    assert new and all(".injector." in k for k in new)  # the injectors are what stage 2 adds


def test_stage3_trains_the_llm_and_leaves_the_towers(runs, tiny_dir):
    trained = load_file(runs["out"] / "stage3" / "model.safetensors")
    llm = load_file(tiny_dir / "qwen2-tiny" / "model.safetensors")
    siglip = load_file(tiny_dir / "siglip-tiny" / "model.safetensors")
    changed = [k for k in llm if k.startswith("model.layers.") and not torch.equal(llm[k], trained[k])]
    assert len(changed) > len([k for k in llm if k.startswith("model.layers.")]) // 2
    tower = {k: v for k, v in trained.items() if k.startswith("model.vision_tower.vision_tower.")}
    assert tower
    for key, value in tower.items():
        assert torch.equal(value, siglip[key.removeprefix("model.vision_tower.vision_tower.")]), key
    text = {k: v for k, v in trained.items() if k.startswith("model.mm_projector.text_encoder.text_model.")}
    assert text
    for key, value in text.items():
        assert torch.equal(value, siglip[key.removeprefix("model.mm_projector.text_encoder.")]), key


def test_zero3_on_two_ranks_matches_one_process(runs, tiny_dir, tmp_path):
    """Same data order (2 ranks x 2 samples == 1 process x 2 micro-batches of 2) and the same loss."""
    env = {**runs["env"], "OUT": str(tmp_path), "LAUNCHER": "python", "NUM_GPUS": "1", "DS_CONFIG": ""}
    run_stage(1, env)
    single = logged_losses(tmp_path / "stage1")
    zero3 = logged_losses(runs["out"] / "stage1")
    assert single.keys() == zero3.keys()
    for step in single:
        assert single[step] == pytest.approx(zero3[step], rel=1e-5, abs=1e-5), step


# --------------------------------------------------------------------------- export of these runs

LOGITS_SCRIPT = """
import sys, torch, llava
from transformers import AutoModelForCausalLM
sys.path.insert(0, sys.argv[3])
from tests.llava.train.test_train_deepspeed import probe_inputs
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
with torch.no_grad():
    torch.save(model(**probe_inputs(model, sys.argv[4])).logits, sys.argv[2])
"""


def probe_inputs(model, data_dir) -> dict:
    """A fixed video question in the model's own format."""
    from llava.mm_utils import tokenizer_image_token
    from llava.video import load_video_frames
    from transformers import AutoTokenizer

    folder = model.config._name_or_path or model.name_or_path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    frames = load_video_frames(f"{data_dir}/videos/vid_0000.mp4", num_frames=8).frames
    pixels = model.get_vision_tower().image_processor.preprocess(frames, return_tensors="pt")["pixel_values"]
    prompt = "<|im_start|>user\n<image>\nDescribe the red square.<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None]
    return {"input_ids": ids, "images": [pixels], "modalities": ["video"], "instructions": ["Describe the red square."]}


def logits_of(folder, data_dir, base=None):
    from llava.model.builder import load_pretrained_model

    _, model, _, _ = load_pretrained_model(str(folder), base, None, device_map="cpu", torch_dtype="float32")
    model.config._name_or_path = str(folder if base is None else base)
    with torch.no_grad():
        return model(**probe_inputs(model, data_dir)).logits


def test_export_full_and_zero3_checkpoint_load_identically(runs, tmp_path):
    import shutil
    import subprocess
    import sys

    from llava.export import export
    from tests.helpers.training import REPO

    stage3 = runs["out"] / "stage3"
    trained = logits_of(stage3, runs["data"])
    full = export(stage3, tmp_path / "full")
    shards_only = tmp_path / "checkpoint-6"
    shutil.copytree(stage3 / "checkpoint-6", shards_only, ignore=shutil.ignore_patterns("model*.safetensors*"))
    from_shards = export(shards_only, tmp_path / "from_shards")
    for folder in (full, from_shards):
        names = {p.name for p in folder.rglob("*")}
        assert "model.safetensors" in names and "README.md" in names and "text_tokenizer" in names
        assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "llava_qwen" and config["mm_vision_tower"] == "siglip-tiny"
        assert str(tmp_path) not in (folder / "config.json").read_text()
        assert torch.equal(logits_of(folder, runs["data"]), trained)
    out = tmp_path / "auto_logits.pt"
    subprocess.run([sys.executable, "-c", LOGITS_SCRIPT, str(full), str(out), str(REPO), str(runs["data"])],
                   check=True, cwd=tmp_path, capture_output=True)
    assert torch.equal(torch.load(out, weights_only=True), trained)
    card = (full / "README.md").read_text()
    assert "| 32 | 104 |" in card and "stage2.json" in card and "stage3.json" in card
    # the plugin's section, its group LR column and its side files; resolved flags leave no dead keys
    assert "HICom options (`config.json` → `hicom_config`)" in card and ", guide_injector 0.01 |" in card
    config = json.loads((full / "config.json").read_text())
    assert config["hicom_text_tokenizer"] == "text_tokenizer" and "hicom_config" in config
    assert not {"hicom_preset", "use_guide", "hicom_overrides"} & set(config)
    assert config["plugin_flags"]["hicom"].startswith("--hicom_preset ")


def test_export_adapter_stage_with_its_base_llm(runs, tiny_dir, tmp_path):
    from llava.export import ExportError, export

    stage2 = runs["out"] / "stage2"
    with pytest.raises(ExportError, match="--base-llm"):
        export(stage2, tmp_path / "no_base")
    folder = export(stage2, tmp_path / "stage2", base_llm=tiny_dir / "qwen2-tiny")
    exported, siglip = load_file(folder / "model.safetensors"), load_file(tiny_dir / "siglip-tiny" / "model.safetensors")
    prefix = "model.mm_projector.text_encoder."
    text_keys = [k for k in exported if k.startswith(prefix)]
    assert text_keys and all(torch.equal(exported[k], siglip[k.removeprefix(prefix)]) for k in text_keys)
    assert torch.equal(logits_of(folder, runs["data"]), logits_of(stage2, runs["data"], base=str(tiny_dir / "qwen2-tiny")))
