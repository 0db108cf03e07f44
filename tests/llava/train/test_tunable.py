"""Tunable parts and optimizer groups are decided by module, for LLaVA's parts and HICom's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llava.train.arguments import parse_args
from llava.train.train import build_training_model
from llava.train.tunable import adapter_only, apply_tunable_parts, model_parts, parameter_groups


@pytest.fixture(scope="module")
def hicom_model(tiny_dir, tmp_path_factory):
    argv = ["--model_name_or_path", str(tiny_dir / "qwen2-tiny"), "--vision_tower", str(tiny_dir / "siglip-tiny"),
            "--mm_projector_type", "hicom", "--hicom_preset", "paper", "--mm_vision_select_layer", "-2",
            "--mm_use_im_patch_token", "False", "--output_dir", str(tmp_path_factory.mktemp("o")),
            "--report_to", "none", "--mm_tunable_parts", "mm_projector"]
    model_args, data_args, training_args = parse_args(argv)
    model, _ = build_training_model(model_args, data_args, training_args)
    return model, model_args, training_args


def ids(params):
    return {id(p) for p in params}


def test_parts_partition_the_model_by_module(hicom_model):
    model, *_ = hicom_model
    parts = model_parts(model)
    projector = model.get_model().mm_projector
    assert ids(parts["guide_injector"]) == ids(projector.compressor.injector_parameters()) != set()
    assert ids(parts["guide_injector"]) <= ids(parts["mm_mlp_adapter"])
    assert ids(parts["text_tower"]) == ids(projector.text_encoder.parameters())
    assert not ids(parts["text_tower"]) & ids(parts["mm_mlp_adapter"])  # standalone
    assert ids(parts["mm_vision_tower"]) == ids(model.get_vision_tower().parameters())
    everything = ids(model.parameters())
    covered = ids(parts["mm_language_model"]) | ids(parts["mm_mlp_adapter"]) | ids(parts["text_tower"]) | ids(
        parts["mm_vision_tower"])
    assert covered == everything
    assert ids(model.lm_head.parameters()) <= ids(parts["mm_language_model"])


def test_release_alias_unfreezes_the_adapter_only(hicom_model):
    model, model_args, _ = hicom_model
    assert model_args.mm_tunable_parts == "mm_mlp_adapter"  # 'mm_projector' is the release's name
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == ids(model_parts(model)["mm_mlp_adapter"])


def test_groups_take_each_parts_learning_rate(hicom_model):
    model, *_ = hicom_model
    apply_tunable_parts(model, ["mm_mlp_adapter", "text_tower_head", "mm_language_model"])
    args = SimpleNamespace(learning_rate=1e-5, weight_decay=0.1, mm_projector_lr=1e-4, guide_injector_lr=1e-3,
                           mm_vision_tower_lr=2e-6)
    groups = parameter_groups(model, args, {n for n, _ in model.named_parameters() if not n.endswith("bias")})
    by_part = {}
    for group in groups:
        by_part.setdefault(group["name"].split("/")[0], set()).update(ids(group["params"]))
        assert group["lr"] == {"guide_injector": 1e-3, "mm_mlp_adapter": 1e-4, "text_tower": 2e-6,
                               "base": 1e-5}[group["name"].split("/")[0]]
    parts = model_parts(model)
    assert by_part["guide_injector"] == ids(parts["guide_injector"])
    assert by_part["text_tower"] == ids(parts["text_tower_head"])  # only the head is trainable
    assert by_part["mm_mlp_adapter"] == ids(parts["mm_mlp_adapter"]) - ids(parts["guide_injector"])
    assert by_part["base"] == ids(parts["mm_language_model"])
    decay = [g for g in groups if g["name"].endswith("/decay")]
    assert decay and all(g["weight_decay"] == 0.1 for g in decay)


def test_a_shared_lr_flag_warns_only_when_it_sets_nothing(hicom_model, caplog):
    """``--mm_vision_tower_lr`` sets the vision tower's and the text tower's LR: training one of them is
    enough; training neither is worth one warning naming both."""
    model, *_ = hicom_model
    args = SimpleNamespace(learning_rate=1e-5, weight_decay=0.0, mm_projector_lr=None, guide_injector_lr=None,
                           mm_vision_tower_lr=2e-6)
    apply_tunable_parts(model, ["mm_mlp_adapter", "text_tower_head"])
    with caplog.at_level("WARNING", logger="llava.train.tunable"):
        parameter_groups(model, args, set())
    assert "applies to no trainable parameter" not in caplog.text
    apply_tunable_parts(model, ["mm_mlp_adapter"])
    with caplog.at_level("WARNING", logger="llava.train.tunable"):
        parameter_groups(model, args, set())
    warned = [r.getMessage() for r in caplog.records if "applies to no trainable parameter" in r.getMessage()]
    assert len(warned) == 1 and "mm_vision_tower" in warned[0] and "text_tower" in warned[0]
    apply_tunable_parts(model, ["mm_mlp_adapter"])


def test_unknown_part_is_an_error(hicom_model):
    model, *_ = hicom_model
    with pytest.raises(ValueError, match="no such part"):
        apply_tunable_parts(model, ["mm_resampler_of_dreams"])
    with pytest.raises(ValueError, match="unknown parts"):
        parse_args(["--output_dir", "x", "--mm_tunable_parts", "mm_mlp_adapter,wings"])


@pytest.mark.parametrize("parts, expected", [
    ("mm_mlp_adapter", True), ("mm_mlp_adapter,guide_injector", True), ("mm_mlp_adapter,mm_language_model", False),
])
def test_adapter_only_saves(parts, expected):
    model_args = SimpleNamespace(mm_tunable_parts=parts, tune_mm_mlp_adapter=False)
    assert adapter_only(model_args, SimpleNamespace(lora_enable=False)) is expected
