"""load_pretrained_model: class from config, projector-only checkpoints, clear errors on bad input."""

import json
import shutil
import warnings

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import load_pretrained_model, resolve_attn_implementation, resolve_dtype


def _load(path, base=None, **kw):
    return load_pretrained_model(str(path), None if base is None else str(base), "ignored", device_map="cpu",
                                 torch_dtype="float32", **kw)


def _logits(model, tokens=(5, 6, IMAGE_TOKEN_INDEX, 7)):
    ids = torch.tensor([list(tokens)])
    torch.manual_seed(0)
    image = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        return model(input_ids=ids, images=[image], modalities=["image"]).logits


def test_returns_upstream_tuple(tiny_dir):
    tokenizer, model, processor, context_len = _load(tiny_dir / "tiny-llava-qwen")
    assert type(model).__name__ == "LlavaQwenForCausalLM"
    assert processor.crop_size["height"] == 56
    assert context_len == model.config.max_position_embeddings
    assert not model.training


def test_class_comes_from_config_not_folder_name(tiny_dir, tmp_path):
    """A folder named like a LLaMA model, with OneVision's published model_type 'llava'."""
    target = tmp_path / "vicuna-llama-7b"
    shutil.copytree(tiny_dir / "tiny-llava-qwen", target)
    config = json.loads((target / "config.json").read_text())
    config["model_type"] = "llava"
    (target / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings():  # the legacy keys we write for transformers-4 readers cost no warning
        warnings.simplefilter("error", FutureWarning)
        _, model, _, _ = _load(target)
    assert type(model).__name__ == "LlavaQwenForCausalLM"
    _, reference, _, _ = _load(tiny_dir / "tiny-llava-qwen")
    assert torch.equal(_logits(model), _logits(reference))


def test_projector_only_checkpoint_with_model_base(tiny_dir, tmp_path):
    _, full, _, _ = _load(tiny_dir / "tiny-llava-qwen")
    stage = tmp_path / "stage1"
    stage.mkdir()
    shutil.copy(tiny_dir / "tiny-llava-qwen" / "config.json", stage / "config.json")
    state = {k: v for k, v in full.state_dict().items() if "mm_projector" in k}
    assert state and all(k.startswith("model.mm_projector.") for k in state)
    torch.save(state, stage / "mm_projector.bin")
    _, model, _, _ = _load(stage, base=tiny_dir / "qwen2-tiny")
    assert torch.equal(_logits(model), _logits(full))

    (stage / "mm_projector.bin").unlink()
    with pytest.raises(FileNotFoundError, match="mm_projector.bin"):
        _load(stage, base=tiny_dir / "qwen2-tiny")


def test_plain_llm_loads_without_multimodal(tiny_dir):
    _, model, processor, _ = _load(tiny_dir / "qwen2-tiny", multimodal=False)
    assert type(model).__name__ == "Qwen2ForCausalLM" and processor is None


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        _load(tmp_path / "no_such_model")


def test_corrupt_config_is_named(tiny_dir, tmp_path):
    target = tmp_path / "broken"
    shutil.copytree(tiny_dir / "tiny-llava-qwen", target)
    (target / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        _load(target)


def test_missing_weights_are_reported(tiny_dir, tmp_path):
    target = tmp_path / "noweights"
    target.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (tiny_dir / "tiny-llava-qwen" / name).exists():
            shutil.copy(tiny_dir / "tiny-llava-qwen" / name, target / name)
    with pytest.raises(RuntimeError, match="noweights: cannot load the model weights"):
        _load(target)


def test_truncated_weights_fail_loudly(tiny_dir, tmp_path):
    target = tmp_path / "truncated"
    shutil.copytree(tiny_dir / "tiny-llava-qwen", target)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(RuntimeError, match="truncated.*cannot load the model weights"):
        _load(target)


def test_dtype_and_attention_resolution():
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("torch.float16") is torch.float16
    with pytest.raises(ValueError, match="float64x"):
        resolve_dtype("float64x")
    if not torch.cuda.is_available():
        assert resolve_attn_implementation(None) == "sdpa"
        assert resolve_attn_implementation("None") == "sdpa"
        assert resolve_attn_implementation("flash_attention_2") == "sdpa"
    assert resolve_attn_implementation("eager") == "eager"


def test_an_llm_folder_grows_into_its_llava_config_without_a_warning(tiny_dir):
    """qwen2 -> llava_qwen by design: transformers' "model of type qwen2 to instantiate llava_qwen"
    warning is not given (and the values are the LLM's)."""
    from llava.model.builder import config_from_folder
    from llava.model.language_model.llava_qwen import LlavaQwenConfig
    from tests.helpers.hf_warnings import transformers_warnings

    with transformers_warnings() as messages:
        config = config_from_folder(LlavaQwenConfig, tiny_dir / "qwen2-tiny")
    raw = json.loads((tiny_dir / "qwen2-tiny" / "config.json").read_text())
    assert messages == [] and config.model_type == "llava_qwen"
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (
        raw["hidden_size"], raw["num_hidden_layers"], raw["vocab_size"])
