"""The DeepSpeed configs keep upstream's contract (zero3 without an optimizer block: per-module LRs)."""

import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


def _load(name):
    return json.loads((SCRIPTS / name).read_text())


def test_zero3_has_no_optimizer_block_and_gathers_on_save():
    cfg = _load("zero3.json")
    assert "optimizer" not in cfg  # the trainer's per-module parameter groups then apply
    assert cfg["zero_optimization"]["stage"] == 3
    assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert cfg["gradient_clipping"] == "auto"


@pytest.mark.parametrize("name, stage", [("zero2.json", 2), ("zero3_offload.json", 3)])
def test_other_configs(name, stage):
    cfg = _load(name)
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["train_micro_batch_size_per_gpu"] == "auto" and cfg["gradient_accumulation_steps"] == "auto"
