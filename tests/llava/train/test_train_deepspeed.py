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
