"""Loading LLaVA checkpoints: ``load_pretrained_model`` with upstream's signature and return value.

The model class comes from ``config.json`` (``model_type``, then ``architectures`` for the ambiguous
``"llava"`` that published OneVision checkpoints carry), never from the folder name. Nothing is
downloaded: every path is a local folder, and weights load through safetensors or
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from .language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from .language_model.llava_qwen import LlavaQwenConfig, LlavaQwenForCausalLM
from .llava_arch import load_projector_weights
from llava.registry import load_plugins
from .weights import read_json, read_tensor_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFamily:
    config_class: type
    model_class: type


#: model_type -> classes. ``register_model_type`` lets plugins add theirs (e.g. a release layout).
MODEL_TYPES: dict[str, ModelFamily] = {
    "llava_qwen": ModelFamily(LlavaQwenConfig, LlavaQwenForCausalLM),
    "llava_llama": ModelFamily(LlavaConfig, LlavaLlamaForCausalLM),
}
#: ``architectures[0]`` -> model_type, for configs whose model_type is ambiguous ("llava", "qwen2").
ARCHITECTURES: dict[str, str] = {
    "LlavaQwenForCausalLM": "llava_qwen",
    "LlavaLlamaForCausalLM": "llava_llama",
}


def register_model_type(model_type: str, config_class: type, model_class: type, architecture: str | None = None):
    """Makes ``load_pretrained_model`` load checkpoints of ``model_type`` with these classes."""
    MODEL_TYPES[model_type] = ModelFamily(config_class, model_class)
    if architecture:
        ARCHITECTURES[architecture] = model_type


_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "fp16": torch.float16,
           "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_dtype(torch_dtype) -> torch.dtype | str:
    if isinstance(torch_dtype, torch.dtype) or torch_dtype == "auto":
        return torch_dtype
    if torch_dtype is None:
        return torch.float32
    if isinstance(torch_dtype, str) and torch_dtype.replace("torch.", "") in _DTYPES:
        return _DTYPES[torch_dtype.replace("torch.", "")]
    raise ValueError(f"torch_dtype {torch_dtype!r} is not one of {sorted(_DTYPES)} or 'auto'")


def flash_attention_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_attn_implementation(requested: str | None) -> str:
    """``sdpa`` unless flash-attn 2 is requested (or left open) and can actually run here."""
    if requested in (None, "None", "", "auto"):
        return "flash_attention_2" if flash_attention_available() else "sdpa"
    if requested == "flash_attention_2" and not flash_attention_available():
        logger.warning("flash_attention_2 requested but flash-attn/CUDA is not available; using sdpa")
        return "sdpa"
    return requested


def read_model_config(model_path: str | Path) -> dict:
    """``config.json`` of a local model folder, with errors that name the folder and the reason."""
    folder = Path(model_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist (models are never downloaded)")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"model folder {folder} has no config.json")
    raw = read_json(config_file)
    if "model_type" not in raw:
        raise ValueError(f"{config_file} has no model_type")
    return raw


def config_from_folder(config_class, folder: str | Path):
    """``config_class`` read from ``folder``'s config.json. An LLM folder's own config (``qwen2``) becomes
    its LLaVA config (``llava_qwen``) without transformers' warning about instantiating one model type
    from another: the LLaVA config is the LLM's plus the multimodal keys, by design."""
    if not issubclass(config_class, PretrainedConfig):  # a plugin's stand-in, e.g. a layout that explains itself
        return config_class.from_pretrained(folder)
    config_dict, _ = config_class.get_config_dict(str(folder))
    return config_class.from_dict({**config_dict, "model_type": config_class.model_type})


def model_family(raw_config: dict, source: str | Path) -> ModelFamily | None:
    """The LLaVA family of a checkpoint, or ``None`` for a plain (text-only) LLM."""
    model_type = raw_config["model_type"]
    load_plugins()  # plugins may register model types (e.g. a release checkpoint layout)
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    for arch in raw_config.get("architectures") or []:
        if arch in ARCHITECTURES:
            return MODEL_TYPES[ARCHITECTURES[arch]]
    if raw_config.get("mm_vision_tower"):
        if model_type in ("llava", "qwen2"):
            return MODEL_TYPES["llava_qwen"]
        if model_type == "llama":
            return MODEL_TYPES["llava_llama"]
        raise ValueError(
            f"{source}: multimodal checkpoint of model_type {model_type!r} has no LLaVA class; "
            f"known: {sorted(MODEL_TYPES)}"
        )
    return None


def _pretrained_parts(model) -> dict[str, torch.nn.Module]:
    """Submodules that can read their own weights from a source folder (``load_model``/``is_loaded``):
    the vision tower, and e.g. a plugin's text tower; keyed by parameter-name prefix."""
    return {
        f"{name}.": module
        for name, module in model.named_modules()
        if name and callable(getattr(module, "load_model", None)) and hasattr(module, "is_loaded")
    }


def _check_loading(info: dict, model, model_path) -> None:
    """Missing weights of pretrained parts are read from their source folders; any other missing
    weight is an error naming the tensors."""
    missing = set(info.get("missing_keys", []))
    parts = _pretrained_parts(model)
    for prefix, part in parts.items():
        part_missing = {k for k in missing if k.startswith(prefix)}
        if part_missing:
            logger.info("%s lacks %d weights of %s; loading them from its source", model_path, len(part_missing),
                        prefix.rstrip("."))
            part.is_loaded = False
            part.load_model()
        else:
            part.is_loaded = True
        part.requires_grad_(False)  # loading materialises fresh parameters; pretrained parts stay frozen
        missing -= part_missing
    if missing:
        raise KeyError(f"{model_path}: checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[:5]}")


def load_pretrained_model(
    model_path,
    model_base,
    model_name,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map="auto",
    torch_dtype="float16",
    attn_implementation=None,
    customized_config=None,
    overwrite_config: dict | None = None,
    multimodal: bool = True,
    **kwargs,
):
    """Returns ``(tokenizer, model, image_processor, context_len)``.

    Args:
        model_path: local folder of a full checkpoint, or of a projector-only stage output
            (``config.json`` + ``mm_projector.bin``) when ``model_base`` is given.
        model_base: the LLM folder a projector-only checkpoint was trained on, else ``None``.
        model_name: kept for upstream callers; it does not choose the class.
        device_map: ``"auto"`` (GPU if there is one, else CPU), ``"cpu"``, ``"cuda:0"``, or a dict.
        torch_dtype: ``"float16" | "bfloat16" | "float32" | torch.dtype | "auto"``.
        attn_implementation: ``None``/``"None"`` picks flash-attn 2 when available, else SDPA.
        overwrite_config: ``{key: value}`` set on the config before the model is built.
    """
    if load_8bit or load_4bit:
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise ImportError("load_8bit/load_4bit need the bitsandbytes package (and a GPU)") from err
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=load_8bit, load_in_4bit=load_4bit)
    dtype = resolve_dtype(kwargs.pop("dtype", torch_dtype))
    attn = resolve_attn_implementation(attn_implementation)
    device = _resolve_device(device_map)

    raw = read_model_config(model_path)
    family = model_family(raw, model_path) if multimodal or raw.get("mm_vision_tower") else None
    weights_from = model_base if model_base is not None else model_path
    tokenizer_from = model_base if model_base is not None else model_path
    load_kwargs = dict(dtype=dtype, attn_implementation=attn, **kwargs)
    if isinstance(device, dict):
        load_kwargs["device_map"] = device

    if family is None:
        model = AutoModelForCausalLM.from_pretrained(weights_from, **load_kwargs)
    else:
        config = customized_config or config_from_folder(family.config_class, model_path)
        for key, value in (overwrite_config or {}).items():
            setattr(config, key, value)
        try:
            model, info = family.model_class.from_pretrained(
                weights_from, config=config, output_loading_info=True, **load_kwargs
            )
        except (OSError, ValueError, RuntimeError, SafetensorError) as err:
            raise RuntimeError(f"{weights_from}: cannot load the model weights ({err})") from err
        if model_base is not None:
            projector_file = Path(model_path) / "mm_projector.bin"
            if not projector_file.is_file():
                raise FileNotFoundError(f"{model_path}: model_base given but there is no mm_projector.bin")
            load_projector_weights(model.get_model().mm_projector, str(projector_file))
            # only what the adapter file holds is provided; parts it leaves out (a frozen text tower)
            # still load from their own folders below
            provided = set(read_tensor_file(projector_file))
            info = {"missing_keys": [k for k in info["missing_keys"] if k not in provided]}
        _check_loading(info, model, model_path)

    tokenizer = _load_tokenizer(tokenizer_from, model_path, model.config if family is not None else None)
    image_processor = None
    tower = model.get_vision_tower() if hasattr(model, "get_vision_tower") else None
    if tower is not None:
        # the checkpoint's own processor settings, read by the tower's processor class
        reader = getattr(type(tower.image_processor), "from_pretrained", None)
        if reader is not None and (Path(model_path) / "preprocessor_config.json").is_file():
            image_processor = reader(model_path)
        else:
            image_processor = tower.image_processor
        tower.to(dtype=next(model.parameters()).dtype)
        model.set_instruction_tokenizer(tokenizer)
    if not isinstance(device, dict):
        model.to(device)
    model.eval()

    config = model.config
    context_len = (
        getattr(config, "max_sequence_length", None)
        or getattr(config, "max_position_embeddings", None)
        or getattr(config, "tokenizer_model_max_length", None)
        or 2048
    )
    return tokenizer, model, image_processor, context_len


def _resolve_device(device_map):
    if isinstance(device_map, dict):
        return device_map
    if device_map in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device_map


def _load_tokenizer(folder, model_path, config=None):
    """The folder's tokenizer. ``config``: the loaded model's, handed over so AutoTokenizer does not rebuild
    one from ``config.json`` (for OneVision's published ``model_type: llava`` that is transformers' own
    Llava config, which warns about the legacy keys we write next to the new ones)."""
    try:
        return AutoTokenizer.from_pretrained(folder, **({"config": config} if config is not None else {}))
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"{model_path}: cannot load a tokenizer from {folder} ({err})") from err


def assemble_llava_qwen(
    llm_path, vision_tower_path, out_dir, mm_projector_type: str = "mlp2x_gelu", seed: int = 0, **config_overrides
) -> Path:
    """Builds a ``llava_qwen`` checkpoint from a Qwen2 LLM folder and a SigLIP folder, and saves it.

    The projector is freshly initialised (seeded); the LLM and tower weights are copied. The result
    loads with ``load_pretrained_model`` and ``AutoModelForCausalLM``.
    """
    out = Path(out_dir)
    torch.manual_seed(seed)
    config = config_from_folder(LlavaQwenConfig, llm_path)
    model, info = LlavaQwenForCausalLM.from_pretrained(llm_path, config=config, output_loading_info=True)
    if info["missing_keys"]:
        raise KeyError(f"{llm_path}: LLM checkpoint lacks {info['missing_keys'][:5]}")
    model_args = SimpleNamespace(
        vision_tower=str(vision_tower_path),
        mm_projector_type=mm_projector_type,
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_patch_merge_type="flat",
        pretrain_mm_mlp_adapter=None,
    )
    tokenizer = AutoTokenizer.from_pretrained(llm_path)
    defaults = dict(
        image_aspect_ratio="pad",
        mm_spatial_pool_mode="average",
        mm_spatial_pool_stride=2,
        mm_newline_position="no_token",
        tokenizer_padding_side="right",
        tokenizer_model_max_length=tokenizer.model_max_length,
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
    )
    for key, value in {**defaults, **config_overrides}.items():
        setattr(model.config, key, value)  # before the projector is built: it may read them
    model.get_model().initialize_vision_modules(model_args)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    model.get_vision_tower().image_processor.save_pretrained(out)
    return out
