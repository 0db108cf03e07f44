"""The reducers on the tiny LLaVA-OneVision checkpoint: selected through ``config.json``'s keys, in both
lmms-eval layouts (``llava_onevision``: bilinear pooling + one trailing newline; ``llava_vid``: average
pooling + a newline per row), counted the same way they are spliced."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from llava.model.builder import assemble_llava_qwen, load_pretrained_model
from reducers_plugin.plugin import REDUCERS

FRAMES = 6
LAYOUTS = {
    "onevision": {"mm_spatial_pool_mode": "bilinear", "mm_newline_position": "one_token"},
    "llava_video": {"mm_spatial_pool_mode": "average", "mm_newline_position": "grid"},
}
SETTINGS = {  # a budget the tiny video (6 frames of 16 or 9 tokens) can meet, per reducer
    "pool2d": {"budget": 20}, "pool3d": {"budget": 20}, "frame_subsample": {"budget": 40},
    "random_drop": {"budget": 20}, "tome": {"budget": 20}, "vidcom2": {"budget": 20},
    "dycoke_ttm": {"merging_ratio": 0.5}, "visionzip": {"budget": 20},
    "fastvid": {"budget": 24}, "prunevid": {"budget": 20},
}


@pytest.fixture(scope="module")
def loaded(tiny_dir, tmp_path_factory):
    """The tiny checkpoint with OneVision's newline parameter (``spatial_unpad``), and its folder."""
    folder = tmp_path_factory.mktemp("reducers-tiny")
    assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", folder, seed=0)
    tokenizer, model, _, _ = load_pretrained_model(str(folder), None, "x", device_map="cpu", torch_dtype="float32")
    model.config.mm_patch_merge_type = "spatial_unpad"
    torch.manual_seed(0)
    model.get_model().image_newline = nn.Parameter(torch.randn(model.config.hidden_size))
    return tokenizer, model, folder


def _pixels(model) -> torch.Tensor:
    side = model.get_vision_tower().config.image_size
    return torch.randn(FRAMES, 3, side, side, generator=torch.Generator().manual_seed(5))


def test_every_registered_reducer_is_covered():
    assert set(REDUCERS) == set(SETTINGS) | {"fastv", "dycoke_kv"}  # in-LLM stages: test_fastv, test_dycoke_kv


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(SETTINGS))
@torch.no_grad()
def test_spliced_tokens_match_the_announced_count_in_both_layouts(loaded, name, layout):
    _, model, _ = loaded
    for key, value in LAYOUTS[layout].items():
        setattr(model.config, key, value)
    plain = model.num_visual_tokens(FRAMES, "video")
    assert plain == {"onevision": FRAMES * 16 + 1, "llava_video": FRAMES * 3 * 4}[layout]
    reducer = model.get_model().set_token_reducer(name, SETTINGS[name])
    try:
        tokens = model.encode_visual_items([_pixels(model)], ["video"])[0]
        announced = model.num_visual_tokens(FRAMES, "video")
    finally:
        model.get_model().set_token_reducer(None)
    assert tokens.shape[0] == announced < plain
    per_frame = 16 if layout == "onevision" else 9
    assert announced - 1 == reducer.count(FRAMES, per_frame)  # one newline, whichever the layout
    torch.testing.assert_close(tokens[-1], model.get_model().image_newline)


@torch.no_grad()
def test_reducer_selected_in_config_json_is_loaded_and_generates(loaded, tmp_path):
    """What lmms-eval's stock ``llava_onevision`` wrapper does: ``load_pretrained_model`` on a folder whose
    ``config.json`` names the reducer."""
    tokenizer, model, folder = loaded
    for key, value in LAYOUTS["onevision"].items():
        setattr(model.config, key, value)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(mm_token_reducer="fastv", mm_token_reducer_config={"layer": 1, "prune_ratio": 0.75})
    (tmp_path / "config.json").write_text(json.dumps(config))
    _, again, _, _ = load_pretrained_model(str(tmp_path), None, "x", device_map="cpu", torch_dtype="float32")
    reducer = again.get_model().get_token_reducer()
    assert type(reducer).__name__ == "FastV" and reducer.options() == {"layer": 1, "prune_ratio": 0.75,
                                                                         "budget": None}
    ids = tokenizer("<|im_start|>user\n", return_tensors="pt").input_ids
    ids = torch.cat([ids, torch.tensor([[-200]]), tokenizer("\nWhat?<|im_end|>\n", return_tensors="pt").input_ids], 1)
    kwargs = dict(images=[_pixels(model)], modalities=["video"], max_new_tokens=3, do_sample=False,
                  eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    pruned = again.generate(ids, **kwargs)
    again.get_model().set_token_reducer("fastv", {"layer": 1, "prune_ratio": 0.0})
    assert torch.equal(again.generate(ids, **kwargs), model.generate(ids, **kwargs))  # ratio 0 = no reducer
    assert pruned.shape == (1, 3)
