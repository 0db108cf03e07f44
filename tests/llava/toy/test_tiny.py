"""The tiny checkpoints: they reload with the real classes, give the same numbers, and build idempotently."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    Qwen2ForCausalLM,
    Qwen2Tokenizer,
    SiglipModel,
    SiglipTokenizer,
)

from llava.model.multimodal_encoder.siglip_processor import SigLipImageProcessor
from llava.toy import tiny

REPO_ROOT = Path(__file__).resolve().parents[3]


def _seeded(build, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ---- SigLIP -------------------------------------------------------------------------------------


def test_siglip_reloads_with_the_same_logits(tiny_dir):
    folder = tiny_dir / tiny.SIGLIP_DIRNAME
    reloaded = SiglipModel.from_pretrained(folder).eval()
    before_saving = _seeded(lambda: SiglipModel(tiny.tiny_siglip_config(tiny.SIGLIP_SP_VOCAB_SIZE))).eval()

    video = np.random.default_rng(0).integers(0, 256, (2, 40, 70, 3), dtype=np.uint8)
    pixel_values = SigLipImageProcessor.from_pretrained(folder)(video)["pixel_values"]
    tokenizer = SiglipTokenizer.from_pretrained(folder)
    text = tokenizer(["describe the red triangle", "a dog chases a frisbee"], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        out = reloaded(input_ids=text["input_ids"], pixel_values=pixel_values)
        ref = before_saving(input_ids=text["input_ids"], pixel_values=pixel_values)

    assert out.logits_per_image.shape == (2, 2)
    assert torch.equal(out.logits_per_image, ref.logits_per_image)
    assert torch.isfinite(out.logits_per_image).all()
    # 56 px / patch 8 -> a 7x7 grid of width 32, pooled by the MAP head like so400m.
    assert out.vision_model_output.last_hidden_state.shape == (2, 49, 32)
    assert reloaded.vision_model.head is not None
    assert out.image_embeds.shape == out.text_embeds.shape == (2, 32)


def _token_id_warnings(caplog, work) -> list[str]:
    """The token-id warnings transformers logs while ``work()`` runs (its once-only cache cleared first,
    so an earlier test that already saw one does not hide it here)."""
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()
    library = hf_logging.get_logger("transformers")
    library.addHandler(caplog.handler)  # transformers' root logger does not propagate to pytest's
    try:
        with caplog.at_level(logging.WARNING, logger="transformers"):
            work()
    finally:
        library.removeHandler(caplog.handler)
    return [r.getMessage() for r in caplog.records if "must be `None` or an integer within the vocabulary" in r.getMessage()]


def test_saving_the_tiny_siglip_shows_no_warning_about_the_library_defaults(tmp_path, caplog):
    model = SiglipModel(tiny.tiny_siglip_config(300))
    # the plain save warns: transformers builds SiglipTextConfig() (bos 49406, vocabulary 32,000) to diff against
    assert _token_id_warnings(caplog, lambda: model.save_pretrained(tmp_path / "plain"))
    caplog.clear()
    assert _token_id_warnings(caplog, lambda: tiny.save_siglip(model, tmp_path / "ours")) == []
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["text_config"]["bos_token_id"] is None
    # a wrong id of our own still warns
    caplog.clear()
    model.config.text_config.eos_token_id = 500
    warned = _token_id_warnings(caplog, lambda: tiny.save_siglip(model, tmp_path / "bad"))
    assert any("got 500" in message for message in warned)


def test_siglip_config_has_the_tiny_dims(tiny_dir):
    config = json.loads((tiny_dir / tiny.SIGLIP_DIRNAME / "config.json").read_text())
    assert config["model_type"] == "siglip"
    assert {k: config["vision_config"][k] for k in tiny.SIGLIP_VISION_DIMS} == dict(tiny.SIGLIP_VISION_DIMS)
    assert {k: config["text_config"][k] for k in tiny.SIGLIP_TEXT_DIMS} == dict(tiny.SIGLIP_TEXT_DIMS)
    assert config["vision_config"]["vision_use_head"] is True
    assert config["text_config"]["vocab_size"] == tiny.SIGLIP_SP_VOCAB_SIZE == 300
    assert config["text_config"]["pad_token_id"] == 1  # "</s>", as in real SigLIP


def test_siglip_tokenizer_lowercases_appends_eos_and_pads_to_64(tiny_dir):
    folder = tiny_dir / tiny.SIGLIP_DIRNAME
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert isinstance(tokenizer, SiglipTokenizer)
    assert len(tokenizer) == tokenizer.vocab_size == 300
    assert (tokenizer.pad_token, tokenizer.pad_token_id, tokenizer.eos_token_id) == ("</s>", 1, 1)
    assert tokenizer.model_max_length == 64

    ids = tokenizer("Describe the RED triangle!")["input_ids"]
    assert ids == tokenizer("describe the red triangle")["input_ids"]
    assert ids[-1] == 1 and ids.count(1) == 1
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "describe the red triangle"

    padded = tokenizer("a dog chases a frisbee", padding="max_length")
    assert len(padded["input_ids"]) == 64
    n_real = sum(padded["attention_mask"])
    assert padded["input_ids"][n_real - 1 :] == [1] * (64 - n_real + 1)  # eos, then "</s>" padding


# ---- Qwen2 --------------------------------------------------------------------------------------


def test_qwen2_reloads_with_the_same_logits(tiny_dir):
    folder = tiny_dir / tiny.QWEN2_DIRNAME
    reloaded = Qwen2ForCausalLM.from_pretrained(folder).eval()
    config = tiny.tiny_qwen2_config(1008, endoftext_id=1000, im_end_id=1002)
    before_saving = _seeded(lambda: Qwen2ForCausalLM(config)).eval()

    input_ids = torch.tensor([[1001, 5, 77, 300, 999, 1002, 1000]])
    with torch.no_grad():
        logits = reloaded(input_ids=input_ids).logits
        ref = before_saving(input_ids=input_ids).logits
    assert logits.shape == (1, 7, 1008)
    assert torch.equal(logits, ref)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()  # tied

    saved = reloaded.config
    assert {k: getattr(saved, k) for k in tiny.QWEN2_DIMS} == dict(tiny.QWEN2_DIMS)
    assert saved.rope_parameters["rope_theta"] == tiny.QWEN2_ROPE_THETA == 1e6
    assert (saved.bos_token_id, saved.eos_token_id) == (1000, 1002)


def test_qwen2_generation_config_stops_on_either_end_token(tiny_dir):
    generation = GenerationConfig.from_pretrained(tiny_dir / tiny.QWEN2_DIRNAME)
    assert generation.eos_token_id == [1002, 1000]
    assert generation.pad_token_id == 1000
    assert generation.do_sample is False


def test_qwen2_tokenizer_is_chatml_with_qwen_special_tokens(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / tiny.QWEN2_DIRNAME)
    assert isinstance(tokenizer, Qwen2Tokenizer)
    assert len(tokenizer) == 1003 and tiny.embedding_rows(len(tokenizer)) == 1008
    assert tokenizer.convert_tokens_to_ids(list(tiny.QWEN2_SPECIAL_TOKENS)) == [1000, 1001, 1002]
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 1000)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 1002)
    assert tokenizer.bos_token is None
    assert tokenizer.model_max_length == 4096
    assert tokenizer.padding_side == "right"

    assert tokenizer("<|im_start|>")["input_ids"] == [1001]
    assert tokenizer("<|im_end|>")["input_ids"] == [1002]
    # LLaVA splices <image> as id -200 by splitting the text: it must never be one token.
    assert "<image>" not in tokenizer.get_vocab()
    assert len(tokenizer("<image>")["input_ids"]) > 1

    text = "What color is the red triangle?\nA. red\nB. blue\nThe answer is 42."
    ids = tokenizer(text)["input_ids"]
    assert max(ids) < 1000  # all ordinary tokens
    assert tokenizer.decode(ids) == text

    batch = tokenizer(["Hello!", "Describe the video in detail."], padding=True)
    assert batch["input_ids"][0][-1] == 1000 and batch["attention_mask"][0][-1] == 0


def test_qwen2_chat_template_renders_chatml(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / tiny.QWEN2_DIRNAME)
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the person doing?"},
        {"role": "assistant", "content": "Walking."},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is the person doing?<|im_end|>\n"
        "<|im_start|>assistant\nWalking.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


# ---- building -----------------------------------------------------------------------------------


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_weights_depend_on_the_seed_only(tiny_dir, tmp_path):
    same = tiny.make_all(tmp_path / "same", seed=0, parts=("siglip", "qwen2"))
    other = tiny.make_all(tmp_path / "other", seed=1, parts=("siglip", "qwen2"))

    for part, dirname in (("siglip", tiny.SIGLIP_DIRNAME), ("qwen2", tiny.QWEN2_DIRNAME)):
        reference = _weights(tiny_dir / dirname)
        rebuilt, reseeded = _weights(same[part]), _weights(other[part])
        assert reference.keys() == rebuilt.keys() == reseeded.keys()
        assert all(torch.equal(reference[k], rebuilt[k]) for k in reference)
        assert not all(torch.equal(reference[k], reseeded[k]) for k in reference)
    # The tokenizers do not depend on the seed.
    assert (same["siglip"] / "spiece.model").read_bytes() == (other["siglip"] / "spiece.model").read_bytes()
    assert (same["qwen2"] / "tokenizer.json").read_bytes() == (other["qwen2"] / "tokenizer.json").read_bytes()


def test_incomplete_part_is_rebuilt_and_force_rebuilds_all(tmp_path):
    folders = tiny.make_all(tmp_path, parts=("siglip", "qwen2"))
    (folders["siglip"] / "model.safetensors").unlink()
    weights = folders["qwen2"] / "model.safetensors"
    built = weights.read_bytes()
    weights.write_bytes(built[:-8] + b"\0" * 8)  # complete, but not what the builder wrote

    tiny.make_all(tmp_path, parts=("siglip", "qwen2"))
    assert (folders["siglip"] / "model.safetensors").is_file()
    assert weights.read_bytes() != built  # a complete part is left as it is

    tiny.make_all(tmp_path, parts=("qwen2",), force=True)
    assert weights.read_bytes() == built  # force rebuilds it
    assert sorted(p.name for p in tmp_path.iterdir()) == [tiny.QWEN2_DIRNAME, tiny.SIGLIP_DIRNAME]  # no leftovers


def test_make_all_rejects_unknown_parts_and_llava_without_its_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown parts"):
        tiny.make_all(tmp_path, parts=("clip",))
    with pytest.raises(FileNotFoundError, match=tiny.SIGLIP_DIRNAME):
        tiny.make_all(tmp_path, parts=("llava_qwen",))


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_cli_twice_is_idempotent(tmp_path):
    out = tmp_path / "tiny"
    command = [sys.executable, "-m", "llava.toy.tiny", "--out", str(out)]
    first = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before = _snapshot(out)
    assert {name.split("/")[0] for name in before} >= {tiny.SIGLIP_DIRNAME, tiny.QWEN2_DIRNAME}

    second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert _snapshot(out) == before
    assert second.stderr.count("is complete; skipping") == len(tiny.PARTS)
    assert "built" not in second.stderr


# ---- LLaVA-Qwen ---------------------------------------------------------------------------------


def test_llava_folder_is_assembled_from_the_tiny_parts(tiny_dir, tiny_llava_dir):
    config = json.loads((tiny_llava_dir / "config.json").read_text())
    assert config["model_type"] == "llava_qwen"
    assert config["mm_projector_type"] == "mlp2x_gelu"
    assert Path(config["mm_vision_tower"]) == (tiny_dir / tiny.SIGLIP_DIRNAME).resolve()
    assert config["hidden_size"] == tiny.QWEN2_DIMS["hidden_size"]


def test_weight_files_are_as_readable_as_the_configs(tiny_dir):
    for dirname in (tiny.SIGLIP_DIRNAME, tiny.QWEN2_DIRNAME, tiny.LLAVA_QWEN_DIRNAME):
        folder = tiny_dir / dirname
        assert (folder / "model.safetensors").stat().st_mode & 0o777 == (folder / "config.json").stat().st_mode & 0o777
