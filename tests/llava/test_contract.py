"""One contract for every registered projector, vision tower and token reducer (built-ins and plugins
alike), run over each registry's ``examples``: a new plugin gets these checks without editing this file
(timm's ``test_models.py``, HF's ``test_modeling_common``). Test ids read ``<name>-<example index>``.

Per projector example, on a tiny LLaVA-Qwen assembled with it (float32, CPU, built once per module):
(a) forward + backward on a collated micro-batch of a video, an image and a text-only sample (with its
dummy image); (b) ``num_visual_tokens`` equals the tokens encoded and the tokens spliced; (c)
``save_pretrained`` -> ``load_pretrained_model`` keeps every tensor and the logits; (d) an adapter-only
``mm_projector.bin`` reloaded on the LLM gives the same projector; (e) greedy generation is the same with
the instruction recovered from the prompt as with it passed explicitly. Per tower: ``encode_batch``,
``__call__`` and ``image_processor`` agree on shapes and values. Per reducer: options rebuild it, its
token count is the one spliced, and a saved model rebuilds it and generates the same tokens.

An example key ``hidden_size`` is the LLM width the component needs (``identity``: the tower's width);
the test builds the tiny LLM at that width. Every other key is a config setting.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import process_video_frames, tokenizer_image_token
from llava.model.builder import assemble_llava_qwen, load_pretrained_model
from llava.model.multimodal_encoder.builder import VISION_TOWERS, build_vision_tower
from llava.model.multimodal_projector.builder import PROJECTORS
from llava.model.token_reduction.base import STAGES
from llava.model.token_reduction.registry import TOKEN_REDUCERS, build_token_reducer
from llava.model.visual import VisualBatch
from llava.train.data import DataCollatorForSupervisedDataset
from llava.train.llava_trainer import save_adapter

TESTS = Path(__file__).resolve().parents[1]
FRAMES = 4
VIDEO_Q, VIDEO_A = "What is the red triangle doing?", "It moves to the left."
IMAGE_Q, IMAGE_A = "What colour is the square?", "Blue."
TEXT_Q, TEXT_A = "Name a primary colour.", "Red."
OTHER_INSTRUCTION = "How many blue circles are there?"
NEW_TOKENS = 3
ATOL = 1e-6


def _registered_outside_tests(registry) -> list[str]:
    """Names whose component lives in the installed code (tests register throwaway ones of their own)."""
    names = []
    for name in registry.names():
        module = sys.modules.get(getattr(registry.get(name), "__module__", ""), None)
        path = Path(getattr(module, "__file__", "") or "")
        if TESTS not in path.resolve().parents:
            names.append(name)
    return names


def _cases(registry) -> list:
    """``pytest.param(name, example, id="name-i")`` for every registered name and each of its examples."""
    return [pytest.param(name, example, id=f"{name}-{i}")
            for name in _registered_outside_tests(registry) for i, example in enumerate(registry.examples(name))]


PROJECTOR_CASES = _cases(PROJECTORS)
TOWER_CASES = _cases(VISION_TOWERS)
REDUCER_CASES = _cases(TOKEN_REDUCERS)  # none outside tests today: the reducer tests then skip


def test_every_registry_is_covered():
    """The built-ins and the installed plugin take part (so an empty parametrisation cannot pass silently)."""
    projectors = {case.values[0] for case in PROJECTOR_CASES}
    assert {"linear", "mlp_gelu", "identity", "hicom", "hicom_release_grammar"} <= projectors
    assert sum(case.values[0] == "hicom" for case in PROJECTOR_CASES) == len(PROJECTORS.examples("hicom")) >= 2
    assert {case.values[0] for case in TOWER_CASES} >= {"siglip"}


# ----------------------------------------------------------------------------- inputs


def _prompt(tokenizer, question: str, answer: str | None = None, with_image: bool = True) -> torch.Tensor:
    """``(L,)`` ids of one ``qwen_1_5`` turn; ``answer=None`` ends with the assistant's generation prompt."""
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}" if with_image else question)
    conv.append_message(conv.roles[1], answer)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")


def _pixels(frames: int, side: int, seed: int) -> torch.Tensor:
    """``(frames, 3, side, side)`` normalised-range pixels, the same for the same seed."""
    return torch.randn(frames, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _side(model) -> int:
    """The tower's input size (pixels per side)."""
    return model.get_vision_tower().config.image_size


def _instances(tokenizer, side: int) -> list[dict]:
    """A video, an image and a text-only sample as ``LazySupervisedDataset.get_sample`` returns them: the
    text-only sample carries the zero dummy image with modality ``"text"`` and an empty instruction."""
    samples = [
        (_prompt(tokenizer, VIDEO_Q, VIDEO_A), _pixels(FRAMES, side, 1), "video", VIDEO_Q),
        (_prompt(tokenizer, IMAGE_Q, IMAGE_A), _pixels(1, side, 2), "image", IMAGE_Q),
        (_prompt(tokenizer, TEXT_Q, TEXT_A, with_image=False), torch.zeros(1, 3, side, side), "text", ""),
    ]
    instances = []
    for ids, pixels, modality, instruction in samples:
        labels = ids.clone()
        labels[labels == IMAGE_TOKEN_INDEX] = IGNORE_INDEX
        instances.append({"input_ids": ids, "labels": labels, "image": [(pixels, (side, side), modality)],
                          "instructions": [instruction], "id": modality})
    return instances


def _micro_batch(tokenizer, model) -> tuple[dict, list[dict]]:
    """The training collator's micro-batch of :func:`_instances` (model kwargs), and the instances."""
    instances = _instances(tokenizer, _side(model))
    batch = DataCollatorForSupervisedDataset(tokenizer)(instances)
    batch.pop("data_events")
    return batch, instances


# ----------------------------------------------------------------------------- projector models


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
    """``(name, example) -> (folder, tokenizer, model, llm folder)``, each built once per module."""
    cache = {}

    def get(name, example):
        key = (name, json.dumps(example, sort_keys=True))
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"contract-{name}")
            settings = dict(example)
            projector_type = settings.pop("mm_projector_type", name)
            llm = tiny_dir / "qwen2-tiny"
            if "hidden_size" in settings:
                llm = _llm_of_width(tiny_dir, settings.pop("hidden_size"), tmp_path_factory.mktemp("llm"))
            assemble_llava_qwen(llm, tiny_dir / "siglip-tiny", folder, mm_projector_type=projector_type, seed=0,
                                **settings)
            tokenizer, model, _, _ = load_pretrained_model(str(folder), None, "x", device_map="cpu",
                                                           torch_dtype="float32")
            cache[key] = (folder, tokenizer, model, llm)
        return cache[key]

    return get


def _uses_instructions(model) -> bool:
    return bool(getattr(model.get_model().mm_projector, "uses_instructions", False))


@pytest.mark.parametrize("name, example", PROJECTOR_CASES)
def test_projector_forward_and_backward(built, name, example):
    """(a) Finite loss; finite projector gradients, some non-zero; none into the frozen tower; the
    text-only sample's dummy image is encoded with the batch but not spliced."""
    _, tokenizer, model, _ = built(name, example)
    batch, instances = _micro_batch(tokenizer, model)
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        out = model(**batch)
        out.loss.backward()
    finally:
        model.eval()
    assert out.loss.ndim == 0 and torch.isfinite(out.loss), f"loss {out.loss}"
    lengths = [len(instances[0]["input_ids"]) - 1 + model.num_visual_tokens(FRAMES, "video"),
               len(instances[1]["input_ids"]) - 1 + model.num_visual_tokens(1, "image"),
               len(instances[2]["input_ids"])]
    with torch.no_grad():  # not training: logits at every spliced position
        spliced = model(**batch).logits
    assert spliced.shape[:2] == (3, max(lengths))
    # training: the LM head at the positions whose next token is supervised in some sample only
    supervised = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum(1).max())  # one sample's, splicing keeps them
    assert out.logits.shape[0] == 3 and supervised <= out.logits.shape[1] <= max(lengths) - 1

    projector = model.get_model().mm_projector
    trainable = {n: p for n, p in projector.named_parameters() if p.requires_grad}
    if not trainable:  # parameter-free (identity); a projector with frozen parameters only is a loading bug
        assert not list(projector.parameters()), f"{name}: every projector parameter is frozen after loading"
    else:
        used = {n: p.grad for n, p in trainable.items() if p.grad is not None}
        not_finite = sorted(n for n, g in used.items() if not torch.isfinite(g).all())
        assert not not_finite, f"{name}: non-finite gradients in {not_finite}"
        assert any(g.abs().sum() > 0 for g in used.values()), f"{name}: no gradient reached the projector"
    tower_grads = [n for n, p in model.get_vision_tower().named_parameters() if p.grad is not None]
    assert not tower_grads, f"the frozen vision tower got gradients: {tower_grads[:3]}"
    model.zero_grad(set_to_none=True)


def _counted_and_spliced(model, ids, frames: int, modality: str, side: int):
    """``(num_visual_tokens, encoded tokens, spliced embeddings)`` for one item of ``frames`` frames."""
    pixels = _pixels(frames, side, seed=frames)
    expected = model.num_visual_tokens(frames, modality)
    with torch.no_grad():
        tokens = model.encode_visual_items([pixels], [modality], [VIDEO_Q])[0]
        embeds = model.prepare_inputs_labels_for_multimodal(
            ids, None, None, None, None, [pixels], [modality], instructions=[VIDEO_Q])[4]
    return expected, tokens, embeds


@pytest.mark.parametrize("name, example", PROJECTOR_CASES)
def test_num_visual_tokens_is_what_is_spliced(built, name, example):
    """(b) ``num_visual_tokens`` == rows of ``encode_visual_items`` == spliced length minus the text."""
    _, tokenizer, model, _ = built(name, example)
    side, hidden = _side(model), model.config.hidden_size
    ids = _prompt(tokenizer, VIDEO_Q)[None]
    for frames, modality in ((1, "video"), (FRAMES, "video"), (1, "image")):
        expected, tokens, embeds = _counted_and_spliced(model, ids, frames, modality, side)
        assert expected > 0, (frames, modality)
        assert tokens.shape == (expected, hidden), f"T={frames} {modality}"
        assert embeds.shape == (1, ids.shape[1] - 1 + expected, hidden), f"T={frames} {modality}"


@pytest.mark.parametrize("name, example", PROJECTOR_CASES)
def test_save_pretrained_round_trip(built, name, example, tmp_path):
    """(c) The same projector class, every tensor equal, the same logits on the micro-batch."""
    _, tokenizer, model, _ = built(name, example)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, again, _, _ = load_pretrained_model(str(tmp_path), None, "x", device_map="cpu", torch_dtype="float32")
    assert type(again.get_model().mm_projector) is type(model.get_model().mm_projector)
    before, after = model.state_dict(), again.state_dict()
    assert sorted(before) == sorted(after), sorted(set(before) ^ set(after))[:5]
    differing = sorted(k for k in before if before[k].shape != after[k].shape or not torch.equal(before[k], after[k]))
    assert not differing, f"{len(differing)} tensors differ after the round trip, e.g. {differing[:5]}"
    batch, _ = _micro_batch(tokenizer, model)
    with torch.no_grad():
        expected, actual = model(**batch).logits, again(**batch).logits
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name, example", PROJECTOR_CASES)
def test_adapter_only_round_trip(built, name, example, tiny_dir, tmp_path):
    """(d) ``save_adapter`` -> ``load_pretrained_model(adapter, model_base=LLM)``: the same projector."""
    _, _, model, llm = built(name, example)
    save_adapter(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["mm_vision_tower"] == str(tiny_dir / "siglip-tiny")
    assert (tmp_path / "mm_projector.bin").is_file()
    _, again, _, _ = load_pretrained_model(str(tmp_path), str(llm), "x", device_map="cpu", torch_dtype="float32")
    before = model.get_model().mm_projector.state_dict()
    after = again.get_model().mm_projector.state_dict()
    assert sorted(before) == sorted(after), sorted(set(before) ^ set(after))[:5]
    differing = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert not differing, f"projector tensors differ after the adapter reload: {differing[:5]}"
    side = _side(model)
    items, modalities = [_pixels(FRAMES, side, 5), _pixels(1, side, 6)], ["video", "image"]
    with torch.no_grad():
        expected = model.encode_visual_items(items, modalities, [VIDEO_Q, IMAGE_Q])
        actual = again.encode_visual_items(items, modalities, [VIDEO_Q, IMAGE_Q])
    assert len(actual) == len(expected) == 2
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name, example", PROJECTOR_CASES)
def test_generate_with_and_without_instructions(built, name, example):
    """(e) Greedy generation: the instruction recovered from the prompt is the cleaned question and gives
    the tokens an explicit caller gets; a projector not conditioned on text ignores instructions."""
    _, tokenizer, model, _ = built(name, example)
    ids = _prompt(tokenizer, VIDEO_Q)[None]
    kwargs = dict(images=[_pixels(FRAMES, _side(model), 7)], modalities=["video"], max_new_tokens=NEW_TOKENS,
                  do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    if _uses_instructions(model):
        instructions = model.recover_instructions(ids, None)
        assert instructions == [model.get_model().mm_projector.clean_instruction(VIDEO_Q)]
    else:
        instructions = [OTHER_INSTRUCTION]
    implicit = model.generate(ids, **kwargs)
    explicit = model.generate(ids, instructions=instructions, **kwargs)
    assert implicit.shape == (1, NEW_TOKENS)  # no EOS: never stops early
    assert ((implicit >= 0) & (implicit < model.get_input_embeddings().weight.shape[0])).all()
    assert torch.equal(implicit, explicit), (implicit, explicit)


# ----------------------------------------------------------------------------- vision towers


@pytest.fixture(scope="module")
def built_tower(tiny_dir):
    """``example -> tower`` built from ``siglip-tiny``, each once per module."""
    cache = {}

    def get(example):
        key = json.dumps(example, sort_keys=True)
        if key not in cache:
            config = SimpleNamespace(mm_vision_tower=str(tiny_dir / "siglip-tiny"), mm_vision_select_layer=-2,
                                     mm_vision_select_feature="patch", **example)
            cache[key] = build_vision_tower(config).eval()
        return cache[key]

    return get


@pytest.mark.parametrize("name, example", TOWER_CASES)
def test_vision_tower_contract(built_tower, name, example):
    """``encode_batch`` packs every item's frames into ``(sum T, side, side, D)``, equal to ``__call__``
    on the frames; no item's features depend on another item of the batch."""
    tower = built_tower(example)
    assert tower.is_loaded
    side, width, size = tower.num_patches_per_side, tower.hidden_size, tower.config.image_size
    items = [_pixels(FRAMES, size, 11), _pixels(1, size, 12), torch.zeros(1, 3, size, size)]
    modalities = ["video", "image", "text"]
    with torch.no_grad():
        batch = tower.encode_batch(items, modalities)
        flat = tower(torch.cat(items))
        alone = tower.encode_batch(items[:1], ["video"])
    assert isinstance(batch, VisualBatch)
    assert batch.features.shape == (FRAMES + 2, side, side, width) and batch.grid == (side, side)
    assert batch.frames_per_item == [FRAMES, 1, 1] and batch.modalities == modalities
    assert flat.shape == (FRAMES + 2, side * side, width)
    torch.testing.assert_close(batch.features.flatten(1, 2), flat, atol=ATOL, rtol=0)
    torch.testing.assert_close(alone.features, batch.features[:FRAMES], atol=1e-5, rtol=0)
    if batch.dense_embeds is not None:
        assert batch.dense_embeds.shape[:3] == batch.features.shape[:3]
    json.dumps(tower.full_config)  # saved into config.json as mm_vision_tower_config


@pytest.mark.parametrize("name, example", TOWER_CASES)
def test_vision_tower_image_processor(built_tower, name, example):
    """Decoded frames of any shape -> ``image_processor`` -> pixels at the tower's input size -> the tower."""
    tower = built_tower(example)
    frames = np.random.default_rng(0).integers(0, 256, size=(FRAMES, 40, 72, 3), dtype=np.uint8)  # not square
    for aspect in (None, "pad"):
        pixels = process_video_frames(frames, tower.image_processor, aspect)
        per_encoder = pixels if isinstance(pixels, dict) else {"primary": pixels}
        for encoder, values in per_encoder.items():
            assert isinstance(values, torch.Tensor) and values.ndim == 4 and values.shape[1] == 3, (aspect, encoder)
        if not isinstance(pixels, dict):
            assert pixels.shape == (FRAMES, 3, tower.config.image_size, tower.config.image_size), aspect
        with torch.no_grad():
            batch = tower.encode_batch([pixels], ["video"])
        side = tower.num_patches_per_side
        assert batch.features.shape == (FRAMES, side, side, tower.hidden_size) and batch.frames_per_item == [FRAMES]


# ----------------------------------------------------------------------------- token reducers


def _reducer_settings(name: str, example: dict) -> tuple[str, dict]:
    return example.get("mm_token_reducer", name), dict(example.get("mm_token_reducer_config") or {})


@pytest.mark.parametrize("name, example", REDUCER_CASES)
def test_token_reducer_contract(built, name, example):
    """Options rebuild the reducer; ``num_visual_tokens`` counts what is spliced under it."""
    _, tokenizer, model, _ = built("mlp_gelu", {"mm_projector_type": "mlp2x_gelu"})
    reducer_name, options = _reducer_settings(name, example)
    side = _side(model)
    plain = {key: model.num_visual_tokens(*key) for key in ((1, "video"), (FRAMES, "video"), (1, "image"))}
    reducer = model.get_model().set_token_reducer(reducer_name, options)
    try:
        assert reducer is not None and reducer.stage in STAGES
        resolved = reducer.options()
        json.dumps(resolved)  # written to config.json
        assert build_token_reducer(reducer_name, resolved).options() == resolved
        assert model.config.mm_token_reducer == reducer_name
        ids = _prompt(tokenizer, VIDEO_Q)[None]
        for frames, modality in plain:
            expected, tokens, embeds = _counted_and_spliced(model, ids, frames, modality, side)
            assert 0 < expected <= plain[frames, modality], (frames, modality)
            assert tokens.shape[0] == expected, (frames, modality)
            assert embeds.shape[1] == ids.shape[1] - 1 + expected, (frames, modality)
            if reducer.stage not in ("features", "tokens"):
                assert expected == plain[frames, modality]  # in-LLM stages leave the LLM input alone
    finally:
        model.get_model().set_token_reducer(None)


@pytest.mark.parametrize("name, example", REDUCER_CASES)
def test_token_reducer_generate_and_round_trip(built, name, example, tmp_path):
    """``generate`` runs under the reducer; a saved model rebuilds it and generates the same tokens."""
    _, tokenizer, model, _ = built("mlp_gelu", {"mm_projector_type": "mlp2x_gelu"})
    reducer_name, options = _reducer_settings(name, example)
    ids = _prompt(tokenizer, VIDEO_Q)[None]
    kwargs = dict(images=[_pixels(FRAMES, _side(model), 13)], modalities=["video"], max_new_tokens=NEW_TOKENS,
                  do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    reducer = model.get_model().set_token_reducer(reducer_name, options)
    try:
        tokens = model.generate(ids, **kwargs)
        model.save_pretrained(tmp_path)
        tokenizer.save_pretrained(tmp_path)
    finally:
        model.get_model().set_token_reducer(None)
    assert tokens.shape == (1, NEW_TOKENS)
    _, again, _, _ = load_pretrained_model(str(tmp_path), None, "x", device_map="cpu", torch_dtype="float32")
    rebuilt = again.get_model().get_token_reducer()
    assert type(rebuilt) is type(reducer) and rebuilt.options() == reducer.options()
    assert torch.equal(again.generate(ids, **kwargs), tokens)
