"""HIComConfig: validation, presets, serialisation, token counts and the release name grammar."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from hicom_plugin import PRESETS, HIComConfig, parse_release_projector_type, resolve_hicom_config
from hicom_plugin.config import num_attention_heads


def test_defaults_are_the_paper_preset():
    assert HIComConfig() == PRESETS["paper"]


def test_paper_preset_fields():
    cfg = PRESETS["paper"]
    assert cfg.local_kernel == (4, 3, 3) and cfg.num_global_queries == 32
    assert (cfg.local_injection, cfg.global_injection) == ("direct", "coarse")
    assert (cfg.coarse_formula, cfg.fine_formula) == ("paper", "paper")
    assert (cfg.pos_emb, cfg.pos_emb_on_values) == ("split", False)
    assert (cfg.query_pool, cfg.group_scheme) == ("mean", "pad")
    assert cfg.direct_mlp and cfg.fine_pad_mask and not cfg.dense_keys
    assert not (cfg.adapt_q or cfg.adapt_k or cfg.adapt_v or cfg.adapt_g or cfg.global_adapt_g)
    assert cfg.max_num_frames == 128 and not cfg.return_attention


def test_release_preset_fields():
    cfg = PRESETS["release"]
    assert cfg.local_kernel == (4, 3, 3) and cfg.num_global_queries == 32
    # The release's `_coarse` suffix is never parsed: both branches run direct injection.
    assert (cfg.local_injection, cfg.global_injection) == ("direct", "direct")
    assert (cfg.coarse_formula, cfg.fine_formula) == ("release", "release")
    assert (cfg.pos_emb, cfg.pos_emb_on_values) == ("sum", True)
    assert (cfg.query_pool, cfg.group_scheme) == ("trilinear", "overlap")
    assert cfg.dense_keys and not cfg.direct_mlp and not cfg.fine_pad_mask
    assert cfg.needs_dense_embeds and cfg.needs_text_pooled and not cfg.needs_text_tokens
    assert parse_release_projector_type("local43_global32_coarse", "direct") == cfg


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dict_round_trip_through_json(name):
    cfg = PRESETS[name].replace(local_kernel=(2, 5, 7), return_attention=True)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["local_kernel"] == [2, 5, 7]
    back = HIComConfig.from_dict(data)
    assert back == cfg and isinstance(back.local_kernel, tuple)


def test_dict_round_trip_without_local_branch():
    cfg = HIComConfig(local_kernel=None, local_injection="none")
    assert HIComConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.num_output_tokens(32, 27, 27) == 32


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys.*'kernel'"):
        HIComConfig.from_dict({"kernel": [4, 3, 3]})
    with pytest.raises(ValueError, match="unknown fields"):
        HIComConfig().replace(use_guide="direct")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["paper"].local_injection = "fine"


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"local_kernel": (0, 3, 3)}, "alpha_T"),
        ({"local_kernel": (4, 3, -1)}, "alpha_W"),
        ({"local_kernel": (4, 3)}, "local_kernel"),
        ({"local_kernel": (4.0, 3, 3)}, "alpha_T"),
        ({"local_kernel": (True, 3, 3)}, "alpha_T"),
        ({"local_injection": "adaln"}, "local_injection"),
        ({"global_injection": "off"}, "global_injection"),
        ({"coarse_formula": "dit"}, "coarse_formula"),
        ({"fine_formula": "x"}, "fine_formula"),
        ({"pos_emb": "concat"}, "pos_emb"),
        ({"query_pool": "max"}, "query_pool"),
        ({"group_scheme": "replicate"}, "group_scheme"),
        ({"num_global_queries": -1}, "num_global_queries"),
        ({"attn_head_dim": 0}, "attn_head_dim"),
        ({"max_num_frames": 0}, "max_num_frames"),
        ({"fine_pad_mask": 1}, "fine_pad_mask"),
        ({"local_kernel": None, "num_global_queries": 0, "local_injection": "none",
          "global_injection": "none"}, "no branch"),
        ({"local_kernel": None}, "local_injection"),
        ({"num_global_queries": 0}, "global_injection"),
        ({"adapt_q": True}, "adapt_q"),  # paper preset: local direct
        ({"local_injection": "none", "adapt_g": True}, "adapt_g"),
        ({"global_injection": "none", "global_adapt_g": True}, "global_adapt_g"),
        ({"local_kernel": None, "local_injection": "none", "adapt_k": True}, "adapt_k"),
    ],
)
def test_bad_configs_raise_and_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        PRESETS["paper"].replace(**changes)


def test_kernel_list_becomes_tuple():
    assert HIComConfig(local_kernel=[1, 2, 2]).local_kernel == (1, 2, 2)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("scheme", ["pad", "overlap"])
def test_siglip_token_counts(preset, scheme):
    cfg = PRESETS[preset].replace(group_scheme=scheme)
    assert cfg.num_output_tokens(32, 27, 27) == 680
    assert cfg.num_output_tokens(64, 27, 27) == 1328
    assert cfg.num_output_tokens(128, 27, 27) == 2624
    assert cfg.num_output_tokens(1, 27, 27, "image") == 113
    assert cfg.num_output_tokens(1, 27, 27, "video") == 113  # one frame: alpha_T = 1
    assert cfg.num_output_tokens(30, 27, 27) == 8 * 81 + 32
    assert cfg.num_output_tokens(4, 27, 27, "image") == 4 * 81 + 32  # images never pool time


def test_token_count_rejects_bad_sizes():
    with pytest.raises(ValueError, match="t=0"):
        HIComConfig().num_output_tokens(0, 27, 27)
    with pytest.raises(ValueError, match="unknown modality"):
        HIComConfig().num_output_tokens(1, 27, 27, "audio")


@pytest.mark.parametrize("dim, head_dim, heads", [(1152, 128, 9), (768, 128, 6), (1000, 128, 5),
                                                   (32, 128, 1), (48, 8, 6), (30, 8, 3)])
def test_num_attention_heads(dim, head_dim, heads):
    assert num_attention_heads(dim, head_dim) == heads


# ---- the release grammar -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, use_guide, expected",
    [
        ("local43_global32", None, dict(local_kernel=(4, 3, 3), num_global_queries=32,
                                        local_injection="none", global_injection="none")),
        ("local43_global32", "off", dict(local_injection="none", global_injection="none")),
        ("local43_global32", "direct", dict(local_injection="direct", global_injection="direct")),
        ("local43_global32", "fine", dict(local_injection="fine", global_injection="fine")),
        ("local43_global32_coarse", "direct", dict(local_injection="direct", global_injection="direct")),
        ("local43_global32guidecoarse", "direct", dict(local_injection="direct", global_injection="coarse")),
        ("local43guidefine_global32", "coarse", dict(local_injection="fine", global_injection="coarse")),
        ("local43_global32guideoff", "direct", dict(global_injection="none")),
        ("local43_adaptkv_global32", None, dict(adapt_k=True, adapt_v=True, adapt_q=False, adapt_g=False)),
        ("local43_adaptkv_global32_coarse", "direct", dict(adapt_k=True, adapt_v=True,
                                                           global_injection="direct")),
        ("local43_adaptqkv_global32", "coarse", dict(adapt_q=True, adapt_k=True, adapt_v=True)),
        ("local43_adaptg_global32adaptg", "coarse", dict(adapt_g=True, global_adapt_g=True)),
        ("local43_global32adaptg", "direct", dict(adapt_g=False, global_adapt_g=True)),
        ("local43_adaptkvguidecoarse_global32", "direct", dict(adapt_k=True, local_injection="coarse")),
        ("local413_global32", None, dict(local_kernel=(4, 13, 13))),
        ("local12_global64", None, dict(local_kernel=(1, 2, 2), num_global_queries=64)),
        ("global32_local43", None, dict(local_kernel=(4, 3, 3), num_global_queries=32)),
        ("local43", "direct", dict(num_global_queries=0, global_injection="none", local_injection="direct")),
        ("global16", "coarse", dict(local_kernel=None, local_injection="none", num_global_queries=16,
                                    global_injection="coarse")),
        # The release drops these silently; the parser drops them with a warning.
        ("local43_adaptq_global32", "direct", dict(adapt_q=False)),
        ("local43_adaptg_global32adaptg", None, dict(adapt_g=False, global_adapt_g=False)),
    ],
)
def test_release_grammar(text, use_guide, expected):
    cfg = parse_release_projector_type(text, use_guide)
    for name, value in expected.items():
        assert getattr(cfg, name) == value, name
    # Release strings get the release's formulas and options.
    release = PRESETS["release"]
    for name in ("coarse_formula", "fine_formula", "fine_pad_mask", "pos_emb", "pos_emb_on_values",
                 "query_pool", "group_scheme", "dense_keys", "direct_mlp"):
        assert getattr(cfg, name) == getattr(release, name), name


def test_ignored_suffix_is_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="hicom_plugin.config"):
        parse_release_projector_type("local43_global32_coarse", "direct")
    assert "ignored" in caplog.text and "coarse" in caplog.text


@pytest.mark.parametrize(
    "text, reason",
    [
        ("mlp2x_gelu", "token-wise"),
        ("linear", "token-wise"),
        ("", "no 'local' or 'global'"),
        ("resampler32", "before the first phase"),
        ("local4_global32", "2 or 3 digits"),
        ("local4333_global32", "2 or 3 digits"),
        ("local_global32", "2 or 3 digits"),
        ("local40_global32", "below 1"),
        ("local43_global", "number of queries"),
        ("local43_global0", "number of queries"),
        ("local43_global32_global16", "twice"),
        ("local43_adaptx_global32", "allowed letters"),
        ("local43_adaptkk_global32", "allowed letters"),
        ("local43_global32adaptkv", "allowed letters"),
        ("local43_adaptk_adaptv_global32", "two 'adapt'"),
        ("local43guidebad_global32", "unknown injection"),
        ("local43_pool_global32", "unknown fragment"),
        ("local43__global32", "cannot read"),
        ("local43-global32", "cannot read"),
    ],
)
def test_release_grammar_errors(text, reason):
    with pytest.raises(ValueError, match=reason) as err:
        parse_release_projector_type(text, "direct")
    assert "Expected" in str(err.value)


def test_release_grammar_rejects_bad_use_guide():
    with pytest.raises(ValueError, match="use_guide='adaln'"):
        parse_release_projector_type("local43_global32", "adaln")


def test_resolve_hicom_config():
    assert resolve_hicom_config("paper") == PRESETS["paper"]
    assert resolve_hicom_config("release", group_scheme="pad").group_scheme == "pad"
    cfg = resolve_hicom_config("local43_global32guidecoarse", use_guide="direct", return_attention=True)
    assert (cfg.local_injection, cfg.global_injection, cfg.return_attention) == ("direct", "coarse", True)
    with pytest.raises(ValueError, match="only applies to release strings"):
        resolve_hicom_config("paper", use_guide="direct")
    with pytest.raises(ValueError, match="Presets: \\['paper', 'release'\\]"):
        resolve_hicom_config("papper")
    with pytest.raises(ValueError, match="local_injection"):
        resolve_hicom_config("paper", local_injection="strong")
