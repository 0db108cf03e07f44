"""InstructBLIP's Q-Former (LAVIS layout) -> both B-VLLM Q-Formers, strictly.

The public B-VLLM scripts start each Q-Former from LAVIS's ``instruct_blip_vicuna7b_trimmed.pth``
(``torch.load(...)["model"]``): ``Qformer.bert.*`` (BERT with cross-attention every 2nd layer and a
separate FFN for query positions), ``query_tokens`` ``(1, 32, 768)`` and ``ln_vision`` (the LayerNorm
on the EVA features). HF's ``InstructBlipQFormerModel`` holds the same tensors under other names
(:func:`hf_name`). Every tensor the projector needs must be present with its shape, and every tensor
of the file must be used or be one the code ignores (``llm_proj.*``, the BERT LM head, the
``position_ids`` buffer); any other difference is an error naming the tensors.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

#: LAVIS tensors B-VLLM does not use.
IGNORED = re.compile(r"(llm_proj\..*|Qformer\.cls\..*|Qformer\.bert\.embeddings\.position_ids|t5_proj\..*)")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin")


class QFormerImportError(ValueError):
    """A LAVIS Q-Former checkpoint does not match the projector (the message names the tensors)."""


def hf_name(lavis_name: str) -> str:
    """``bert.encoder.layer.0.attention.self.query.weight`` -> ``encoder.layer.0.attention.attention.query.weight``."""
    name = lavis_name.removeprefix("bert.")
    name = name.replace("embeddings.LayerNorm.", "embeddings.layernorm.")
    return re.sub(r"\.(attention|crossattention)\.self\.", r".\1.attention.", name)


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself, or the single checkpoint file in the folder ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"B-VLLM Q-Former checkpoint {path} does not exist (--bvllm_qformer_init: LAVIS's "
                                f"instruct_blip_vicuna7b_trimmed.pth or a folder holding it)")
    found = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
    if len(found) != 1:
        raise FileNotFoundError(f"B-VLLM Q-Former folder {path}: expected exactly one checkpoint "
                                f"({'/'.join(CHECKPOINT_SUFFIXES)}), found {[p.name for p in found]}")
    return found[0]


def read_lavis_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a LAVIS checkpoint (its ``"model"`` entry when it has one), loaded safely."""
    file = checkpoint_file(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure: name the file and stop
        raise QFormerImportError(f"{file}: cannot read a tensor checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise QFormerImportError(f"{file}: expected a dict of tensors (or {{'model': dict of tensors}})")
    return state


def import_lavis_qformer(projector, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Loads ``state`` (LAVIS names) into both Q-Formers, both query banks and ``ln_vision``."""
    own = projector.temporal_qformer.state_dict()
    wanted = {f"Qformer.bert.{_lavis_name(name)}": name for name in own}  # LAVIS name -> HF name
    expected_shapes = {key: own[hf].shape for key, hf in wanted.items()}
    expected_shapes["query_tokens"] = projector.temporal_queries.shape
    expected_shapes["ln_vision.weight"] = projector.ln_vision.weight.shape
    expected_shapes["ln_vision.bias"] = projector.ln_vision.bias.shape
    missing = sorted(set(expected_shapes) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected_shapes) if not IGNORED.fullmatch(k))
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(expected_shapes[k])}"
                  for k in sorted(expected_shapes) if k in state and state[k].shape != expected_shapes[k]]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)}: {missing}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)}: {unexpected}")
        if mismatched:
            problems.append(f"shape mismatch (file vs model) {len(mismatched)}: {mismatched}")
        hint = ""
        if any("crossattention" in m for m in mismatched):
            hint = " (cross-attention reads the EVA width 1408: set qformer_vision_width=1408 for an input adapter)"
        raise QFormerImportError(f"{source}: the LAVIS Q-Former does not match the B-VLLM projector; "
                                 + "; ".join(problems) + hint)
    bert = {hf: state[key] for key, hf in wanted.items()}
    with torch.no_grad():
        for qformer, queries in ((projector.temporal_qformer, projector.temporal_queries),
                                 (projector.spatial_qformer, projector.spatial_queries)):
            qformer.load_state_dict(bert, strict=True)
            queries.copy_(state["query_tokens"])
        projector.ln_vision.weight.copy_(state["ln_vision.weight"])
        projector.ln_vision.bias.copy_(state["ln_vision.bias"])


def _lavis_name(hf: str) -> str:
    """Inverse of :func:`hf_name` (without the ``bert.`` prefix)."""
    name = hf.replace("embeddings.layernorm.", "embeddings.LayerNorm.")
    return re.sub(r"\.(attention|crossattention)\.attention\.", r".\1.self.", name)


__all__ = ["QFormerImportError", "checkpoint_file", "hf_name", "import_lavis_qformer", "read_lavis_state"]
