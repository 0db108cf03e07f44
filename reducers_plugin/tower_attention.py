"""Attention maps of the SigLIP layer whose output the tower returns, recomputed while the tower keeps SDPA.

SigLIP has no CLS token, so the LLaVA-OneVision ports of VisionZip (``cokeshao/HoliTom``, ``visionzip/``)
score a patch by the attention it *receives* in that layer: softmax attention averaged over heads and over
all queries, ``(N, H*W)``; their merge metric is the layer's keys averaged over heads, ``(N, H*W, d_head)``.
:class:`TowerAttention` captures the input of that layer's ``self_attn`` (already layer-normed) with a forward
pre-hook and recomputes both with the module's own ``q_proj`` / ``k_proj``.
"""

from __future__ import annotations

import torch
from torch import nn


class TowerAttention:
    """Hook on the selected layer of a SigLIP-style tower (``tower.vision_model.encoder.layers``)."""

    def __init__(self, model: nn.Module, who: str):
        tower = model.get_vision_tower() if hasattr(model, "get_vision_tower") else None
        layers = getattr(getattr(getattr(tower, "vision_model", None), "encoder", None), "layers", None)
        index = getattr(tower, "layer_index", None)
        attn = layers[index - 1].self_attn if isinstance(layers, nn.ModuleList) and isinstance(index, int) else None
        missing = [n for n in ("q_proj", "k_proj", "num_heads", "head_dim", "scale") if not hasattr(attn, n)]
        if attn is None or missing:
            raise ValueError(
                f"{who} needs the attention maps of a SigLIP-style vision tower (encoder layers whose self_attn has "
                f"q_proj, k_proj, num_heads, head_dim, scale); the tower {type(tower).__name__} cannot give them"
            )
        self.attn = attn
        self.inputs: torch.Tensor | None = None
        self.handle = attn.register_forward_pre_hook(self._capture, with_kwargs=True)

    def _capture(self, module, args, kwargs) -> None:
        self.inputs = (args[0] if args else kwargs["hidden_states"]).detach()

    def remove(self) -> None:
        self.handle.remove()
        self.inputs = None

    def take(self, frames: int, who: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(received (N, L), keys (N, L, d_head))`` of the last tower pass of ``frames`` frames, float32."""
        x, self.inputs = self.inputs, None
        if x is None or x.shape[0] != frames:
            raise RuntimeError(f"{who}: no tower attention captured for these {frames} frames (the vision tower must "
                               f"run in one pass right before the reducer)")
        return attention_received(self.attn, x)


def attention_received(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x (N, L, D)``, the layer-normed input of ``attn`` -> attention received per key ``(N, L)`` (softmax
    averaged over heads and queries) and the keys averaged over heads ``(N, L, d_head)``."""
    frames, length, _ = x.shape
    q = attn.q_proj(x).view(frames, length, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(frames, length, attn.num_heads, attn.head_dim).transpose(1, 2)
    # scores in the tower's dtype, softmax in float32, as SigLIP's eager attention
    probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1, dtype=torch.float32)  # (N, heads, L, L)
    return probs.mean(dim=(1, 2)), k.float().mean(dim=1)
