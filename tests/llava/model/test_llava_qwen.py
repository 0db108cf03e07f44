"""A tiny LlavaQwenForCausalLM from llava.toy.tiny checkpoints: forward, generate, splicing, round trips."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.video import process_video_with_decord
from tests.helpers.hf_warnings import transformers_warnings
from tests.helpers.videos import write_test_video

GRID = 7  # tiny SigLIP: 56 px / patch 8


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    tokenizer, model, processor, context_len = load_pretrained_model(
        str(tiny_dir / "tiny-llava-qwen"), None, "llava_qwen", device_map="cpu", torch_dtype="float32"
    )
    return tokenizer, model, processor


@pytest.fixture(scope="module")
def video(loaded, tmp_path_factory):
    """8 frames of a real mp4, decoded by decord, preprocessed by the model's processor."""
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    write_test_video(path, num_frames=48, width=64, height=48, fps=24)
    frames, _, _, num = process_video_with_decord(str(path), SimpleNamespace(frames_upbound=8, force_sample=True, video_fps=1))
    assert frames.shape[0] == 8 and num == 8
    return loaded[2].preprocess(frames, return_tensors="pt")["pixel_values"]


@pytest.fixture(scope="module")
def image(loaded):
    from PIL import Image

    return loaded[2].preprocess(Image.new("RGB", (40, 30), (200, 30, 30)), return_tensors="pt")["pixel_values"][0]


def prompt_ids(tokenizer, question, answer=None):
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}")
    conv.append_message(conv.roles[1], answer)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]


def test_forward_with_loss_on_image_and_video(loaded, image, video):
    tokenizer, model, _ = loaded
    ids = prompt_ids(tokenizer, "what colour is the square?", "red")
    labels = ids.clone()
    labels[labels == IMAGE_TOKEN_INDEX] = IGNORE_INDEX
    out = model(input_ids=ids, labels=labels, images=[image], modalities=["image"])
    assert out.logits.shape[1] == ids.shape[1] - 1 + GRID * GRID
    assert torch.isfinite(out.loss)
    out.loss.backward()
    projector_grads = [p.grad for p in model.get_model().mm_projector.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in projector_grads)
    assert all(p.grad is None for p in model.get_vision_tower().parameters())
    model.zero_grad()

    out = model(input_ids=ids, labels=labels, images=[video], modalities=["video"])
    per_frame = (GRID // 2) ** 2  # average 2x2 pooling
    assert out.logits.shape[1] == ids.shape[1] - 1 + 8 * per_frame
    assert torch.isfinite(out.loss)


def test_training_forward_heads_the_supervised_positions_only(loaded, image):
    """In training, the LM head runs only where a next token is supervised in some sample (the answers),
    and the loss is the full forward's."""
    tokenizer, model, _ = loaded
    question = "what colour is the square?"
    rows, supervised = [], []
    for answer in ("red", "a red square in the middle"):
        ids = prompt_ids(tokenizer, question, answer)[0]
        labels = ids.clone()
        labels[: prompt_ids(tokenizer, question).shape[1]] = IGNORE_INDEX  # the answer only
        rows.append((ids, labels))
        supervised.append(int((labels != IGNORE_INDEX).sum()))
    length = max(len(ids) for ids, _ in rows)
    pad = lambda t, fill: torch.cat([t, torch.full((length - len(t),), fill, dtype=t.dtype)])  # noqa: E731
    ids = torch.stack([pad(i, tokenizer.pad_token_id) for i, _ in rows])
    labels = torch.stack([pad(l, IGNORE_INDEX) for _, l in rows])
    mask = torch.stack([pad(torch.ones(len(i), dtype=torch.long), 0) for i, _ in rows])
    batch = dict(input_ids=ids, attention_mask=mask, labels=labels, images=[image, image], modalities=["image", "image"])
    with torch.no_grad():
        full = model(**batch)  # not training (no dropout in these towers): the LM's own forward, logits everywhere
    model.train()
    try:
        headed = model(**batch)
    finally:
        model.eval()
    torch.testing.assert_close(headed.loss, full.loss)
    # the prompts match, so the short answer's positions lie within the long one's
    assert headed.logits.shape[:2] == (2, max(supervised)) < full.logits.shape[:2]
    headed.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.get_model().mm_projector.parameters())
    model.zero_grad()


def test_pooling_reads_config_at_every_call(loaded, video):
    tokenizer, model, _ = loaded
    ids = prompt_ids(tokenizer, "what happens?")
    config = model.config
    saved = config.mm_spatial_pool_mode, config.mm_spatial_pool_stride
    try:
        lengths = {}
        for mode, stride in [("average", 2), ("bilinear", 2), ("max", 1), ("average", 3)]:
            config.mm_spatial_pool_mode, config.mm_spatial_pool_stride = mode, stride
            with torch.no_grad():
                lengths[(mode, stride)] = model(input_ids=ids, images=[video], modalities="video").logits.shape[1]
        base = ids.shape[1] - 1
        assert lengths == {
            ("average", 2): base + 8 * 9,
            ("bilinear", 2): base + 8 * 16,
            ("max", 1): base + 8 * 49,
            ("average", 3): base + 8 * 4,
        }
        config.mm_spatial_pool_mode = "nearest"
        with pytest.raises(ValueError, match="mm_spatial_pool_mode"):
            model(input_ids=ids, images=[video], modalities="video")
    finally:
        config.mm_spatial_pool_mode, config.mm_spatial_pool_stride = saved


def _manual_greedy(model, ids, images, modalities, steps):
    """Greedy decoding by full forward passes, no cache: the reference for generate()."""
    _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, images, modalities)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(inputs_embeds=embeds).logits[:, -1].argmax(-1)
            out.append(int(nxt))
            embeds = torch.cat([embeds, model.get_model().embed_tokens(nxt)[:, None]], dim=1)
    return out


def test_generate_returns_only_new_tokens_and_matches_greedy(loaded, video):
    tokenizer, model, _ = loaded
    ids = prompt_ids(tokenizer, "what happens in the video?")
    out = model.generate(ids, images=[video], modalities=["video"], max_new_tokens=6, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    assert out.shape == (1, 6)
    assert out[0].tolist() == _manual_greedy(model, ids, [video], ["video"], 6)
    assert tokenizer.batch_decode(out, skip_special_tokens=True)[0] is not None


def test_generate_sampling_is_seeded(loaded, image):
    tokenizer, model, _ = loaded
    ids = prompt_ids(tokenizer, "describe it")
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(model.generate(ids, images=[image], modalities=["image"], max_new_tokens=5, do_sample=True,
                                   temperature=1.0, top_p=None, eos_token_id=None,
                                   pad_token_id=tokenizer.pad_token_id))
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (1, 5)
    # temperature 0 with do_sample means greedy, not an error
    greedy = model.generate(ids, images=[image], modalities=["image"], max_new_tokens=5, do_sample=True,
                            temperature=0, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    assert greedy[0].tolist() == _manual_greedy(model, ids, [image], ["image"], 5)


def test_batch_equals_single_samples(loaded, image, video):
    """Two samples of different lengths (image, video) padded into one batch give the same logits."""
    tokenizer, model, _ = loaded
    a = prompt_ids(tokenizer, "what colour?")[0]
    b = prompt_ids(tokenizer, "what is moving in this long video clip?")[0]
    pad = tokenizer.pad_token_id
    longest = max(len(a), len(b))
    batch = torch.full((2, longest), pad)
    mask = torch.zeros(2, longest, dtype=torch.long)
    for row, seq in enumerate((a, b)):
        batch[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    with torch.no_grad():
        both = model(input_ids=batch, attention_mask=mask, images=[image, video], modalities=["image", "video"]).logits
        alone_a = model(input_ids=a[None], images=[image], modalities=["image"]).logits[0]
        alone_b = model(input_ids=b[None], images=[video], modalities=["video"]).logits[0]
    torch.testing.assert_close(both[0, : len(alone_a)], alone_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1, : len(alone_b)], alone_b, atol=1e-5, rtol=1e-5)

    gen = model.generate(batch, attention_mask=mask, images=[image, video], modalities=["image", "video"],
                         max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=pad)
    single_b = model.generate(b[None], images=[video], modalities=["video"], max_new_tokens=4, do_sample=False,
                              eos_token_id=None, pad_token_id=pad)
    assert gen[1].tolist() == single_b[0].tolist()


def test_text_only_sample_consumes_a_dummy_item(loaded, image):
    tokenizer, model, _ = loaded
    text = tokenizer("just words here", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(input_ids=text, images=[torch.zeros_like(image)], modalities=["text"]).logits
        plain = model(input_ids=text).logits
    torch.testing.assert_close(out, plain)


def test_save_load_round_trip_and_auto_classes(loaded, video, tmp_path):
    tokenizer, model, _ = loaded
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    # the weights are as readable as the config next to them (safetensors writes 0600)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == (tmp_path / "config.json").stat().st_mode & 0o777
    assert config["model_type"] == "llava_qwen"
    assert config["architectures"] == ["LlavaQwenForCausalLM"]
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    assert "rope_scaling" in config and config["torch_dtype"] == "float32"
    assert config["mm_vision_tower_config"]["model_type"] == "siglip_vision_model"

    ids = prompt_ids(tokenizer, "what happens?")
    with transformers_warnings() as warned:  # the transformers-4 keys we write cost a reader nothing
        _, reloaded, _, _ = load_pretrained_model(str(tmp_path), None, "whatever-name", device_map="cpu",
                                                  torch_dtype="float32")
        repr(reloaded.config)
    assert warned == []
    with torch.no_grad():
        before = model(input_ids=ids, images=[video], modalities=["video"]).logits
        after = reloaded(input_ids=ids, images=[video], modalities=["video"]).logits
    assert torch.equal(before, after)

    # a fresh process: `import llava` registers the type, AutoModelForCausalLM builds our class
    torch.save({"ids": ids, "video": video, "logits": before}, tmp_path / "probe.pt")
    script = (
        "import sys, torch, llava\n"
        "from transformers import AutoModelForCausalLM\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()\n"
        "p = torch.load(sys.argv[1] + '/probe.pt', weights_only=True)\n"
        "with torch.no_grad():\n"
        "    out = m(input_ids=p['ids'], images=[p['video']], modalities=['video']).logits\n"
        "assert type(m).__name__ == 'LlavaQwenForCausalLM', type(m)\n"
        "assert torch.equal(out, p['logits'])\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
