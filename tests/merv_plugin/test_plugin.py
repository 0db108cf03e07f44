"""The plugin's declarations: flags -> ``merv_config``, the ``merv_mixer`` group, the model card."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llava.model.multimodal_encoder.builder import list_vision_towers
from llava.model.multimodal_projector.builder import list_projectors
from llava.plugin import PLUGINS, param_groups
from merv_plugin.plugin import config_from_args, model_card


def flags(grid=None, fusion=None, query_dim=None):
    return SimpleNamespace(merv_grid=grid, merv_fusion=fusion, merv_query_dim=query_dim)


def test_everything_registers_through_the_entry_point():
    assert "merv" in PLUGINS and "merv" in list_projectors() and "merv" in list_vision_towers()
    assert param_groups()["merv_mixer"].lr_flag == "merv_mixer_lr"


def test_flags_become_merv_config():
    assert config_from_args(flags(), None, None) == {}  # nothing given: other projectors' configs stay clean
    assert config_from_args(flags("frame,4,4", "concat"), None, None) == {
        "merv_config": {"grid": [None, 4, 4], "fusion": "concat", "query_dim": 3072}}
    with pytest.raises(ValueError, match="fusion='sum'"):
        config_from_args(flags(fusion="sum"), None, None)


def test_model_card_lists_every_encoder(merv_llava):
    _, _, model, _ = merv_llava
    card = "\n".join(model_card(model.config))
    for row in ("| 0 | languagebind | clip_frames | CLIPVisionModel | 32 | 16 px | 1 |",
                "| 1 | dinov2 | dinov2 | Dinov2WithRegistersModel | 24 | 28 px | 1 |",
                "| 2 | vivit | vivit | VivitModel | 16 | 24 px | 2 |",
                "| 3 | siglip | siglip | SiglipVisionModel | 32 | 20 px | 1 |"):
        assert row in card
    assert model_card(SimpleNamespace()) == []
    parts = model.get_model().mm_projector.tunable_parts()
    assert {id(p) for p in parts["merv_mixer"]} == {id(p) for p in model.get_model().mm_projector.mixer.parameters()}
