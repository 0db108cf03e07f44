"""One contract for every registered projector, vision tower and token reducer (built-ins and plugins
alike), run over each registry's ``examples``: a new plugin gets these checks without editing this file.

Per projector example, on a tiny LLaVA-Qwen built with it: forward + backward on a video, an image and a
text-only sample; ``num_visual_tokens`` equals the tokens spliced; ``save_pretrained`` ->
``load_pretrained_model`` and adapter-only ``mm_projector.bin`` round trips give identical outputs;
generation works with and without explicit instructions. Per tower: ``encode_batch`` and the token-wise
call agree on shapes and values. Per reducer: its token count is the one spliced, and generation runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import assemble_llava_qwen, load_pretrained_model
from llava.model.multimodal_encoder.builder import VISION_TOWERS, build_vision_tower
from llava.model.multimodal_projector.builder import PROJECTORS
from llava.model.token_reduction.registry import TOKEN_REDUCERS
from llava.train.llava_trainer import save_adapter

TESTS = Path(__file__).resolve().parents[1]
SIZE, FRAMES = 56, 4


def _registered_outside_tests(registry) -> list[str]:
    """Names whose component lives in the installed code (tests register throwaway ones of their own)."""
    names = []
    for name in registry.names():
        module = sys.modules.get(getattr(registry.get(name) if name in registry else None, "__module__", ""), None)
        path = Path(getattr(module, "__file__", "") or "")
        if TESTS not in path.resolve().parents:
            names.append(name)
    return names


def _cases(registry) -> list:
    return [pytest.param(name, example, id=f"{name}-{i}")
            for name in _registered_outside_tests(registry) for i, example in enumerate(registry.examples(name))]


PROJECTOR_CASES = _cases(PROJECTORS)
TOWER_CASES = _cases(VISION_TOWERS)
REDUCER_CASES = _cases(TOKEN_REDUCERS)


def _prompt(tokenizer, text: str, with_image: bool) -> torch.Tensor:
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], ("<image>\n" if with_image else "") + text)
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")


def _pixels(frames: int, seed: int) -> torch.Tensor:
    return torch.randn(frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _batch(tokenizer):
    """A video, an image and a text-only sample (with its dummy item), right-padded, with labels."""
    rows = [_prompt(tokenizer, "What moves in the video?", True), _prompt(tokenizer, "What colour is it?", True),
            _prompt(tokenizer, "Say hello.", False)]
    answers = [tokenizer("a red ball<|im_end|>", add_special_tokens=False).input_ids for _ in rows]
    ids = [torch.cat([r, torch.tensor(a)]) for r, a in zip(rows, answers)]
    longest = max(len(x) for x in ids)
    input_ids = torch.full((3, longest), tokenizer.pad_token_id)
    labels = torch.full((3, longest), IGNORE_INDEX)
    mask = torch.zeros(3, longest, dtype=torch.bool)
    for i, (x, r) in enumerate(zip(ids, rows)):
        input_ids[i, : len(x)], mask[i, : len(x)] = x, True
        labels[i, len(r) : len(x)] = x[len(r) :]
    images = [_pixels(FRAMES, 0), _pixels(1, 1), torch.zeros(1, 3, SIZE, SIZE)]
    return dict(input_ids=input_ids, attention_mask=mask, labels=labels, images=images,
                modalities=["video", "image", "text"],
                instructions=["What moves in the video?", "What colour is it?", ""])


def _llm_of_width(tiny_dir: Path, hidden_size: int, out: Path) -> Path:
    """The tiny Qwen2 at another width (an example's ``hidden_size``, e.g. identity's), fresh weights."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config.from_pretrained(tiny_dir / "qwen2-tiny")
    config.hidden_size, config.intermediate_size = hidden_size, 2 * hidden_size
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_dir / "qwen2-tiny").save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def built(tiny_dir, tmp_path_factory):
    """``(name, example) -> (folder, tokenizer, model, llm folder)``, each built once. An example's ``hidden_size``
    is the LLM width it needs; every other key is a config setting."""
    cache = {}

    def get(name, example):
        key = (name, repr(sorted(example.items())))
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"contract-{name}")
            settings = dict(example)
            projector_type = settings.pop("mm_projector_type", "mlp2x_gelu")
            llm = tiny_dir / "qwen2-tiny"
            if "hidden_size" in settings:
                llm = _llm_of_width(tiny_dir, settings.pop("hidden_size"), tmp_path_factory.mktemp("llm"))
            assemble_llava_qwen(llm, tiny_dir / "siglip-tiny", folder, mm_projector_type=projector_type, **settings)
            tokenizer, model, _, _ = load_pretrained_model(str(folder), None, "x", device_map="cpu",
                                                           torch_dtype="float32")
            cache[key] = (folder, tokenizer, model, llm)
        return cache[key]

    return get


@pytest.mark.parametrize("name, example", PROJECTOR_CASES)
def test_projector_forward_and_backward(built, name, example):
    _, tokenizer, model, _ = built(name, example)
    model.train()
    model.zero_grad()
    out = model(**_batch(tokenizer))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.get_model().mm_projector.parameters() if p.requires_grad]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    if grads:
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no gradient reached the projector"
    else:  # parameter-free (identity): the gradient still flows through it into the LLM
        assert model.get_model().embed_tokens.weight.grad.abs().sum() > 0
    model.zero_grad()


@pytest.mark.parametrize("name, example", PROJECTOR_CASES)
def test_num_visual_tokens_is_what_is_spliced(built, name, example):
    _, tokenizer, model, _ = built(name, example)
    model.eval()
    uses = model._needs_instructions()
    with torch.no_grad():
        for frames in (1, FRAMES):
            tokens = model.encode_visual_items([_pixels(frames, 2)], ["video"], ["What moves?"] if uses else None)
            assert tokens[0].shape[0] == model.num_visual_tokens(frames, "video"), (name, frames)
        image = model.encode_visual_items([_pixels(1, 3)], ["image"], ["What is it?"] if uses else None)
        assert image[0].shape[0] == model.num_visual_tokens(1, "image")
        ids = _prompt(tokenizer, "What moves in the video?", True)[None]
        _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(
            ids, None, None, None, None, [_pixels(FRAMES, 2)], ["video"])
    assert embeds.shape[1] - (ids.shape[1] - 1) == model.num_visual_tokens(FRAMES, "video")


def _logits(model, tokenizer):
    batch = _batch(tokenizer)
    batch.pop("labels")
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("name, example", PROJECTOR_CASES)
def test_save_pretrained_round_trip(built, name, example, tmp_path):
    _, tokenizer, model, _ = built(name, example)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, again, _, _ = load_pretrained_model(str(tmp_path), None, "x", device_map="cpu", torch_dtype="float32")
    before, after = model.state_dict(), again.state_dict()
    assert sorted(before) == sorted(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    torch.testing.assert_close(_logits(again, tokenizer), _logits(model, tokenizer), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name, example", PROJECTOR_CASES)
def test_adapter_only_round_trip(built, name, example, tmp_path):
    _, tokenizer, model, llm = built(name, example)
    save_adapter(model, tmp_path)
    _, again, _, _ = load_pretrained_model(str(tmp_path), str(llm), "x", device_map="cpu",
                                           torch_dtype="float32")
    before = model.get_model().mm_projector.state_dict()
    after = again.get_model().mm_projector.state_dict()
    assert sorted(before) == sorted(after) and all(torch.equal(before[k], after[k]) for k in before)
    uses = model._needs_instructions()
    with torch.no_grad():
        args = ([_pixels(FRAMES, 4)], ["video"], ["What moves?"] if uses else None)
        torch.testing.assert_close(again.eval().encode_visual_items(*args)[0],
                                   model.eval().encode_visual_items(*args)[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name, example", PROJECTOR_CASES)
def test_generate_with_and_without_instructions(built, name, example):
    _, tokenizer, model, _ = built(name, example)
    model.eval()
    ids = _prompt(tokenizer, "What moves in the video?", True)[None]
    video = [_pixels(FRAMES, 5)]
    plain = model.generate(ids, images=video, modalities=["video"], max_new_tokens=3, do_sample=False)
    assert plain.shape == (1, 3) or plain.shape[1] <= 3
    given = model.recover_instructions(ids, None) if model._needs_instructions() else ["What moves in the video?"]
    explicit = model.generate(ids, images=video, modalities=["video"], instructions=given, max_new_tokens=3,
                              do_sample=False)
    assert torch.equal(plain, explicit)


@pytest.mark.parametrize("name, example", TOWER_CASES)
def test_vision_tower_contract(tiny_dir, name, example):
    config = SimpleNamespace(mm_vision_tower=str(tiny_dir / "siglip-tiny"), mm_vision_select_layer=-2,
                             mm_vision_select_feature="patch", **example)
    tower = build_vision_tower(config)
    side, width = tower.num_patches_per_side, tower.hidden_size
    items = [_pixels(3, 6), _pixels(1, 7)]
    with torch.no_grad():
        batch = tower.encode_batch(items, ["video", "image"])
        flat = tower(torch.cat(items))
    assert batch.features.shape == (4, side, side, width) and batch.frames_per_item == [3, 1]
    assert flat.shape == (4, side * side, width)
    torch.testing.assert_close(batch.features.flatten(1, 2), flat, atol=1e-6, rtol=0)
    frames = (torch.rand(2, 40, 30, 3) * 255).to(torch.uint8).numpy()
    from llava.mm_utils import process_video_frames

    pixels = process_video_frames(frames, tower.image_processor, "pad")
    first = next(iter(pixels.values())) if isinstance(pixels, dict) else pixels
    assert first.shape[-2:] == (tower.image_size, tower.image_size)


@pytest.mark.parametrize("name, example", REDUCER_CASES)
def test_token_reducer_contract(built, name, example):
    _, tokenizer, model, _ = built("mlp_gelu", {"mm_projector_type": "mlp2x_gelu"})
    model.eval()
    model.get_model().set_token_reducer(example.get("mm_token_reducer", name), example.get("mm_token_reducer_config"))
    try:
        with torch.no_grad():
            tokens = model.encode_visual_items([_pixels(FRAMES, 8)], ["video"])
        assert tokens[0].shape[0] == model.num_visual_tokens(FRAMES, "video")
        ids = _prompt(tokenizer, "What moves in the video?", True)[None]
        out = model.generate(ids, images=[_pixels(FRAMES, 8)], modalities=["video"], max_new_tokens=3, do_sample=False)
        assert 1 <= out.shape[1] <= 3
    finally:
        model.get_model().set_token_reducer(None)


def test_every_registry_is_covered():
    """The built-ins and the installed plugin take part (so an empty parametrisation cannot pass silently)."""
    projectors = {case.values[0] for case in PROJECTOR_CASES}
    assert {"linear", "mlp_gelu", "identity", "hicom", "hicom_release_grammar"} <= projectors
    assert {case.values[0] for case in TOWER_CASES} >= {"siglip"}
