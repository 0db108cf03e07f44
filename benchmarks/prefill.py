"""P2: LLM prefill over a 32-frame video's visual tokens, HICom (680) against LLaVA-OneVision (6272).

A Qwen2-7B-shaped decoder (hidden 3584, 28 heads, 4 KV heads, MLP 18944, SDPA attention) cut to 2
layers so that it fits a CPU, random fp32 weights, fed the visual tokens as ``inputs_embeds`` with
``use_cache=True``: the time of that forward and the bytes of the KV cache it returns.

Token counts come from the code: ``HIComConfig.num_output_tokens(32, 27, 27)`` (648 local + 32 global)
and OneVision's per-frame bilinear 2x2 pooling of the 27x27 SigLIP grid to ``ceil(27/2)^2 = 196``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch
from transformers import Qwen2Config, Qwen2Model

from benchmarks.common import Record, compared, interleaved_times, median
from hicom_plugin import PRESETS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecoderShape:
    hidden: int = 3584
    heads: int = 28
    kv_heads: int = 4
    mlp: int = 18944
    layers: int = 2


QWEN2_7B_LAYERS = 28
FULL = DecoderShape()
QUICK = DecoderShape(hidden=256, heads=4, kv_heads=2, mlp=512, layers=2)


def visual_tokens(frames: int, grid: int = 27) -> dict[str, int]:
    """Visual tokens of one video: HICom (paper and release give the same count) and OneVision."""
    return {"hicom": PRESETS["release"].num_output_tokens(frames, grid, grid),
            "onevision": frames * math.ceil(grid / 2) ** 2}


def build_decoder(shape: DecoderShape, seed: int = 0) -> Qwen2Model:
    config = Qwen2Config(
        hidden_size=shape.hidden, intermediate_size=shape.mlp, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, num_hidden_layers=shape.layers, vocab_size=16,
        max_position_embeddings=8192, rope_theta=1e6,
    )
    torch.manual_seed(seed)
    # Built on the meta device and filled in place: transformers' own init of ~0.5B weights is slow.
    with torch.device("meta"):
        model = Qwen2Model._from_config(config, attn_implementation="sdpa")
    model.to_empty(device="cpu")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0, 0.02)
    return model.eval()


def kv_cache_bytes(cache) -> int:
    """Bytes of the keys and values a ``DynamicCache`` holds."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def run(quick: bool = False, device: str = "cpu") -> list[Record]:
    shape, frames, repeats = (QUICK, 4, 1) if quick else (FULL, 32, 3)
    tokens = visual_tokens(frames)
    model = build_decoder(shape)
    gen = torch.Generator().manual_seed(0)
    embeds = {name: torch.randn(1, n, shape.hidden, generator=gen) * 0.02 for name, n in tokens.items()}
    caches = {}

    def prefill(name: str):
        def call() -> None:
            with torch.inference_mode():
                caches[name] = model(inputs_embeds=embeds[name], use_cache=True).past_key_values
        return call

    times = interleaved_times({name: prefill(name) for name in tokens}, repeats=repeats, warmup=0)
    kv = {name: kv_cache_bytes(cache) for name, cache in caches.items()}
    head_dim = shape.hidden // shape.heads
    expected = {name: 2 * shape.layers * shape.kv_heads * head_dim * n * 4 for name, n in tokens.items()}
    if kv != expected:
        raise RuntimeError(f"P2: KV cache holds {kv} bytes, expected {expected} from the shapes")
    full_model_bf16 = {name: 2 * QWEN2_7B_LAYERS * shape.kv_heads * head_dim * n * 2 for name, n in tokens.items()}
    where = (f"{shape.layers} Qwen2 layers (hidden {shape.hidden}, {shape.heads} heads, {shape.kv_heads} KV heads), "
             f"{frames} frames, cpu float32")
    details = {"shape": asdict(shape), "tokens": tokens, "repeats_s": times, "kv_bytes": kv,
               "kv_bytes_qwen2_7b_28_layers_bf16": full_model_bf16}
    logger.info("P2: %s prefill %.2f s vs %.2f s", where, median(times["hicom"]), median(times["onevision"]))
    return [
        compared("P2", f"prefill time, {tokens['hicom']} vs {tokens['onevision']} visual tokens ({where})",
                 median(times["hicom"]), median(times["onevision"]), "s", lower_is_better=True, target=">= 8",
                 note="visual tokens only (no prompt text); time grows faster than the token count "
                      "because attention is quadratic", details=details),
        compared("P2", f"KV cache, {tokens['hicom']} vs {tokens['onevision']} visual tokens ({where})",
                 kv["hicom"] / 2**20, kv["onevision"] / 2**20, "MiB", lower_is_better=True, target=">= 9",
                 note=(f"the full Qwen2-7B (28 layers, bf16) would hold {full_model_bf16['hicom'] / 2**20:.0f} "
                       f"vs {full_model_bf16['onevision'] / 2**20:.0f} MiB"), details=details),
    ]
