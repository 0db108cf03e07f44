"""Importer for MERV's released checkpoints (``<id>/checkpoints/latest-checkpoint.pt``).

The file is ``{"model": {module key: state dict}}`` (``merv/models/vidlms/merv.py`` ``from_pretrained``,
``merv/training/strategies/fsdp.py``), with these keys mapped onto a ``llava_qwen`` model built with the
MERV tower (same encoders, same order) and ``mm_projector_type: merv``:

================================================  =================================================
MERV                                              here
================================================  =================================================
``projectors.{e}.projector.projector.{w,b}``      ``model.mm_projector.projectors.{e}.{w,b}``
``projector.projector.projector.{w,b}`` (old,     ``model.mm_projector.projectors.0.{w,b}``
single encoder; the loader prefixes ``0.``)
``feature_fusion.Q`` (older files: ``adapter.``)  ``model.mm_projector.mixer.query``
``feature_fusion.attention.q_proj_weight``,       ``mixer.q_proj.weight``, ``mixer.q_proj.bias``
``in_proj_bias[0:D_q]``
``feature_fusion.attention.k_proj_weight``,       ``mixer.k_proj.weight``, ``mixer.k_proj.bias``
``in_proj_bias[D_q:2 D_q]``
``feature_fusion.attention.v_proj_weight``,       dropped: MERV discards the attention output
``in_proj_bias[2 D_q:]``, ``attention.out_proj.*``
``feature_fusion.scalar`` (``scalar`` fusion)     ``mixer.scalar``
``feature_fusion.projector.{w,b}``                ``mixer.projector.{w,b}``
(``concat_channel``)
``llm_backbone.llm.<HF key>``                     ``<HF key>`` (``model.layers.*``, ``lm_head.*``)
================================================  =================================================

Encoder weights are not in the file (they are frozen; the tower reads its folders). Anything else is an
error naming the tensors: a missing target tensor, an unexpected source tensor, a shape mismatch. With
``trim_vocab`` an embedding/LM head with more rows than the target (MERV pads Llama-2's 32001 rows to
32064) keeps its first rows. The layout was written from the public code, not checked on a downloaded
file.
"""

from __future__ import annotations

from pathlib import Path

import torch

PROJECTOR = "model.mm_projector."
TOWER = "model.vision_tower."
DROPPED = ("attention.v_proj_weight", "attention.out_proj.weight", "attention.out_proj.bias")
MODULE_KEYS = ("projectors", "projector", "feature_fusion", "adapter", "llm_backbone", "video_backbone")


def _fusion(source: dict, target: dict) -> tuple[dict, list[str]]:
    """MERV's fusion tensors -> ours, and the source names it did not take."""
    out, left = {}, []
    query_dim = source["Q"].shape[-1] if "Q" in source else None
    for key, value in source.items():
        if key == "Q":
            out[PROJECTOR + "mixer.query"] = value
        elif key == "attention.q_proj_weight":
            out[PROJECTOR + "mixer.q_proj.weight"] = value
        elif key == "attention.k_proj_weight":
            out[PROJECTOR + "mixer.k_proj.weight"] = value
        elif key == "attention.in_proj_bias" and query_dim:
            out[PROJECTOR + "mixer.q_proj.bias"] = value[:query_dim]
            out[PROJECTOR + "mixer.k_proj.bias"] = value[query_dim:2 * query_dim]
        elif key in DROPPED:
            continue
        elif key in ("scalar", "projector.weight", "projector.bias"):
            out[PROJECTOR + "mixer." + key] = value
        else:
            left.append(key)
    return out, left


def convert_merv_state_dict(model_state: dict, target: dict[str, torch.Tensor],
                            trim_vocab: bool = False) -> dict[str, torch.Tensor]:
    """``checkpoint["model"]`` (MERV's layout) -> the target model's names; strict (module docstring).

    Args:
        model_state: ``{module key: {name: tensor}}``.
        target: the target model's ``state_dict()`` (names and shapes).
    """
    unknown_modules = sorted(set(model_state) - set(MODULE_KEYS))
    if unknown_modules:
        raise KeyError(f"MERV checkpoint: unknown module keys {unknown_modules} (known: {list(MODULE_KEYS)})")
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    projectors = dict(model_state.get("projectors") or {})
    projectors.update({"0." + k: v for k, v in (model_state.get("projector") or {}).items()})
    for key, value in projectors.items():
        index, _, rest = key.partition(".projector.projector.")
        if rest in ("weight", "bias") and index.isdigit():
            out[f"{PROJECTOR}projectors.{index}.{rest}"] = value
        else:
            unexpected.append(f"projectors.{key}")
    fusion_key = "feature_fusion" if "feature_fusion" in model_state else "adapter"
    converted, left = _fusion(model_state.get(fusion_key) or {}, target)
    out.update(converted)
    unexpected += [f"{fusion_key}.{k}" for k in left]
    for key, value in (model_state.get("llm_backbone") or {}).items():
        if key.startswith("llm."):
            out[key[len("llm."):]] = value
        else:
            unexpected.append(f"llm_backbone.{key}")
    if model_state.get("video_backbone"):
        unexpected += [f"video_backbone.{k}" for k in model_state["video_backbone"]]
    unexpected += sorted(k for k in out if k not in target)
    wanted = {k for k in target if not k.startswith(TOWER)}
    missing = sorted(wanted - set(out))
    if missing or unexpected:
        raise KeyError(f"MERV checkpoint does not match the model: missing {missing}, unexpected {sorted(unexpected)}")
    for key, value in list(out.items()):
        shape = target[key].shape
        if value.shape != shape and trim_vocab and value.ndim == 2 and value.shape[1:] == shape[1:] \
                and value.shape[0] > shape[0]:
            out[key] = value[: shape[0]]
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in out.items() if v.shape != target[k].shape]
    if mismatched:
        raise ValueError(f"MERV checkpoint: shape mismatch for {mismatched}")
    return out


def load_merv_checkpoint(path: str | Path, model, trim_vocab: bool = False) -> None:
    """Reads a MERV ``.pt`` (``torch.load(weights_only=True)``) into ``model`` (a ``llava_qwen`` with the
    MERV tower and projector); the tower keeps its own weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MERV checkpoint {path} does not exist")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise ValueError(f"{path}: not a MERV checkpoint (expected a dict with a 'model' entry)")
    state = convert_merv_state_dict(raw["model"], model.state_dict(), trim_vocab=trim_vocab)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(TOWER)]
    if missing or result.unexpected_keys:
        raise KeyError(f"{path}: loading left missing {missing}, unexpected {result.unexpected_keys}")
