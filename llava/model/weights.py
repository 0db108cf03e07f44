"""Reading checkpoint tensors safely: safetensors, or ``torch.load(weights_only=True)``; never pickled code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def _weight_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{index}: not a valid weight index ({err})") from err
            return [folder / name for name in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise FileNotFoundError(f"{folder}: no model.safetensors, pytorch_model.bin or shard index")


def read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one ``.safetensors`` or ``.bin`` file (the latter loaded with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt files surface as many exception types; name the file
        raise ValueError(f"weights file {path} cannot be read: {err}") from err


def read_state_dict(folder: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint folder whose names start with ``prefix``, with the prefix removed."""
    out: dict[str, torch.Tensor] = {}
    for file in _weight_files(Path(folder)):
        for key, value in read_tensor_file(file).items():
            if key.startswith(prefix):
                out[key[len(prefix):]] = value
    return out
