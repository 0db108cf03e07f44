"""Training output -> a self-contained, portable HF checkpoint folder with a model card.

    python -m llava.export --src checkpoints/run/stage3 --out hf/my-model
    python -m llava.export --src checkpoints/run/stage2 --base-llm playground/models/Qwen2.5-7B-Instruct \\
        --vision-tower playground/models/siglip-so400m-patch14-384 --out hf/stage2-model
    python -m llava.export --src checkpoints/run/stage3/checkpoint-500 --out hf/step500

Sources: a full stage output or ``checkpoint-N`` (``model*.safetensors``); a ``checkpoint-N`` that
only has DeepSpeed ZeRO shards (``global_step*/``; consolidated here, read with
``weights_only=True``); or an adapter-only stage output (``mm_projector.bin``) plus ``--base-llm``.

The folder gets safetensors shards, ``config.json`` (``model_type`` ``llava_qwen``/``llava_llama``:
``import llava`` registers the Auto classes, no remote code), the LLM tokenizer, the image processor,
what plugins add (``Plugin.export_files``, e.g. a text tokenizer), and a ``README.md`` model card
(with each plugin's section, ``Plugin.model_card``). Paths in ``config.json`` are reduced to names; no pickle file is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

import torch

from llava.model.builder import config_from_folder, load_pretrained_model, model_family, read_model_config
from llava.plugin import param_groups, plugins

logger = logging.getLogger(__name__)

#: training-record LR flags the model card always shows (plugin groups' flags are added per group)
CORE_LR_FLAGS = ("learning_rate", "mm_projector_lr", "mm_vision_tower_lr")
#: config keys that name folders of the machine the model was trained on
PATH_KEYS = ("mm_vision_tower", "mm_text_tower", "vision_tower_pretrained", "_name_or_path", "name_or_path")


class ExportError(RuntimeError):
    pass


# --------------------------------------------------------------------------- ZeRO shards


def _zero_tag(checkpoint: Path) -> Path:
    latest = checkpoint / "latest"
    tag = latest.read_text().strip() if latest.is_file() else None
    folders = sorted(checkpoint.glob("global_step*"))
    folder = checkpoint / tag if tag else (folders[-1] if folders else None)
    if folder is None or not folder.is_dir():
        raise ExportError(f"{checkpoint}: no DeepSpeed global_step* folder")
    return folder


def _safe_load(path: Path) -> dict:
    """A DeepSpeed shard through ``torch.load(weights_only=True)`` with DeepSpeed's few plain types
    allowed; nothing else can be unpickled."""
    allowed = []
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed = [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
    except ImportError:
        pass
    with torch.serialization.safe_globals(allowed):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - name the file and why
            raise ExportError(f"{path}: cannot read the DeepSpeed shard safely ({err})") from err


def consolidate_zero3(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """fp32 weights of every parameter from a ZeRO-3 checkpoint's per-rank shards (trainable ones from
    the optimizer's fp32 partitions, frozen ones from their saved fragments) plus buffers."""
    folder = _zero_tag(Path(checkpoint))
    model_files = sorted(folder.glob("zero_pp_rank_*_mp_rank_00_model_states.pt"),
                         key=lambda p: int(p.name.split("_")[3]))
    optim_files = sorted(folder.glob("*zero_pp_rank_*_mp_rank_00_optim_states.pt"),
                         key=lambda p: int(re.search(r"zero_pp_rank_(\d+)", p.name)[1]))
    if not model_files or len(model_files) != len(optim_files):
        raise ExportError(f"{folder}: expected one model and one optimizer shard per rank, found "
                          f"{len(model_files)} and {len(optim_files)}")
    world = len(model_files)
    models = [_safe_load(p) for p in model_files]
    optims = [_safe_load(p)["optimizer_state_dict"] for p in optim_files]
    if int(optims[0].get("zero_stage", 0)) != 3:  # an int, or DeepSpeed's ZeroStageEnum (an IntEnum)
        raise ExportError(f"{folder}: not a ZeRO-3 checkpoint (zero_stage {optims[0].get('zero_stage')})")
    state: dict[str, torch.Tensor] = dict(models[0].get("buffers", {}))
    for name, shape in (models[0].get("frozen_param_shapes") or {}).items():
        pieces = [m["frozen_param_fragments"][name].flatten() for m in models]
        state[name] = torch.cat(pieces)[: torch.Size(shape).numel()].view(shape).clone()
    flat_groups = [o["fp32_flat_groups"] for o in optims]
    for group, shapes in enumerate(models[0]["param_shapes"]):
        offset = 0
        for name, shape in shapes.items():
            numel = torch.Size(shape).numel()
            part = -(-numel // world)  # ceil: every rank holds one padded slice
            pieces = [flat_groups[rank][group].flatten()[offset:offset + part] for rank in range(world)]
            state[name] = torch.cat(pieces)[:numel].view(shape).clone()
            offset += part
    return state


# --------------------------------------------------------------------------- the model


def _source_kind(src: Path, base_llm) -> str:
    if any(src.glob("model*.safetensors")):
        return "full"
    if (src / "mm_projector.bin").is_file():
        if base_llm is None:
            raise ExportError(f"{src} is an adapter-only stage output (mm_projector.bin): pass --base-llm")
        return "adapter"
    if any(src.glob("global_step*")):
        return "zero3"
    raise ExportError(f"{src}: no model*.safetensors, mm_projector.bin or DeepSpeed global_step* folder")


def load_training_output(src: str | Path, base_llm=None, vision_tower=None, dtype="float32"):
    """``(tokenizer, model, image_processor)`` rebuilt from a training output (module docstring)."""
    src = Path(src)
    if not src.is_dir():
        raise ExportError(f"{src}: no such folder")
    kind = _source_kind(src, base_llm)
    overwrite = {"mm_vision_tower": str(vision_tower)} if vision_tower else None
    tokenizer_from = src if (src / "tokenizer_config.json").is_file() else (base_llm or src.parent)
    if kind == "zero3":
        return _from_zero3(src, tokenizer_from, overwrite, dtype)
    tokenizer, model, processor, _ = load_pretrained_model(
        str(src), str(base_llm) if kind == "adapter" else None, None, device_map="cpu", torch_dtype=dtype,
        overwrite_config=overwrite)
    if kind == "full" and tokenizer_from != src:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    return tokenizer, model, processor


def _from_zero3(src: Path, tokenizer_from, overwrite, dtype):
    from transformers import AutoTokenizer

    from llava.model.builder import resolve_dtype

    raw = read_model_config(src)
    family = model_family(raw, src)
    if family is None:
        raise ExportError(f"{src}: config.json is not a LLaVA model")
    config = config_from_folder(family.config_class, src)
    for key, value in (overwrite or {}).items():
        setattr(config, key, value)
    model = family.model_class(config)
    state = consolidate_zero3(src)
    result = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise ExportError(f"{src}: ZeRO shards do not match the model; missing {missing[:5]}, "
                          f"unexpected {result.unexpected_keys[:5]}")
    for module in model.modules():
        if hasattr(module, "load_model") and hasattr(module, "is_loaded"):
            module.is_loaded = True
    model.to(resolve_dtype(dtype)).eval()
    tower = model.get_vision_tower()
    return AutoTokenizer.from_pretrained(tokenizer_from), model, tower.image_processor if tower else None


# --------------------------------------------------------------------------- the folder


def portable_config(config) -> list[str]:
    """Reduces machine paths in the config to their last component; returns the keys changed."""
    changed = []
    for key in PATH_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, str) and ("/" in value or "\\" in value):
            setattr(config, key, Path(value).name)
            changed.append(key)
    return changed


def _training_records(src: Path) -> list[dict]:
    """The stage records of this run, earliest first, following ``pretrain_mm_mlp_adapter`` back."""
    records, folder, seen = [], src, set()
    while folder is not None and folder not in seen:
        seen.add(folder)
        candidates = [folder / "training_record.json", folder.parent / "training_record.json"]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            break
        record = json.loads(path.read_text())
        records.append(record)
        adapter = record.get("pretrain_mm_mlp_adapter")
        folder = Path(adapter).parent if adapter else None
    return records[::-1]


def export(src, out, base_llm=None, vision_tower=None, dtype="float32", max_shard_size="2GB") -> Path:
    src, out = Path(src), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty")
    tokenizer, model, processor = load_training_output(src, base_llm, vision_tower, dtype)
    config = model.config
    out.mkdir(parents=True, exist_ok=True)
    for plugin in plugins():
        if plugin.export_files is not None:
            plugin.export_files(model, out)
    changed = portable_config(config)
    config.use_cache = True
    model.save_pretrained(out, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out)
    if processor is not None:
        processor.save_pretrained(out)
    records = _training_records(src)
    (out / "README.md").write_text(model_card(model, out.name, records))
    _check_folder(out)
    logger.info("exported %s -> %s (portable keys: %s)", src, out, changed)
    return out


def _check_folder(out: Path) -> None:
    pickles = [p.name for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    if pickles:
        raise ExportError(f"{out}: pickle files were written: {pickles}")
    text = (out / "config.json").read_text()
    absolute = re.findall(r'"(/[^"]+)"', text)
    if absolute:
        raise ExportError(f"{out}/config.json still holds absolute paths: {absolute[:3]}")


def _token_table(model) -> list[tuple[int, int]]:
    return [(frames, model.num_visual_tokens(frames, "video")) for frames in (8, 16, 32, 64, 128)]


def model_card(model, name: str, records: list[dict]) -> str:
    """README.md of the exported folder: method, token budget, training as recorded, usage."""
    config = model.config
    lines = [f"# {name}", "", f"Video LLM with the projector `{config.mm_projector_type}`, built with this "
             f"repository's `llava` package (`model_type: {config.model_type}`; `import llava` registers it with "
             "transformers' Auto classes, no remote code).", ""]
    for plugin in plugins():
        if plugin.model_card is not None:
            lines += plugin.model_card(config)
    group_lrs = [(g.name, g.lr_flag) for g in param_groups().values() if g.lr_flag and g.lr_flag not in CORE_LR_FLAGS]
    lines += ["## Visual tokens per video", "", "| frames | visual tokens |", "|---|---|"]
    lines += [f"| {f} | {t} |" for f, t in _token_table(model)]
    frames = getattr(config, "num_frames", None)
    lines += ["", f"Frames per video in training: {frames if frames else 'not recorded (fps sampling)'}.", ""]
    lines += ["## Training", ""]
    if records:
        lines += ["| stage | data | samples | steps | trained parts | LR | loss first → last |", "|---|---|---|---|---|---|---|"]
        for index, r in enumerate(records, 1):
            given = {k: v for args in (r.get("plugin_args") or {}).values() for k, v in args.items()}
            lr = f"{r['learning_rate']:g}" + "".join(f", {part} {given[flag]:g}" for part, flag in group_lrs
                                                     if given.get(flag) is not None)
            loss = (f"{r['first_loss']:.3f} → {r['last_loss']:.3f}" if r.get("first_loss") is not None else "")
            lines.append(f"| {index} | `{Path(r['data_path']).name}` | {r['num_samples']} | {r['steps']} | "
                         f"{r['mm_tunable_parts'] or 'legacy flags'} | {lr} | {loss} |")
        mixtures = [(i, r["data_mixture"]) for i, r in enumerate(records, 1) if r.get("data_mixture")]
        for index, mixture in mixtures:
            lines += ["", f"Stage {index} data mixture:", "", "```yaml", _yaml(mixture), "```"]
    else:
        lines.append("No training record was found next to the exported weights.")
    lines += ["", "## Use", "", "```python", "import llava  # registers llava_qwen / llava_llama",
              "from llava.model.builder import load_pretrained_model",
              f'tokenizer, model, image_processor, _ = load_pretrained_model("{name}", None, "{name}")',
              "```", "", "Chat or one-shot answers about a video:", "", "```bash",
              f"python -m llava.serve.cli --model-path {name} --video-file clip.mp4 --num-frames {frames or 32}",
              "```", "", "Evaluate with the scripts in `scripts/eval/video/` or lmms-eval's `llava_vid` wrapper.", ""]
    return "\n".join(lines)


def _yaml(data) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.export",
                                     description="Export a training output as a self-contained HF folder.")
    parser.add_argument("--src", required=True, help="stage output, checkpoint-N, or adapter-only output")
    parser.add_argument("--out", required=True, help="the folder to write (created; files in it are replaced)")
    parser.add_argument("--base-llm", default=None, help="the LLM an adapter-only output was trained on")
    parser.add_argument("--vision-tower", default=None, help="SigLIP folder, when the recorded path moved")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the exported weights")
    parser.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard, e.g. 2GB or 500MB")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        export(args.src, args.out, args.base_llm, args.vision_tower, args.dtype, args.max_shard_size)
    except (ExportError, FileNotFoundError, KeyError, ValueError, RuntimeError) as err:
        # every loader names the folder/file and the reason (a half-written config.json, corrupt
        # weights, a projector type no installed plugin registers): one line, no traceback
        print(f"export failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["ExportError", "consolidate_zero3", "export", "load_training_output", "model_card", "portable_config"]
