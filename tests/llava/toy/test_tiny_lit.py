"""The LiT-tuned tiny SigLIP: locked vision tower, a text tower that tells the instructions apart."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, SiglipModel

from llava.toy.synthetic import COLORS, color_question
from llava.toy.tiny import SIGLIP_DIRNAME
from llava.toy.tiny_lit import LIT_DIRNAME, RECORD_NAME, TEXT_LENGTH, LitSettings, lit_texts, make_lit_siglip

SHORT = LitSettings(steps=400, batch=32)


@pytest.fixture(scope="module")
def lit_dir(tmp_path_factory, tiny_dir):
    tiny = tmp_path_factory.mktemp("lit")
    shutil.copytree(tiny_dir / SIGLIP_DIRNAME, tiny / SIGLIP_DIRNAME)
    return make_lit_siglip(tiny, SHORT)


def test_texts_fit_the_text_tower_and_name_what_they_require(tiny_dir):
    texts, refs = lit_texts()
    assert len(texts) == len(refs) == len(set(texts))
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / SIGLIP_DIRNAME)
    for text, (rim, centre) in zip(texts, refs):
        assert len(tokenizer(text)["input_ids"]) <= TEXT_LENGTH, text  # nothing is cut off
        assert rim is None or f"{rim} tile" in text
        assert centre is None or f"{centre} centre" in text
    assert {color_question(rim) for rim in COLORS} <= set(texts)  # the eval's own questions


def test_vision_tower_is_locked_and_the_folder_is_a_siglip(lit_dir, tiny_dir):
    model = SiglipModel.from_pretrained(lit_dir)
    assert model.config.text_config.max_position_embeddings == TEXT_LENGTH
    source = load_file(tiny_dir / SIGLIP_DIRNAME / "model.safetensors")
    tuned = load_file(lit_dir / "model.safetensors")
    trunk = [k for k in source if k.startswith("vision_model.") and ".head." not in k]
    assert trunk and all(torch.equal(source[k], tuned[k]) for k in trunk)
    assert any(not torch.equal(source[k], tuned[k]) for k in source if ".head." in k)  # the head was tuned
    for name in ("preprocessor_config.json", "spiece.model", "tokenizer_config.json"):
        assert (lit_dir / name).is_file()


def _largest_question_cosine(folder, tokenizer) -> float:
    """Largest cosine between the pooled text embeddings of two eval questions naming different rims."""
    model = SiglipModel.from_pretrained(folder).eval()
    ids = tokenizer([color_question(rim) for rim in COLORS], padding="max_length", truncation=True,
                    max_length=model.config.text_config.max_position_embeddings, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        pooled = torch.nn.functional.normalize(model.text_model(input_ids=ids).pooler_output, dim=-1)
    return (pooled @ pooled.T - 2 * torch.eye(len(COLORS))).max().item()


def test_instructions_naming_different_tiles_come_apart(lit_dir, tiny_dir):
    """Recomputed from the saved towers (not read from lit.json): a random text tower gives every question
    the same embedding; the tuned one tells them apart, and a held-out tile patch retrieves its rim."""
    import random

    from llava.model.multimodal_encoder.siglip_encoder import dense_patch_embeddings
    from llava.toy.tiny_lit import _batch

    tokenizer = AutoTokenizer.from_pretrained(lit_dir)
    assert _largest_question_cosine(tiny_dir / SIGLIP_DIRNAME, tokenizer) > 0.95
    after = _largest_question_cosine(lit_dir, tokenizer)
    assert after < 0.8
    assert after == pytest.approx(json.loads((lit_dir / RECORD_NAME).read_text())["max_instruction_cosine"]["after"],
                                  abs=1e-3)

    texts, refs = lit_texts()
    rims = [k for k, ref in enumerate(refs) if ref[1] is None][::3]  # "the {rim} tile", in COLORS order
    assert [refs[k][0] for k in rims] == list(COLORS)
    held_out = LitSettings(steps=1, batch=64, seed=12345)
    pixels, _, labels, tiles = _batch(random.Random(held_out.seed), held_out, refs,
                                      torch.Generator().manual_seed(held_out.seed))
    model = SiglipModel.from_pretrained(lit_dir).eval()
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=TEXT_LENGTH, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        vision = model.vision_model(pixel_values=pixels)
        patches = torch.nn.functional.normalize(dense_patch_embeddings(model.vision_model, vision.last_hidden_state), dim=-1)
        text = torch.nn.functional.normalize(model.text_model(input_ids=ids).pooler_output, dim=-1)
    scores = (patches @ text.T)[tiles][:, rims]
    truth = labels[tiles][:, rims].argmax(-1)
    accuracy = (scores.argmax(-1) == truth).float().mean().item()
    assert accuracy > 0.5, accuracy  # chance is 1/5


def test_reused_when_settings_match_and_rebuilt_when_not(lit_dir):
    tiny = lit_dir.parent
    stamp = (lit_dir / RECORD_NAME).stat().st_mtime_ns
    assert make_lit_siglip(tiny, SHORT) == lit_dir
    assert (lit_dir / RECORD_NAME).stat().st_mtime_ns == stamp
    other = LitSettings(steps=2, batch=4)
    make_lit_siglip(tiny, other)
    assert json.loads((lit_dir / RECORD_NAME).read_text())["settings"]["steps"] == 2
    assert not (tiny / f".{LIT_DIRNAME}.partial").exists()


def test_missing_source_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=SIGLIP_DIRNAME):
        make_lit_siglip(tmp_path)
