"""FLOPs of one answered question, split as the comparison harness reports them.

Only matrix products are counted, ``2 * m * n * k`` each -- the convention of
``torch.utils.flop_counter.FlopCounterMode`` (and of ``benchmarks/flops.py``); softmax, norms and
activations are left out.

* Visual path (tower, projector, token reducer): counted on the real modules with ``FlopCounterMode``
  (:func:`visual_flops`), so any tower, projector or reducer a plugin registers is covered without a
  formula per method.
* LLM prefill: analytic (:func:`decoder_prefill_flops`), from the decoder's config and the sequence
  length each decoder layer actually processed -- an in-LLM reducer that shortens the sequence from
  layer K on is charged for what it keeps. Checked against ``FlopCounterMode`` in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

VISUAL_PARTS = ("tower", "projector", "reducer")


def flop_counter() -> FlopCounterMode:
    """``FlopCounterMode`` that also counts the CPU flash-attention kernel SDPA picks on the CPU
    (torch registers a formula for the GPU kernels only), so counts do not depend on the device."""
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_shapes})


def _sdpa_shapes(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def mm(m: int, n: int, k: int) -> int:
    """FLOPs of an ``(m, k) @ (k, n)`` product."""
    return 2 * m * n * k


def decoder_layer_flops(config, length: int) -> int:
    """One Qwen2/LLaMA-style decoder layer over ``length`` tokens, attention to every key of the prompt.

    Counts the q/k/v/o projections, the score and value products over all ``length x length`` pairs
    (what an SDPA kernel computes; the causal half is not discounted) and the gated MLP.
    """
    d, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    projections = mm(length, heads * head_dim, d) + 2 * mm(length, kv_heads * head_dim, d) + mm(length, d, heads * head_dim)
    attention = heads * 2 * mm(length, length, head_dim)
    mlp = 3 * mm(length, config.intermediate_size, d)
    return projections + attention + mlp


def decoder_prefill_flops(config, layer_lengths: Sequence[int], logits_rows: int = 1) -> int:
    """The prompt forward: layer ``i`` over ``layer_lengths[i]`` tokens, then the LM head on
    ``logits_rows`` rows (``generate`` computes the last position's logits only)."""
    if len(layer_lengths) != config.num_hidden_layers:
        raise ValueError(f"{len(layer_lengths)} layer lengths for a decoder of {config.num_hidden_layers} layers")
    layers = sum(decoder_layer_flops(config, n) for n in layer_lengths)
    return layers + mm(logits_rows, config.vocab_size, config.hidden_size)


class _PartTracker:
    """Stands in for ``FlopCounterMode``'s module tracker (whose backward hooks some projectors' parameter
    inputs trip over): FLOPs go to the part whose module is running, the reducer outside both."""

    def __init__(self):
        self.stack = ["reducer"]

    def enter(self, part: str, *_) -> None:
        self.stack.append(part)

    @property
    def parents(self) -> set[str]:
        return {self.stack[-1]}

    def __enter__(self) -> _PartTracker:
        return self

    def __exit__(self, *exc) -> None:
        return None


@torch.no_grad()
def visual_flops(model, items: list, modalities: list[str], instructions: list[str] | None) -> dict[str, int]:
    """``{"tower", "projector", "reducer"}`` FLOPs of ``model.encode_visual_batch`` on these items.

    What runs inside any module of the vision tower / the projector is theirs (the innermost one
    decides); the rest is the reducer's (stages ``features`` / ``tokens``; an in-LLM reducer's cost is inside the prefill).
    """
    tracker = _PartTracker()
    counter = flop_counter()
    counter.mod_tracker = tracker

    def leave(*_) -> None:
        tracker.stack.pop()

    handles = []
    for name, root in (("tower", model.get_vision_tower()), ("projector", model.get_model().mm_projector)):
        for module in root.modules():  # every submodule: a tower method may call its inner model directly
            handles.append(module.register_forward_pre_hook(partial(tracker.enter, name)))
            handles.append(module.register_forward_hook(leave))
    try:
        with counter:
            model.encode_visual_batch(items, modalities, instructions)
    finally:
        for handle in handles:
            handle.remove()
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return {part: counts.get(part, 0) for part in VISUAL_PARTS}
