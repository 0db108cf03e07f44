"""Reading checkpoint files safely: JSON configs, and tensors through safetensors or
``torch.load(weights_only=True)`` (never pickled code). Every error names the file and the reason."""

from __future__ import annotations

import json
import os
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


def readable_weight_files(folder: str | os.PathLike) -> None:
    """Gives the ``*.safetensors`` files in ``folder`` the permissions of any other file written there
    (``0o666`` less the umask): safetensors writes them ``0600``, so a shared checkpoint folder would have
    weights only their writer can read next to world-readable configs."""
    mask = os.umask(0)
    os.umask(mask)
    for path in Path(folder).glob("*.safetensors"):
        os.chmod(path, 0o666 & ~mask)


def read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one ``.safetensors`` or ``.bin`` file (the latter loaded with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or pickled-code files surface as many exception types; name the file
        raise ValueError(f"weights file {path} cannot be read as a tensor dict: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} holds a {type(state).__name__}, not a dict of tensors")
    return state


def read_state_dict(folder: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint folder whose names start with ``prefix``, with the prefix removed."""
    out: dict[str, torch.Tensor] = {}
    for file in _weight_files(Path(folder)):
        for key, value in read_tensor_file(file).items():
            if key.startswith(prefix):
                out[key[len(prefix):]] = value
    return out


def read_json(path: str | Path) -> dict:
    """A JSON object from ``path``; FileNotFoundError / ValueError name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


#: Keys of a saved HF config that are not constructor fields.
_NON_FIELDS = ("model_type", "transformers_version", "architectures")


def config_fields(config: dict) -> dict:
    """A saved HF config dict without the keys its config class does not take as arguments."""
    return {k: v for k, v in config.items() if k not in _NON_FIELDS}


def load_part_strictly(module: torch.nn.Module, folder: str | Path, prefix: str, what: str) -> None:
    """Loads every tensor of ``module`` from the checkpoint in ``folder`` (names under ``prefix``).

    A missing tensor or a shape mismatch is an error naming ``what``, the folder and the keys.
    """
    available = read_state_dict(folder, prefix=prefix)
    wanted = module.state_dict()
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise KeyError(f"{what} {folder}: checkpoint lacks {len(missing)} tensors, e.g. {missing[:5]}")
    mismatched = [f"{k} {tuple(available[k].shape)} vs {tuple(wanted[k].shape)}"
                  for k in wanted if available[k].shape != wanted[k].shape]
    if mismatched:
        raise ValueError(f"{what} {folder}: shape mismatch for {mismatched[:5]}")
    module.load_state_dict({k: available[k] for k in wanted})
