"""The DeepSpeed configs keep upstream's contract (zero3 without an optimizer block: per-module LRs)."""

import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


def _load(name):
    return json.loads((SCRIPTS / name).read_text())


@pytest.mark.parametrize("name", ["zero3.json", "zero3_offload.json"])
def test_zero3_configs_have_no_optimizer_block(name):
    """Without one, the trainer's optimizer with its per-module parameter groups (and LRs) is used; with
    offload, DeepSpeed is told to accept that (client) optimizer on the CPU-held partitions."""
    cfg = _load(name)
    assert "optimizer" not in cfg
    if cfg["zero_optimization"].get("offload_optimizer", {}).get("device", "none") != "none":
        assert cfg["zero_force_ds_cpu_optimizer"] is False


def test_zero3_gathers_on_save():
    cfg = _load("zero3.json")
    assert cfg["zero_optimization"]["stage"] == 3
    assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert cfg["gradient_clipping"] == "auto"


@pytest.mark.parametrize("name, stage", [("zero2.json", 2), ("zero3_offload.json", 3)])
def test_other_configs(name, stage):
    cfg = _load(name)
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["train_micro_batch_size_per_gpu"] == "auto" and cfg["gradient_accumulation_steps"] == "auto"
