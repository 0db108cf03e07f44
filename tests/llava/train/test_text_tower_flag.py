"""``--text_tower`` points HICom's instruction encoder at its own SigLIP folder."""

from __future__ import annotations

import shutil

import pytest

from llava.train.arguments import parse_args
from llava.train.train import build_training_model


def argv(tiny_dir, out, text_tower):
    return ["--model_name_or_path", str(tiny_dir / "qwen2-tiny"), "--vision_tower", str(tiny_dir / "siglip-tiny"),
            "--mm_projector_type", "hicom", "--hicom_preset", "paper", "--mm_use_im_patch_token", "False",
            "--output_dir", str(out), "--report_to", "none", "--text_tower", str(text_tower)]


def test_text_tower_folder_is_used(tiny_dir, tmp_path):
    copy = shutil.copytree(tiny_dir / "siglip-tiny", tmp_path / "text-siglip")
    model, _ = build_training_model(*parse_args(argv(tiny_dir, tmp_path / "o", copy)))
    encoder = model.get_model().mm_projector.text_encoder
    assert encoder.folder == str(copy) and model.config.mm_text_tower == str(copy)
    assert encoder.tokenizer.name_or_path == str(copy)


def test_missing_text_tower_folder_is_named(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-text-tower"):
        build_training_model(*parse_args(argv(tiny_dir, tmp_path / "o", tmp_path / "no-such-text-tower")))
