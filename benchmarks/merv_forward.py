"""MERV's multi-encoder forward at real encoder shapes (random weights): wall time, peak memory, FLOPs.

Rows (``--batch`` videos of 16 LLM frames, bf16 on a GPU, fp32 on a CPU):

* ``batched, streams``: :meth:`MERVVisionTower.encode_batch` on the whole micro-batch, each encoder on
  its own CUDA stream, then the projector (pool + Linear + mixer);
* ``batched, one stream``: the same with the encoders one after another;
* ``per video``: one video at a time (MERV's evaluation runs batch 1), each encoder in turn.

FLOPs (``torch.utils.flop_counter``, matrix products, eager attention, on the meta device): each encoder
on one clip, the projector + mixer, and LLaVA-OneVision's SigLIP-so400m/14@384 (26 layers) on 16 and 32
frames for comparison. Not a test: ``python benchmarks/merv_forward.py --device cuda``.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import SiglipVisionConfig, SiglipVisionModel

from llava.model.visual import EncoderFeatures, VisualBatch
from merv_plugin.projector import MERVProjector
from merv_plugin.tower import MERVVisionTower

LLM_WIDTH = 3584  # Qwen2.5-7B
FRAMES = 16
#: MERV's four encoders at their real shapes (merv/conf/models.py merv-base)
ENCODERS = [
    {"name": "languagebind", "kind": "clip_frames", "path": ".", "image_size": 224,
     "config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 224, "patch_size": 14}},
    {"name": "dinov2", "kind": "dinov2", "path": ".", "image_size": 224,
     "config": {"model_type": "dinov2_with_registers", "hidden_size": 1024, "num_hidden_layers": 24,
                "num_attention_heads": 16, "mlp_ratio": 4, "image_size": 518, "patch_size": 14,
                "num_register_tokens": 4}},
    {"name": "vivit", "kind": "vivit", "path": ".", "frame_rate": 2,
     "config": {"model_type": "vivit", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                "num_attention_heads": 12, "image_size": 224, "num_frames": 32, "tubelet_size": [2, 16, 16]}},
    {"name": "siglip", "kind": "siglip", "path": ".", "image_size": 224,
     "config": {"model_type": "siglip_vision_model", "hidden_size": 768, "intermediate_size": 3072,
                "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224, "patch_size": 16}},
]
SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16, image_size=384,
              patch_size=14, vision_use_head=False)


def build(device, dtype, attn: str = "sdpa"):
    full = {"model_type": "merv_tower", "num_frames": FRAMES,
            "encoders": [dict(e, config=dict(e["config"], attn_implementation=attn)) for e in ENCODERS]}
    config = SimpleNamespace(mm_vision_tower_config=full, hidden_size=LLM_WIDTH,
                             merv_config={"grid": [16, 8, 8], "fusion": "cross_attention_avg_lq", "query_dim": 3072})
    tower = MERVVisionTower("random-weights", config, delay_load=True)
    config.mm_hidden_size = tower.hidden_size
    projector = MERVProjector(config)
    return tower.to(device=device, dtype=dtype).eval(), projector.to(device=device, dtype=dtype).eval()


def clips(tower, batch: int, device, dtype) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(batch, FRAMES * 2, 3, 256, 320, generator=generator)
    return [{k: v.to(device=device, dtype=dtype) for k, v in tower.image_processor.encoder_inputs(f).items()}
            for f in frames]


def timed(fn, device, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn()`` and peak memory (GiB, GPU only)."""
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return sorted(times)[len(times) // 2], peak


def flops() -> dict[str, float]:
    """TFLOPs of one clip per module (encoders on the meta device, eager attention; the projector on
    random features of the encoders' output shapes)."""
    out = {}
    with torch.device("meta"):
        tower, _ = build("meta", torch.float32, attn="eager")
        for name, trunk in tower.encoders.items():
            shape = (FRAMES * 2 // trunk.window, trunk.window, 3, 224, 224) if trunk.window > 1 else (FRAMES, 3, 224, 224)
            with FlopCounterMode(display=False) as counter:
                trunk(torch.empty(shape))
            out[f"encoder {name}"] = counter.get_total_flops() / 1e12
        so400m = SiglipVisionModel(SiglipVisionConfig(**SO400M, attn_implementation="eager"))
        for frames in (16, 32):
            with FlopCounterMode(display=False) as counter:
                so400m(pixel_values=torch.empty(frames, 3, 384, 384))
            out[f"SigLIP-so400m alone, {frames} frames"] = counter.get_total_flops() / 1e12
    _, projector = build("cpu", torch.float32)
    encoders = {name: EncoderFeatures(torch.randn(FRAMES, trunk.grid, trunk.grid, trunk.hidden_size), [FRAMES])
                for name, trunk in tower.encoders.items()}
    first = next(iter(encoders.values()))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        projector(VisualBatch(first.features, [FRAMES], ["video"], encoders=encoders))
    out["projector + mixer"] = counter.get_total_flops() / 1e12
    out["MERV total"] = sum(v for k, v in out.items() if k.startswith(("encoder", "projector")))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    result = {"tflops_per_clip": flops()}
    tower, projector = build(device, dtype)
    items = clips(tower, args.batch, device, dtype)
    modalities = ["video"] * len(items)

    @torch.no_grad()
    def batched():
        return projector(tower.encode_batch(items, modalities))

    @torch.no_grad()
    def per_video():
        return [projector(tower.encode_batch([item], ["video"])) for item in items]

    rows = {}
    tower.parallel_streams = True
    rows["batched, streams"] = timed(batched, device, args.repeats)
    tower.parallel_streams = False
    rows["batched, one stream"] = timed(batched, device, args.repeats)
    rows["per video"] = timed(per_video, device, args.repeats)
    tower.parallel_streams = True
    with_streams = torch.cat(batched())
    tower.parallel_streams = False
    result["streams_vs_one_stream_max_abs_diff"] = float((with_streams - torch.cat(batched())).abs().max())
    result["forward"] = {k: {"seconds": s, "peak_gib": m} for k, (s, m) in rows.items()}
    result["setting"] = {"device": str(device), "dtype": str(dtype), "batch": args.batch, "frames": FRAMES}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
