"""Architecture details: newline placement, truncation, DPO output, stage-1 adapter loading, legacy rope keys."""

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model import LlavaQwenConfig
from llava.model.builder import load_pretrained_model

FRAMES, PER_FRAME = 4, 9  # tiny 7x7 grid, 2x2 average pooling -> 3x3


@pytest.fixture()
def model(tiny_dir):
    _, model, _, _ = load_pretrained_model(str(tiny_dir / "tiny-llava-qwen"), None, "x", device_map="cpu",
                                           torch_dtype="float32")
    return model


def _video():
    torch.manual_seed(0)
    return torch.randn(FRAMES, 3, 56, 56)


@pytest.mark.parametrize(
    "position, expected",
    [("no_token", FRAMES * PER_FRAME), ("one_token", FRAMES * PER_FRAME + 1),
     ("frame", FRAMES * (PER_FRAME + 1)), ("grid", FRAMES * 3 * (3 + 1))],
)
def test_newline_positions(model, position, expected):
    hidden = model.config.hidden_size
    model.get_model().image_newline = nn.Parameter(torch.full((hidden,), 7.0))
    model.config.mm_patch_merge_type = "spatial_unpad"
    model.config.mm_newline_position = position
    with torch.no_grad():
        tokens = model.encode_visual_items([_video()], ["video"])[0]
    assert tokens.shape == (expected, hidden)
    newline_rows = (tokens == 7.0).all(-1).nonzero().flatten().tolist()
    if position == "grid":
        assert newline_rows == [4 * r + 3 for r in range(FRAMES * 3)]  # after every row of 3 tokens
    elif position == "frame":
        assert newline_rows == [10 * f + 9 for f in range(FRAMES)]
    elif position == "one_token":
        assert newline_rows == [expected - 1]
    else:
        assert newline_rows == []
    model.config.mm_patch_merge_type = "flat"  # flat merge never adds newlines
    with torch.no_grad():
        assert model.encode_visual_items([_video()], ["video"])[0].shape[0] == FRAMES * PER_FRAME


def test_truncation_after_splicing_is_logged(model, caplog):
    ids = torch.tensor([[5, IMAGE_TOKEN_INDEX, 6, 7, 8]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 6, 7, 8]])
    model.config.tokenizer_model_max_length = FRAMES * PER_FRAME + 2  # keeps label 6 only
    with caplog.at_level(logging.WARNING):
        _, _, _, _, embeds, new_labels = model.prepare_inputs_labels_for_multimodal(
            ids, None, None, None, labels, [_video()], ["video"])
    assert embeds.shape[1] == FRAMES * PER_FRAME + 2
    assert new_labels[0, -1].item() == 6
    assert "drops 2 supervised tokens" in caplog.text


def test_dpo_forward_returns_logits_and_labels(model):
    ids = torch.tensor([[5, IMAGE_TOKEN_INDEX, 6, 7]])
    with torch.no_grad():
        logits, labels = model(input_ids=ids, labels=ids.clamp(min=0), images=[_video()], modalities=["video"],
                               dpo_forward=True)
        reference = model(input_ids=ids, images=[_video()], modalities=["video"]).logits
    torch.testing.assert_close(logits, reference)
    assert labels.shape == logits.shape[:2] and (labels[0, 1 : 1 + FRAMES * PER_FRAME] == IGNORE_INDEX).all()


def test_pretrain_adapter_is_loaded_by_initialize_vision_modules(model, tiny_dir, tmp_path):
    projector = model.get_model().mm_projector
    state = {f"model.mm_projector.{k}": torch.full_like(v, 0.5) for k, v in projector.state_dict().items()}
    torch.save(state, tmp_path / "mm_projector.bin")
    args = SimpleNamespace(vision_tower=str(tiny_dir / "siglip-tiny"), mm_projector_type="mlp2x_gelu",
                           mm_vision_select_layer=-2, mm_patch_merge_type="flat",
                           pretrain_mm_mlp_adapter=str(tmp_path / "mm_projector.bin"))
    model.get_model().initialize_vision_modules(args)
    assert all((p == 0.5).all() for p in projector.parameters())
    torch.save({"model.mm_projector.0.weight": torch.zeros(1)}, tmp_path / "shape.bin")
    args.pretrain_mm_mlp_adapter = str(tmp_path / "shape.bin")
    with pytest.raises(ValueError, match=r"shape.bin: projector shape mismatch for \['0.weight \(1,\)"):
        model.get_model().initialize_vision_modules(args)
    torch.save({"model.mm_projector.0.weight": state["model.mm_projector.0.weight"]}, tmp_path / "partial.bin")
    args.pretrain_mm_mlp_adapter = str(tmp_path / "partial.bin")
    with pytest.raises(KeyError, match=r"partial.bin: projector keys do not match; missing \['0.bias'"):
        model.get_model().initialize_vision_modules(args)


def test_vision_tokenizer_tokens_are_added_only_when_asked(model, tiny_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "tiny-llava-qwen")
    rows = model.get_input_embeddings().weight.shape[0]
    model.initialize_vision_tokenizer(SimpleNamespace(mm_use_im_patch_token=False, mm_use_im_start_end=False), tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == rows  # never shrinks the padded vocabulary
    before = len(tokenizer)
    model.initialize_vision_tokenizer(SimpleNamespace(mm_use_im_patch_token=True, mm_use_im_start_end=True), tokenizer)
    assert len(tokenizer) == before + 3
    assert model.get_input_embeddings().weight.shape[0] == max(rows, len(tokenizer))


def test_legacy_rope_keys_for_scaled_rope(tmp_path):
    config = LlavaQwenConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             vocab_size=10, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6})
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["rope_theta"] == 1e6
    assert saved["rope_scaling"]["type"] == "linear" and saved["rope_scaling"]["factor"] == 2.0
    assert LlavaQwenConfig.from_pretrained(tmp_path).rope_parameters == config.rope_parameters


def test_a_tokenwise_model_recovers_instructions_as_written(model):
    from transformers import AutoTokenizer

    from llava.mm_utils import tokenizer_image_token

    tokenizer = AutoTokenizer.from_pretrained(model.config._name_or_path)
    model.set_instruction_tokenizer(tokenizer)
    ids = tokenizer_image_token("<image>\n  What moves?  <|im_end|>", tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
    assert model.recover_instructions(ids[None], None) == ["What moves?"]
