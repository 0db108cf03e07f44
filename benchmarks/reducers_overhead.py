"""Per token reducer: its own overhead against the prefill time it saves (not a timed test).

    python -m benchmarks.reducers_overhead --device cuda              # real geometry
    python -m benchmarks.reducers_overhead --small                    # reduced size, runs on CPU

Real geometry: 32 frames of SigLIP-so400m features (27 x 27 x 1152, 16 heads), OneVision's 2x2 pooling to
14 x 14 = 196 tokens per frame, M = 6,272 visual tokens (+ one newline) of width 3,584 between a 14-token
prefix and a 50-token question, and a Qwen2-7B-shaped prefill cut to 2 decoder layers (width 3,584, 28 query
/ 4 KV heads, MLP 18,944; SDPA). Every pre-LLM reducer runs at HICom's 680-token budget (DyCoke at its floor,
marked); FastV prunes at layer 1 of the 2 to keep 680. ``--small``: 8 frames, Qwen2-0.5B-shaped layers
(width 896, 14 / 2 heads, MLP 4,864), the same per-frame geometry and budget share.

Per reducer: ``overhead_ms`` (the reducer itself: for VisionZip the tower-attention recompute and pooling too,
for FastVID the attention-pooling head),
``prefill_full_ms`` / ``prefill_reduced_ms`` (2 layers, medians of alternated repeats), ``saved_ms`` and
``overhead / saved`` (goal: < 5 %). For FastV, which acts inside the prefill, ``overhead_ms`` is the prefill
with FastV keeping every token minus the plain prefill, and the reduced prefill includes its selection.
Random weights and features: the timings do not depend on the values. Writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig
from transformers.models.siglip.modeling_siglip import SiglipAttention, SiglipMultiheadAttentionPoolingHead

from benchmarks.common import interleaved_times, machine_info, median
from llava.model.llava_arch import spatial_pool
from llava.model.token_reduction import llm_reduction
from llava.model.visual import VisualBatch
from reducers_plugin.fastvid import map_head_signals
from reducers_plugin.plugin import REDUCERS
from reducers_plugin.tower_attention import attention_received

PREFIX, QUESTION = 14, 50
REAL = dict(frames=32, width=3584, heads=28, kv_heads=4, mlp=18944)
SMALL = dict(frames=8, width=896, heads=14, kv_heads=2, mlp=4864)
SIGLIP = dict(hidden_size=1152, num_attention_heads=16, intermediate_size=4304, image_size=378, patch_size=14)
BUDGET_SHARE = 680 / 6272  # HICom's 680 at 32 frames


def _prefill_model(geometry: dict, device: str, dtype: torch.dtype) -> Qwen2ForCausalLM:
    config = Qwen2Config(vocab_size=1024, hidden_size=geometry["width"], intermediate_size=geometry["mlp"],
                         num_hidden_layers=2, num_attention_heads=geometry["heads"],
                         num_key_value_heads=geometry["kv_heads"], max_position_embeddings=32768)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype).eval()


def _prefill(model, visual_tokens: int, device: str, dtype: torch.dtype):
    embeds = torch.randn(1, PREFIX + visual_tokens + QUESTION, model.config.hidden_size, device=device, dtype=dtype)
    return lambda: model.model(inputs_embeds=embeds, use_cache=False)


@dataclass
class Setup:
    """Inputs shared by every row."""

    frames: int
    side: int
    per_frame: int
    visual: int
    budget: int
    tokens: torch.Tensor  # (M + 1, width): the video item, newline last
    batch: VisualBatch
    tower_input: torch.Tensor  # (T, side^2, 1152): input of the tower's last attention
    siglip_attn: nn.Module
    model: Qwen2ForCausalLM
    device: str
    dtype: torch.dtype
    repeats: int


@torch.no_grad()
def run(small: bool, device: str, repeats: int) -> dict:
    geometry = SMALL if small else REAL
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    frames, side = geometry["frames"], SIGLIP["image_size"] // SIGLIP["patch_size"]
    per_frame = math.ceil(side / 2) ** 2
    visual = frames * per_frame
    gen = torch.Generator().manual_seed(0)
    setup = Setup(
        frames=frames, side=side, per_frame=per_frame, visual=visual, budget=round(BUDGET_SHARE * visual),
        tokens=torch.randn(visual + 1, geometry["width"], generator=gen).to(device=device, dtype=dtype),
        batch=VisualBatch(features=torch.zeros(frames, 1, 1, 1), frames_per_item=[frames], modalities=["video"]),
        tower_input=torch.randn(frames, side * side, SIGLIP["hidden_size"], generator=gen).to(device=device,
                                                                                             dtype=dtype),
        siglip_attn=SiglipAttention(SiglipVisionConfig(**SIGLIP)).to(device=device, dtype=dtype).eval(),
        model=_prefill_model(geometry, device, dtype), device=device, dtype=dtype, repeats=repeats,
    )
    rows = []
    for name, (cls, _) in REDUCERS.items():
        if cls.stage == "decode":
            rows.append({"reducer": name, "note": "acts while decoding only: saves no prefill"})
            continue
        try:
            rows.append(_fastv_row(name, cls, setup) if cls.stage == "llm" else _tokens_row(name, cls, setup))
        except (RuntimeError, ValueError, TypeError, AttributeError) as err:  # shown in the table, never hidden
            rows.append({"reducer": name, "error": f"{type(err).__name__}: {err}"})
    return {"geometry": {**geometry, "per_frame": per_frame, "visual_tokens": visual, "budget": setup.budget,
                         "device": device, "dtype": str(dtype), "repeats": repeats},
            "machine": machine_info(), "rows": rows}


def _tokens_row(name: str, cls, s: Setup) -> dict:
    reducer = cls(budget=s.budget)
    count = reducer.num_output_tokens(s.visual + 1, s.frames, s.side, s.side, "video")
    if name == "visionzip":
        def reduce():
            received, keys = attention_received(s.siglip_attn, s.tower_input)
            score = spatial_pool(received[..., None], 2, "bilinear")[..., 0]
            metric = spatial_pool(keys, 2, "bilinear")
            grid = s.tokens[: s.visual].view(s.frames, s.per_frame, -1)
            return reducer.reduce_video(grid, score, metric)
    elif name == "fastvid":
        head = SiglipMultiheadAttentionPoolingHead(SiglipVisionConfig(**SIGLIP)).to(device=s.device, dtype=s.dtype)
        norm = nn.LayerNorm(SIGLIP["hidden_size"]).to(device=s.device, dtype=s.dtype)
        features = s.tower_input.view(s.frames, s.side, s.side, -1)

        def reduce():
            attention, descriptors = map_head_signals(head.eval(), norm, features, 2, "bilinear")
            grid = s.tokens[: s.visual].view(s.frames, s.per_frame, -1)
            return reducer.kept_and_merged(grid, attention, descriptors)
    else:
        def reduce():
            return reducer.reduce_tokens([s.tokens], s.batch)
    fns = {"reducer": reduce, "full": _prefill(s.model, s.visual + 1, s.device, s.dtype),
           "reduced": _prefill(s.model, count, s.device, s.dtype)}
    return _row(name, count - 1, s.budget, interleaved_times(fns, s.repeats, device=s.device))


def _fastv_row(name: str, cls, s: Setup) -> dict:
    spans = [[(PREFIX, PREFIX + s.visual)]]
    full = _prefill(s.model, s.visual + 1, s.device, s.dtype)

    def with_fastv(keep: int):
        def call():
            with llm_reduction(s.model, cls(layer=1, budget=keep), spans):
                full()
        return call

    times = interleaved_times({"keep_all": with_fastv(s.visual), "full": full, "reduced": with_fastv(s.budget)},
                              s.repeats, device=s.device)
    times["reducer"] = [a - b for a, b in zip(times["keep_all"], times["full"])]
    row = _row(name, s.budget, s.budget, times)
    row["note"] = "prunes after layer 1 of 2 (all M tokens in layer 0); overhead = keep-all run minus plain prefill"
    return row


def _row(name: str, tokens: int, budget: int, times: dict) -> dict:
    overhead, full, reduced = (median(times[k]) * 1000 for k in ("reducer", "full", "reduced"))
    saved = full - reduced
    return {"reducer": name, "visual_tokens": tokens, "at_floor": tokens > budget, "overhead_ms": overhead,
            "prefill_full_ms": full, "prefill_reduced_ms": reduced, "saved_ms": saved,
            "overhead_over_saved": overhead / saved if saved > 0 else None}


def markdown(result: dict) -> str:
    g = result["geometry"]
    lines = [f"{g['frames']} frames x {g['per_frame']} tokens (M = {g['visual_tokens']}), budget {g['budget']}, "
             f"width {g['width']}, 2 layers, {g['device']} {g['dtype']}", "",
             "| reducer | visual tokens | overhead (ms) | prefill full (ms) | prefill reduced (ms) | saved (ms) | "
             "overhead / saved |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r or "overhead_ms" not in r:
            lines.append(f"| {r['reducer']} | {'failed: ' + r['error'] if 'error' in r else r['note']} | | | | | |")
            continue
        share = "n/a" if r["overhead_over_saved"] is None else f"{100 * r['overhead_over_saved']:.1f} %"
        tokens = f"{r['visual_tokens']}" + (" (floor)" if r["at_floor"] else "")
        lines.append(f"| {r['reducer']} | {tokens} | {r['overhead_ms']:.2f} | {r['prefill_full_ms']:.2f} | "
                     f"{r['prefill_reduced_ms']:.2f} | {r['saved_ms']:.2f} | {share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="8 frames, Qwen2-0.5B-shaped layers (CPU-friendly)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    result = run(args.small, args.device, args.repeats)
    print(markdown(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
