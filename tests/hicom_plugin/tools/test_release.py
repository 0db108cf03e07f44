"""Release checkpoints (lntzm/HICom layout): names, strict conversion, mm_projector.bin, stage-3 import.

The synthetic release files are written from our own tiny models through ``ours_to_release``; the
table test pins the documented release names, so together they check both the names and the import.
"""

import json
import re
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from hicom_plugin.compressor import HIComCompressor
from hicom_plugin.config import PRESETS, parse_release_projector_type
from hicom_plugin.projector import HIComProjector
from hicom_plugin.tools.release import (
    BRANCH_ROWS,
    INJECTOR_ROWS,
    OURS_COMPRESSOR,
    ReleaseLayoutError,
    convert_release_config,
    convert_release_state_dict,
    import_release_checkpoint,
    load_release_projector,
    main,
    ours_to_release,
    release_to_ours,
)
from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import conv_templates
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import assemble_llava_qwen, load_pretrained_model
from llava.model.multimodal_projector.builder import list_projectors
from llava.model.weights import read_state_dict

GUIDED = ("local43_adaptkv_global32guidecoarse", "direct")  # local direct + k/v adapters, global coarse
FINE = ("local43_adaptqgguidefine_global32adaptgguidefine", "direct")  # fine on both, q/g adapters
QUESTION = "describe the red triangle"
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")
VISION = "model.vision_tower.vision_tower.vision_model."


def _perturb(compressor, seed=1):
    """Moves every compressor tensor off its init (gates to 0.3) so that every one changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in compressor.named_parameters():
            if name.endswith("alpha"):
                param.fill_(0.3)
            else:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


def _build(tiny_dir, out, projector_type, use_guide):
    assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", out,
                        mm_projector_type=projector_type, use_guide=use_guide)
    tokenizer, model, _, _ = load_pretrained_model(str(out), None, "x", device_map="cpu", torch_dtype="float32")
    _perturb(model.get_model().mm_projector.compressor)
    return tokenizer, model


def _release_state(model):
    """Our model's tensors under the release names, as HF would save them (a tied head only once)."""
    tied = model.config.tie_word_embeddings
    return {
        ours_to_release(k): v.clone() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")
    }


def _release_config(tiny_dir, projector_type, use_guide):
    raw = json.loads((tiny_dir / "qwen2-tiny" / "config.json").read_text())
    raw.update(
        model_type="hicom_qwen2", architectures=["HIComQwen2ForCausalLM"], mm_projector_type=projector_type,
        use_guide=use_guide, mm_vision_tower="playground/models/siglip-so400m-patch14-384", mm_hidden_size=32,
        mm_vision_select_layer=-2, mm_vision_select_feature="patch", mm_patch_merge_type="spatial_unpad",
        mm_newline_position="no_token", image_aspect_ratio="pad", num_frames=32, max_num_frames=128,
        use_clip_scale="", delay_load=False, tokenizer_padding_side="right",
    )
    return raw


def _write_release(folder, built, state, config, weights="shards"):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    for name in SIDE_FILES:
        shutil.copy(built / name, folder / name)
    if weights == "bin":
        torch.save(state, folder / "pytorch_model.bin")
        return folder
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, names in shards.items():
        save_file({k: state[k].contiguous() for k in names}, str(folder / name), metadata={"format": "pt"})
    weight_map = {k: name for name, names in shards.items() for k in names}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def _logits(tokenizer, model, video):
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{QUESTION}")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]
    with torch.no_grad():
        return model(input_ids=ids, images=[video], modalities=["video"], instructions=[QUESTION]).logits


@pytest.fixture(scope="module")
def video():
    torch.manual_seed(0)
    return torch.randn(8, 3, 56, 56)


@pytest.fixture(scope="module")
def guided(tiny_dir, tmp_path_factory):
    built = tmp_path_factory.mktemp("release") / "ours"
    tokenizer, model = _build(tiny_dir, built, *GUIDED)
    return tokenizer, model, built


# ---------------------------------------------------------------------------------- names

R, O = "model.mm_projector.", OURS_COMPRESSOR
DOCUMENTED = [  # (release name, our name), from the authors' names and our modules
    (R + "local_compressor.readout.0.weight", O + "local_compressor.readout.0.weight"),
    (R + "local_compressor.q_proj.weight", O + "local_compressor.q_adapter.proj.weight"),
    (R + "local_compressor.q_norm.bias", O + "local_compressor.q_adapter.norm.bias"),
    (R + "local_compressor.k_proj.2.bias", O + "local_compressor.k_adapter.proj.2.bias"),
    (R + "local_compressor.k_alpha", O + "local_compressor.k_adapter.alpha"),
    (R + "local_compressor.v_norm.weight", O + "local_compressor.v_adapter.norm.weight"),
    (R + "local_compressor.guide_injector.guide_alpha", O + "local_compressor.injector.guide_adapter.alpha"),
    (R + "local_compressor.guide_injector.fine_proj.out_proj.bias",
     O + "local_compressor.injector.fine_attn.out_proj.bias"),
    (R + "local_compressor.guide_injector.fine_norm.weight", O + "local_compressor.injector.fine_norm.weight"),
    (R + "global_compressor.query", O + "global_compressor.query"),
    (R + "global_compressor.attn_layer.k_proj.weight", O + "global_compressor.attn.k_proj.weight"),
    (R + "global_compressor.readout.2.bias", O + "global_compressor.readout.2.bias"),
    (R + "global_compressor.guide_injector.text2qk_proj.0.weight", O + "global_compressor.injector.text_proj.0.weight"),
    (R + "global_compressor.guide_injector.guide_proj.2.weight",
     O + "global_compressor.injector.guide_adapter.proj.2.weight"),
    (R + "global_compressor.guide_injector.guide_norm.bias", O + "global_compressor.injector.guide_adapter.norm.bias"),
    (R + "global_compressor.guide_injector.coarse_proj.0.weight",
     O + "global_compressor.injector.coarse_proj.0.weight"),
    (R + "global_compressor.guide_injector.coarse_norm.weight", O + "global_compressor.injector.coarse_norm.weight"),
    ("model.vision_tower.guide_encoder.text_model.encoder.layers.0.mlp.fc1.weight",
     "model.mm_projector.text_encoder.text_model.encoder.layers.0.mlp.fc1.weight"),
    (VISION + "head.probe", VISION + "head.probe"),
    ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight"),
    ("model.embed_tokens.weight", "model.embed_tokens.weight"),
    ("lm_head.weight", "lm_head.weight"),
]


@pytest.mark.parametrize("release,ours", DOCUMENTED, ids=[r.split(".", 2)[-1] for r, _ in DOCUMENTED])
def test_documented_names_map_both_ways(release, ours):
    assert release_to_ours(release) == ours
    assert ours_to_release(ours) == release


def test_names_outside_the_tables_have_no_counterpart():
    for key in (
        R + "local_logit_scale",  # use_clip_scale, not implemented here
        R + "global_compressor.k_proj.weight",  # adapters exist in the local branch only
        R + "local_compressor.attn_layer.q_proj.weight",
        R + "local_compressor.guide_injector.q_proj.weight",
        R + "compressor.local_compressor.readout.0.weight",  # our own layout is not a release's
        "model.vision_tower.guide_encoder.logit_scale",
    ):
        assert release_to_ours(key) is None, key
    assert ours_to_release("model.mm_projector.text_encoder.extra") is None


COVERING = [  # together: every submodule of both branches, text projection included (text width 48 != 32)
    dict(local_injection="direct", global_injection="direct", adapt_k=True, adapt_v=True, adapt_g=True,
         global_adapt_g=True, direct_mlp=True),
    dict(local_injection="coarse", global_injection="coarse", adapt_q=True),
    dict(local_injection="fine", global_injection="fine", adapt_q=True, adapt_g=True, global_adapt_g=True),
]


def test_every_compressor_parameter_has_a_release_name_and_every_row_is_used():
    ours_names = []
    for fields in COVERING:
        compressor = HIComCompressor(PRESETS["release"].replace(**fields), vision_dim=32, text_dim=48, llm_dim=64)
        ours_names += [O + name for name, _ in compressor.named_parameters()]
    for ours in ours_names:
        release = ours_to_release(ours)
        assert release is not None and release_to_ours(release) == ours, ours
        inside = release[len(R):]
        assert not re.search(r"(^|\.)(injector|attn|text_proj|fine_attn|\w_adapter|guide_adapter)\.", inside), release
    for branch, rows in BRANCH_ROWS.items():
        for _, ours_prefix in rows:
            assert any(n.startswith(f"{O}{branch}.{ours_prefix}") for n in ours_names), (branch, ours_prefix)
    for _, ours_prefix in INJECTOR_ROWS:
        for branch in BRANCH_ROWS:
            assert any(n.startswith(f"{O}{branch}.injector.{ours_prefix}") for n in ours_names), (branch, ours_prefix)


# ---------------------------------------------------------------------------------- strict conversion


def test_conversion_maps_every_key(guided):
    _, model, _ = guided
    state = _release_state(model)
    converted, report = convert_release_state_dict(state, model)
    assert report.ok and not report.ignored
    assert sorted(r for r, _ in report.mapped) == sorted(state)
    assert set(converted) == set(model.state_dict()) - {"lm_head.weight"}  # tied to embed_tokens
    assert set(report.mapped_by_part()) == {"projector", "text tower", "vision tower", "language model"}
    assert all(converted[release_to_ours(k)] is v for k, v in state.items())  # no copies


def test_a_missing_tensor_is_named(guided):
    _, model, _ = guided
    state = _release_state(model)
    del state[R + "local_compressor.k_proj.0.weight"]
    with pytest.raises(KeyError, match=re.escape(O + "local_compressor.k_adapter.proj.0.weight")) as err:
        convert_release_state_dict(state, model)
    assert R + "local_compressor.k_proj.0.weight" in str(err.value)
    _, report = convert_release_state_dict(state, model, strict=False)
    assert report.missing == [O + "local_compressor.k_adapter.proj.0.weight"]


def test_a_wrong_shape_is_named_with_both_shapes(guided):
    _, model, _ = guided
    state = _release_state(model)
    key = R + "global_compressor.guide_injector.coarse_proj.0.weight"
    state[key] = torch.zeros(3, 5)
    expected = tuple(model.state_dict()[release_to_ours(key)].shape)
    with pytest.raises(ValueError, match=re.escape(f"{key!r}")) as err:
        convert_release_state_dict(state, model)
    assert "(3, 5)" in str(err.value) and str(expected) in str(err.value)


def test_an_unknown_tensor_is_named_and_caches_are_skipped(guided):
    _, model, _ = guided
    state = _release_state(model)
    state[R + "global_compressor.pos_embed"] = torch.zeros(4, 7, 7, 32)  # a cache, not a weight
    _, report = convert_release_state_dict(state, model)
    assert [k for k, _ in report.ignored] == [R + "global_compressor.pos_embed"]
    state[R + "local_logit_scale"] = torch.zeros(1)
    with pytest.raises(KeyError, match=re.escape(R + "local_logit_scale")):
        convert_release_state_dict(state, model)


def test_tower_layers_past_the_selected_layer_are_skipped_for_a_truncated_tower(tiny_dir, tmp_path):
    _, model = _build(tiny_dir, tmp_path / "plain", "local43_global32", None)
    assert not model.get_vision_tower().keep_head
    state = _release_state(model)
    full_tower = read_state_dict(tiny_dir / "siglip-tiny", prefix="vision_model.")
    extra = {VISION + k: v for k, v in full_tower.items() if VISION + k not in state}
    assert any(".layers.3." in k for k in extra) and any(".head." in k for k in extra)
    _, report = convert_release_state_dict({**state, **extra}, model)
    assert report.ok and sorted(k for k, _ in report.ignored) == sorted(extra)


# ---------------------------------------------------------------------------------- mm_projector.bin


def _projector(tiny_dir, projector_type, use_guide, seed):
    torch.manual_seed(seed)
    config = SimpleNamespace(mm_projector_type=projector_type, use_guide=use_guide, mm_hidden_size=32,
                             hidden_size=64, mm_vision_tower=str(tiny_dir / "siglip-tiny"))
    return HIComProjector(config, delay_load=True)


def _save_release_bin(projector, path):
    state = {ours_to_release(O + k): v for k, v in projector.compressor.state_dict().items()}
    torch.save(state, path)
    return state


@pytest.mark.parametrize("projector_type,use_guide", [("local43_global32", None), GUIDED])
def test_mm_projector_bin_round_trip(tiny_dir, tmp_path, projector_type, use_guide):
    trained = _projector(tiny_dir, projector_type, use_guide, seed=0)
    _perturb(trained.compressor)
    fresh = _projector(tiny_dir, projector_type, use_guide, seed=1)
    state = _save_release_bin(trained, tmp_path / "mm_projector.bin")
    assert all(k.startswith((R + "local_compressor.", R + "global_compressor.")) for k in state)
    before, after = fresh.compressor.state_dict(), trained.compressor.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in after)
    report = load_release_projector(tmp_path, fresh)  # the folder, as the release's --pretrain_weights
    assert report.ok and len(report.mapped) == len(state) == len(after)
    loaded = fresh.compressor.state_dict()
    assert all(torch.equal(loaded[k], after[k]) for k in after)


def test_stage1_bin_into_an_adaptkv_projector_names_the_adapters(tiny_dir, tmp_path):
    """The release's adaptkv script loads stage-1 weights in stage 3; strict loading says what is absent."""
    _save_release_bin(_projector(tiny_dir, "local43_global32", None, seed=0), tmp_path / "mm_projector.bin")
    target = _projector(tiny_dir, *GUIDED, seed=0)
    with pytest.raises(KeyError, match=re.escape(O + "local_compressor.k_adapter.alpha")):
        load_release_projector(tmp_path / "mm_projector.bin", target)
    report = load_release_projector(tmp_path / "mm_projector.bin", target, strict=False)
    assert any("v_adapter" in k for k in report.missing) and not report.unexpected


# ---------------------------------------------------------------------------------- config


RELEASE_CONFIG = {
    "model_type": "hicom_qwen2", "architectures": ["HIComQwen2ForCausalLM"], "hidden_size": 3584,
    "mm_projector_type": "local43_global32_coarse", "use_guide": "direct",
    "mm_vision_tower": "playground/models/siglip-so400m-patch14-384", "mm_hidden_size": 1152,
    "mm_patch_merge_type": "spatial_unpad", "num_frames": 32, "max_num_frames": 32,
    "image_aspect_ratio": "pad", "mm_vision_select_layer": -2,
}


def test_convert_release_config_release_string():
    out = convert_release_config(RELEASE_CONFIG)
    assert out["model_type"] == "llava_qwen" and out["architectures"] == ["LlavaQwenForCausalLM"]
    assert out["mm_projector_type"] == "hicom"
    assert out["hicom_release_projector_type"] == "local43_global32_coarse"
    hicom = out["hicom_config"]
    assert (hicom["local_injection"], hicom["global_injection"]) == ("direct", "direct")  # "_coarse" is ignored
    parsed = parse_release_projector_type("local43_global32_coarse", "direct").replace(max_num_frames=32)
    assert hicom == parsed.to_dict()
    for key in ("hidden_size", "use_guide", "mm_vision_tower", "mm_hidden_size", "num_frames", "max_num_frames",
                "image_aspect_ratio", "mm_vision_select_layer"):
        assert out[key] == RELEASE_CONFIG[key]
    assert out["mm_patch_merge_type"] == "flat" and out["hicom_release_mm_patch_merge_type"] == "spatial_unpad"
    assert RELEASE_CONFIG["model_type"] == "hicom_qwen2"  # the input is not modified


def test_convert_release_config_paper_string():
    out = convert_release_config({**RELEASE_CONFIG, "mm_projector_type": "local43_global32guidecoarse"})
    hicom = out["hicom_config"]
    assert (hicom["local_injection"], hicom["global_injection"]) == ("direct", "coarse")


@pytest.mark.parametrize("change,message", [
    ({"model_type": "llava_qwen"}, "not a HICom release type"),
    ({"use_clip_scale": "local"}, "use_clip_scale"),
    ({"mm_projector_type": None}, "no mm_projector_type"),
    ({"mm_projector_type": "mlp2x_gelu"}, "token-wise"),
])
def test_convert_release_config_rejects(change, message):
    with pytest.raises(ValueError, match=message):
        convert_release_config({**RELEASE_CONFIG, **change})


# ---------------------------------------------------------------------------------- stage-3 import


def test_import_reproduces_the_model_exactly(guided, tiny_dir, tmp_path, video):
    tokenizer, model, built = guided
    state = _release_state(model)
    src = _write_release(tmp_path / "release", built, state, _release_config(tiny_dir, *GUIDED))
    out = tmp_path / "imported"
    report = import_release_checkpoint(src, out, vision_tower=tiny_dir / "siglip-tiny")
    assert report.ok and sorted(r for r, _ in report.mapped) == sorted(state)
    record = json.loads((out / "import_report.json").read_text())
    assert record["ok"] and len(record["mapped"]) == len(state)
    assert record["release_projector_type"] == GUIDED[0]
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["mm_projector_type"]) == ("llava_qwen", "hicom")
    assert config["hicom_config"] == model.config.hicom_config
    _, imported, _, _ = load_pretrained_model(str(out), None, "x", device_map="cpu", torch_dtype="float32")
    assert torch.equal(_logits(tokenizer, imported, video), _logits(tokenizer, model, video))


def test_cli_imports_a_bin_release_with_fine_injection(tiny_dir, tmp_path, video, capsys):
    built = tmp_path / "built"
    tokenizer, model = _build(tiny_dir, built, *FINE)
    hicom = model.get_model().mm_projector.hicom
    assert hicom.local_injection == hicom.global_injection == "fine"
    assert hicom.adapt_q and hicom.adapt_g and hicom.global_adapt_g
    src = _write_release(tmp_path / "release", built, _release_state(model), _release_config(tiny_dir, *FINE), "bin")
    out = tmp_path / "imported"
    assert main(["--src", str(src), "--out", str(out), "--vision-tower", str(tiny_dir / "siglip-tiny")]) == 0
    assert "missing 0; unexpected 0" in capsys.readouterr().out
    _, imported, _, _ = load_pretrained_model(str(out), None, "x", device_map="cpu", torch_dtype="float32")
    assert torch.equal(_logits(tokenizer, imported, video), _logits(tokenizer, model, video))


def test_import_needs_the_tower_and_a_new_folder(guided, tiny_dir, tmp_path):
    _, _, built = guided
    src = tmp_path / "release"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(_release_config(tiny_dir, *GUIDED)))
    for name in SIDE_FILES:
        shutil.copy(built / name, src / name)
    with pytest.raises(FileNotFoundError, match="--vision-tower"):
        import_release_checkpoint(src, tmp_path / "out")
    with pytest.raises(FileExistsError, match="not empty"):
        import_release_checkpoint(src, built, vision_tower=tiny_dir / "siglip-tiny")


def test_load_pretrained_model_on_a_release_folder_says_how_to_convert(tiny_dir, tmp_path):
    list_projectors()  # LLaVA loads projector plugins lazily; that registration also claims hicom_qwen2
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_release_config(tiny_dir, *GUIDED)))
    with pytest.raises(ReleaseLayoutError, match=r"python -m hicom_plugin\.tools\.release --src \S+release --out"):
        load_pretrained_model(str(folder), None, "x", device_map="cpu")


def test_release_folder_gets_an_actionable_error_in_a_fresh_process(tmp_path):
    """The hicom_qwen2 type is known as soon as llava loads its projector plugins, even in a new process."""
    import json
    import subprocess
    import sys

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "hicom_qwen2", "mm_projector_type": "local43_global32",
                                                      "mm_vision_tower": "x"}))
    script = (
        "import sys\n"
        "from llava.model.builder import load_pretrained_model\n"
        "try:\n"
        "    load_pretrained_model(sys.argv[1], None, 'x', device_map='cpu', torch_dtype='float32')\n"
        "except ValueError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert "python -m hicom_plugin.tools.release" in out.stdout, out.stdout + out.stderr[-2000:]
