"""A throwaway plugin, installed the way a real one is (its own package on ``sys.path``, entry points
through a distribution's metadata), contributes an argument, a parameter group with its own LR, an
auxiliary loss and a per-sample field, and trains 3 steps under the real trainer. Nothing in
``llava/`` names it."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from llava import registry
from tests.helpers.training import make_synthetic_data

PLUGIN_SOURCE = '''
"""A toy method: per-frame mean -> linear -> gate; the gate's squared outputs are an auxiliary loss on
tagged items; a tag list per sample."""
from dataclasses import dataclass

import torch
from torch import nn

from llava.model.multimodal_projector.base import ProjectorOutput, StructuredProjector
from llava.model.multimodal_projector.builder import register_projector
from llava.plugin import AuxLoss, ParamGroup, Plugin, SampleField, register_plugin

SEEN_TAGS = []


@dataclass
class ToyModelArguments:
    toy_scale: float | None = None  # None: not given, so other projectors' configs get no toy key


@dataclass
class ToyTrainingArguments:
    toy_gate_lr: float | None = None
    toy_aux_weight: float = 1.0


def parse_tags(value):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"tags must be a list of strings, got {value!r}")
    return value


class ToyProjector(StructuredProjector):
    sample_fields = ("tags",)
    aux_losses = ("toy_aux",)

    def __init__(self, config, **kwargs):
        super().__init__()
        self.scale = float(getattr(config, "toy_scale", 1.0))
        self.proj = nn.Linear(config.mm_hidden_size, config.hidden_size)
        self.gate = nn.Linear(config.hidden_size, config.hidden_size)

    def num_output_tokens(self, t, h, w, modality="video"):
        return t

    def tunable_parts(self):
        return {"toy_gate": list(self.gate.parameters())}

    def forward(self, batch):
        gated = self.gate(self.proj(batch.features.mean(dim=(1, 2))))  # (sum T, D)
        frames = gated * self.scale
        tags = batch.fields["tags"]
        SEEN_TAGS.append([list(t) for t in tags])
        tagged = torch.tensor([float(bool(t)) for t in tags]).mean()
        # from activations, not from self.gate.weight: under ZeRO-3 a weight exists only inside its module's forward
        loss = (gated ** 2).mean() * tagged  # zero, not absent, when no item is tagged
        return ProjectorOutput(list(frames.split(batch.frames_per_item)), {"toy_aux": loss})


PLUGIN = Plugin(
    name="toy",
    model_args=ToyModelArguments,
    training_args=ToyTrainingArguments,
    param_groups=(ParamGroup("toy_gate", lr_flag="toy_gate_lr"),),
    aux_losses=(AuxLoss("toy_aux", weight_flag="toy_aux_weight"),),
    sample_fields=(SampleField("tags", parse=parse_tags, default=list),),
    config_from_args=lambda m, d, t: {"toy_scale": m.toy_scale},  # the core writes no None value
)


def register():
    register_plugin(PLUGIN)
    register_projector("toy")(ToyProjector)
'''


def install_toy_plugin(site: Path) -> Path:
    """``site/toyplug`` and a ``toyplug-0.1.dist-info`` declaring its entry point, as pip leaves them."""
    (site / "toyplug").mkdir(parents=True)
    (site / "toyplug" / "__init__.py").write_text(PLUGIN_SOURCE)
    info = site / "toyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[llava.plugins]\ntoy = toyplug:register\n")
    return site


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """``toyplug`` installed on ``sys.path``, the entry points read again."""
    site = install_toy_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setattr(registry, "_loaded", False)
    yield importlib.import_module("toyplug")
    from llava.model.multimodal_projector.builder import PROJECTORS
    from llava.plugin import PLUGINS

    PROJECTORS.unregister("toy")
    PLUGINS.unregister("toy")
    sys.modules.pop("toyplug", None)


def _tagged_data(folder: Path) -> tuple[Path, list]:
    """The synthetic stage-3 records, tagged; one record with a bad tag value (a counted skip)."""
    records = json.loads((folder / "stage3.json").read_text())[:8]
    expected = []
    for index, record in enumerate(records):
        if index == 3:
            record["tags"] = "not a list"
            continue
        if index % 2 == 0:
            record["tags"] = [f"tag{index}"]
        expected.append(record.get("tags", []))
    path = folder / "tagged.json"
    path.write_text(json.dumps(records))
    return path, expected


def test_a_throwaway_plugin_trains_three_steps(toy_plugin, tiny_dir, tmp_path_factory, tmp_path):
    from llava.train.train import train

    data = make_synthetic_data(tmp_path_factory.mktemp("toydata"))
    annotations, kept_tags = _tagged_data(data)
    out = tmp_path / "run"
    trainer = train(argv=[
        "--model_name_or_path", str(tiny_dir / "qwen2-tiny"), "--vision_tower", str(tiny_dir / "siglip-tiny"),
        "--version", "qwen_1_5", "--mm_projector_type", "toy", "--toy_scale", "2.0",
        "--mm_tunable_parts", "mm_mlp_adapter,toy_gate", "--toy_gate_lr", "0.05", "--toy_aux_weight", "0.5",
        "--mm_vision_select_layer", "-2", "--mm_use_im_patch_token", "False",
        "--data_path", str(annotations), "--image_folder", str(data), "--video_folder", str(data),
        "--num_frames", "4", "--image_aspect_ratio", "pad", "--output_dir", str(out),
        "--max_steps", "3", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3",
        "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
        "--gradient_checkpointing", "False", "--dataloader_num_workers", "0", "--seed", "3",
    ])
    assert trainer.state.global_step == 3

    # the argument reached the config the projector was built from, with the flags as given
    config = json.loads((out / "config.json").read_text())
    assert config["toy_scale"] == 2.0
    assert config["aux_loss_weights"] == {"toy_aux": 0.5}
    assert config["plugin_flags"]["toy"] == "--toy_scale 2.0 --toy_gate_lr 0.05 --toy_aux_weight 0.5"
    assert trainer.model.get_model().mm_projector.scale == 2.0

    # the parameter group has its own LR, recorded from the optimizer itself
    groups = {g["name"]: g for g in json.loads((out / "optimizer_groups.json").read_text())}
    gate = [g for name, g in groups.items() if name.startswith("toy_gate/")]
    assert gate and all(g["lr"] == pytest.approx(0.05) for g in gate)
    hidden = config["hidden_size"]
    assert sum(g["numel"] for g in gate) == hidden * hidden + hidden
    assert all(g["lr"] == pytest.approx(1e-3) for name, g in groups.items() if not name.startswith("toy_gate/"))

    # the auxiliary loss is logged every step; recomputed from the trained gate for the last step's sign
    logged = [e for e in trainer.state.log_history if "loss_toy_aux" in e]
    assert len(logged) == 3 and all(e["loss_toy_aux"] >= 0 for e in logged)
    assert any(e["loss_toy_aux"] > 0 for e in logged)

    # the per-sample field: the bad record was dropped and counted; items carried their record's tags
    report = json.loads((out / "data_report.json").read_text())
    assert report["skipped"] == {"bad_tags": 1}
    seen = [tags for batch in toy_plugin.SEEN_TAGS for tags in batch]
    assert len(seen) == 6 and all(tags in kept_tags for tags in seen)

    # the model's loss is the LM loss plus the weighted auxiliary loss
    model = trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    batch.pop("data_events")
    with torch.no_grad():
        result = model(**batch)
        spliced = model.prepare_inputs_labels_for_multimodal(
            batch["input_ids"], None, batch["attention_mask"], None, batch["labels"], batch["images"],
            batch["modalities"], None, batch["instructions"], sample_fields=batch["sample_fields"])
    labels = spliced[5]
    lm = torch.nn.functional.cross_entropy(result.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert result.aux_losses["toy_aux"] > 0
    assert float(result.loss) == pytest.approx(float(lm + 0.5 * result.aux_losses["toy_aux"]), rel=1e-5)

    record = json.loads((out / "training_record.json").read_text())
    assert record["plugin_args"]["toy"] == {"toy_scale": 2.0, "toy_gate_lr": 0.05, "toy_aux_weight": 0.5}


def test_an_installed_plugin_leaves_other_models_alone(toy_plugin, tiny_dir, tmp_path_factory, tmp_path):
    """With the toy plugin installed, a run of a built-in projector writes none of its keys."""
    from llava.train.train import train

    data = make_synthetic_data(tmp_path_factory.mktemp("toydata_plain"))
    out = tmp_path / "plain"
    train(argv=[
        "--model_name_or_path", str(tiny_dir / "qwen2-tiny"), "--vision_tower", str(tiny_dir / "siglip-tiny"),
        "--version", "qwen_1_5", "--mm_projector_type", "mlp2x_gelu", "--mm_tunable_parts", "mm_mlp_adapter",
        "--data_path", str(data / "stage3.json"), "--image_folder", str(data), "--video_folder", str(data),
        "--num_frames", "2", "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "1",
        "--save_strategy", "no", "--report_to", "none", "--gradient_checkpointing", "False",
    ])
    config = json.loads((out / "config.json").read_text())
    assert not {"toy_scale", "plugin_flags", "aux_loss_weights"} & set(config)
    assert json.loads((out / "training_record.json").read_text())["plugin_args"] == {}


def test_a_plugin_argument_clashing_with_the_core_is_refused(toy_plugin):
    from dataclasses import make_dataclass

    from llava.train.arguments import parse_args

    clash = make_dataclass("Clash", [("learning_rate", float, 1.0)])
    registry.load_plugins()
    from llava.plugin import PLUGINS, Plugin

    bad = Plugin(name="toy_clash", training_args=clash)
    PLUGINS.register("toy_clash")(bad)
    try:
        with pytest.raises(ValueError, match="--learning_rate is already defined by the core"):
            parse_args(["--output_dir", "x"])
    finally:
        PLUGINS.unregister("toy_clash")


def test_unknown_tunable_part_lists_the_plugin_groups(toy_plugin):
    from llava.train.arguments import ModelArguments

    registry.load_plugins()
    with pytest.raises(ValueError, match="toy_gate"):
        ModelArguments(mm_tunable_parts="mm_mlp_adapter,nonsense")
    assert ModelArguments(mm_tunable_parts="toy_gate").mm_tunable_parts == "toy_gate"



def test_the_plugin_trains_under_zero3_on_two_ranks(tiny_dir, tmp_path_factory, tmp_path):
    """Two CPU ranks (gloo), ZeRO-3, one sample each: a rank whose sample is untagged returns a zero
    auxiliary loss, the same modules run on both, and the logged loss is gathered over ranks."""
    import os
    import subprocess

    from tests.helpers.training import REPO, free_port

    site = install_toy_plugin(tmp_path / "site")
    data = make_synthetic_data(tmp_path_factory.mktemp("toydata_ds"))
    annotations, _ = _tagged_data(data)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{REPO}", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [
        str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()),
        "llava/train/train_mem.py", "--deepspeed", "scripts/zero3.json",
        "--model_name_or_path", str(tiny_dir / "qwen2-tiny"), "--vision_tower", str(tiny_dir / "siglip-tiny"),
        "--version", "qwen_1_5", "--mm_projector_type", "toy", "--mm_tunable_parts", "mm_mlp_adapter,toy_gate",
        "--toy_gate_lr", "0.05", "--toy_aux_weight", "0.5", "--mm_vision_select_layer", "-2",
        "--mm_use_im_patch_token", "False", "--data_path", str(annotations), "--image_folder", str(data),
        "--video_folder", str(data), "--num_frames", "4", "--image_aspect_ratio", "pad", "--output_dir", str(out),
        "--max_steps", "3", "--per_device_train_batch_size", "1", "--logging_steps", "1", "--save_strategy", "no",
        "--report_to", "none", "--gradient_checkpointing", "False",
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [e["loss_toy_aux"] for e in history if "loss_toy_aux" in e]
    assert len(logged) == 3 and all(value >= 0 for value in logged) and any(value > 0 for value in logged)
    groups = {g["name"]: g["lr"] for g in json.loads((out / "optimizer_groups.json").read_text())}
    assert groups["toy_gate/decay"] == pytest.approx(0.05)


def test_a_projector_naming_an_undeclared_field_or_loss_is_refused(toy_plugin):
    from llava.plugin import aux_losses, declared_for, sample_fields

    class Reads:
        sample_fields, aux_losses = ("tags", "nonsense"), ("toy_aux",)

    with pytest.raises(ValueError, match=r"Reads.sample_fields names sample fields \['nonsense'\]"):
        declared_for(Reads(), "sample_fields", sample_fields(), "sample fields")
    assert [loss.weight_flag for loss in declared_for(Reads(), "aux_losses", aux_losses(), "losses")] == ["toy_aux_weight"]
