"""HICom as a LLaVA projector: entry point, text path, guides through forward and generate, round trips."""

import json

import pytest
import torch

from hicom_plugin.projector import HIComProjector
from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import assemble_llava_qwen, load_pretrained_model
from llava.model.multimodal_projector.builder import list_projectors

FRAMES = 8
# tiny SigLIP grid 7x7: local (4,3,3) groups -> 2 x 3 x 3 = 18 tokens, plus 32 global queries
VIDEO_TOKENS = 2 * 3 * 3 + 32
IMAGE_TOKENS = 3 * 3 + 32


def _build(tiny_dir, out, **overrides):
    assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", out, mm_projector_type=overrides.pop("mm_projector_type", "hicom"), **overrides)
    return load_pretrained_model(str(out), None, "hicom", device_map="cpu", torch_dtype="float32")


@pytest.fixture(scope="module")
def paper(tiny_dir, tmp_path_factory):
    return _build(tiny_dir, tmp_path_factory.mktemp("hicom") / "paper", hicom_preset="paper")


@pytest.fixture(scope="module")
def video():
    torch.manual_seed(0)
    return torch.randn(FRAMES, 3, 56, 56)


def prompt_ids(tokenizer, question, answer=None):
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}")
    conv.append_message(conv.roles[1], answer)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]


def test_registered_through_the_entry_point():
    assert {"hicom", "hicom_release_grammar"} <= set(list_projectors())


def test_paper_preset_model_layout(paper):
    _, model, _, _ = paper
    projector = model.get_model().mm_projector
    assert isinstance(projector, HIComProjector)
    assert projector.hicom.local_injection == "direct" and projector.hicom.global_injection == "coarse"
    # paper Eq. 1: local keys are the features themselves, so the tower stays truncated at layer -2
    tower = model.get_vision_tower()
    assert not tower.keep_head and len(tower.vision_model.encoder.layers) == 3
    assert projector.num_output_tokens(32, 27, 27) == 680
    assert projector.num_output_tokens(1, 27, 27, "image") == 113
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("model.mm_projector.text_encoder.text_model.") for n in names)
    assert not any(p.requires_grad for p in projector.text_encoder.parameters())


def test_forward_with_loss_and_token_counts(paper, video):
    tokenizer, model, _, _ = paper
    ids = prompt_ids(tokenizer, "describe the red triangle", "it moves left")
    labels = ids.clone()
    labels[labels == IMAGE_TOKEN_INDEX] = IGNORE_INDEX
    out = model(input_ids=ids, labels=labels, images=[video], modalities=["video"],
                instructions=["describe the red triangle"])
    assert out.logits.shape[1] == ids.shape[1] - 1 + VIDEO_TOKENS
    out.loss.backward()
    projector = model.get_model().mm_projector
    grads = {n: p.grad for n, p in projector.compressor.named_parameters()}
    assert grads["local_compressor.readout.0.weight"].abs().sum() > 0
    assert all(p.grad is None for p in projector.text_encoder.parameters())
    model.zero_grad()
    image = video[:1]
    out = model(input_ids=ids, images=[image[0]], modalities=["image"], instructions=["what colour?"])
    assert out.logits.shape[1] == ids.shape[1] - 1 + IMAGE_TOKENS


def test_instruction_recovered_from_input_ids_equals_explicit(paper, video):
    """lmms-eval passes only input_ids: the question is recovered and the boilerplate stripped."""
    tokenizer, model, _, _ = paper
    question = "What is the red triangle doing?"
    prompt = f"{question}\nA. spinning\nB. resting\nAnswer with the option's letter from the given choices directly."
    ids = prompt_ids(tokenizer, prompt)
    assert model.recover_instructions(ids, None) == [question]
    with torch.no_grad():
        recovered = model(input_ids=ids, images=[video], modalities=["video"]).logits
        explicit = model(input_ids=ids, images=[video], modalities=["video"], instructions=[question]).logits
    torch.testing.assert_close(recovered, explicit)
    out = model.generate(ids, images=[video], modalities=["video"], max_new_tokens=4, do_sample=False,
                         eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    out_explicit = model.generate(ids, images=[video], modalities=["video"], instructions=[question],
                                  max_new_tokens=4, do_sample=False, eos_token_id=None,
                                  pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (1, 4) and torch.equal(out, out_explicit)


def test_instructions_change_the_visual_tokens(paper, video):
    tokenizer, model, _, _ = paper
    with torch.no_grad():
        a = model.encode_visual_items([video], ["video"], ["describe the red triangle"])[0]
        b = model.encode_visual_items([video], ["video"], ["how many blue circles are there"])[0]
        a2 = model.encode_visual_items([video], ["video"], ["describe the red triangle"])[0]
    assert a.shape == (VIDEO_TOKENS, model.config.hidden_size)
    assert torch.equal(a, a2)
    assert (a - b).abs().max() > 1e-6  # same inputs give bit-identical tokens (a == a2 above)


def test_unconditional_branches_ignore_instructions(tiny_dir, tmp_path, video):
    _, model, _, _ = _build(tiny_dir, tmp_path / "plain", mm_projector_type="local43_global32", use_guide=None)
    projector = model.get_model().mm_projector
    assert projector.text_encoder is None and not projector.uses_instructions
    assert not model.get_vision_tower().keep_head
    with torch.no_grad():
        a = model.encode_visual_items([video], ["video"], ["describe the red triangle"])[0]
        b = model.encode_visual_items([video], ["video"], ["something else"])[0]
    assert torch.equal(a, b)


def test_release_grammar_is_parsed_once_into_explicit_fields(tiny_dir, tmp_path, video):
    out = tmp_path / "release"
    tokenizer, model, _, _ = _build(tiny_dir, out, mm_projector_type="local43_global32_coarse", use_guide="direct")
    config = json.loads((out / "config.json").read_text())
    assert config["mm_projector_type"] == "hicom"
    assert config["hicom_release_projector_type"] == "local43_global32_coarse"
    assert config["hicom_config"]["local_injection"] == "direct"
    assert config["hicom_config"]["global_injection"] == "direct"  # the release ignores "_coarse"
    # guided release keys are SigLIP dense embeddings: the tower keeps every layer and its head
    tower = model.get_vision_tower()
    assert tower.keep_head and len(tower.vision_model.encoder.layers) == 4
    # the saved checkpoint reloads with identical outputs, text tower included
    _, reloaded, _, _ = load_pretrained_model(str(out), None, "x", device_map="cpu", torch_dtype="float32")
    ids = prompt_ids(tokenizer, "describe the red triangle")
    with torch.no_grad():
        before = model(input_ids=ids, images=[video], modalities=["video"]).logits
        after = reloaded(input_ids=ids, images=[video], modalities=["video"]).logits
    assert torch.equal(before, after)


def test_empty_instruction_for_a_video_is_an_error(paper, video):
    _, model, _, _ = paper
    with pytest.raises(ValueError, match="empty instruction"):
        model.encode_visual_items([video], ["video"], ["   "])
    # a text-only dummy item has no question, by design: it is encoded, as one visual item
    with torch.no_grad():
        encoded = model.encode_visual_items([video[:1]], ["text"], [""])
    assert len(encoded) == 1 and encoded[0].ndim == 2 and torch.isfinite(encoded[0]).all()


def test_long_instructions_are_truncated_with_a_warning(paper, video, caplog):
    _, model, _, _ = paper
    long_text = " ".join(["describe the red triangle"] * 40)
    with caplog.at_level("WARNING"), torch.no_grad():
        out = model.encode_visual_items([video], ["video"], [long_text])[0]
    assert out.shape[0] == VIDEO_TOKENS
    assert "truncated" in caplog.text


def test_unknown_release_string_is_rejected(tiny_dir, tmp_path):
    with pytest.raises(ValueError):
        _build(tiny_dir, tmp_path / "bad", mm_projector_type="local4x_global", use_guide="direct")


def test_injector_group_is_empty_for_release_direct_and_says_so(tiny_dir, tmp_path, paper, caplog):
    _, release, _, _ = _build(tiny_dir, tmp_path / "rel", mm_projector_type="local43_global32", use_guide="direct")
    with caplog.at_level("WARNING"):
        assert release.get_model().mm_projector.injector_parameters() == []
    assert "empty group" in caplog.text
    caplog.clear()
    _, model, _, _ = paper
    with caplog.at_level("WARNING"):
        params = model.get_model().mm_projector.injector_parameters()
    assert params and "empty group" not in caplog.text
