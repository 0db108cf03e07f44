"""P1: our batched HICom compressor against a per-video loop of the textbook form (the release's structure).

Same module, same weights, same inputs; one training step each (forward, backward of a loss over all
videos' tokens, parameter gradients allocated afresh):

* ours: one call over the packed micro-batch, default (folded) compute;
* baseline: one call per video, as the release's ``encode_images_or_videos`` does, with
  ``fold_attention = False``: every key and value of the global branch projected, ``V + Pos`` built,
  the 32 identical direct-injection queries attended one by one.

SigLIP-so400m geometry: 4 videos x 32 frames x 27 x 27 x 1152 -> LLM width 3584; fp32 on CPU, and bf16
on a GPU when there is one. Both presets: ``release`` (the release's own configuration) and ``paper``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from benchmarks.common import Record, compared, fraction, interleaved_times, median, peak_memory_bytes
from benchmarks.flops import compressor_flops
from hicom_plugin import PRESETS, HIComCompressor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Geometry:
    videos: int = 4
    frames: int = 32
    grid: int = 27
    vision_dim: int = 1152
    llm_dim: int = 3584


FULL = Geometry()
QUICK = Geometry(videos=2, frames=8, grid=9, vision_dim=128, llm_dim=256)


class Step:
    """One training step of a compressor over fixed inputs, batched or looped over videos."""

    def __init__(self, preset: str, geometry: Geometry, device: str, dtype: torch.dtype, seed: int = 0) -> None:
        torch.manual_seed(seed)
        g = geometry
        self.module = HIComCompressor(PRESETS[preset], g.vision_dim, g.vision_dim, g.llm_dim).to(device, dtype)
        gen = torch.Generator(device=device).manual_seed(seed)

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, device=device, dtype=dtype)

        shape = (g.videos * g.frames, g.grid, g.grid, g.vision_dim)
        self.features, self.dense = randn(*shape), randn(*shape)
        self.text = randn(g.videos, g.vision_dim)
        self.frames = g.frames
        self.videos = g.videos

    def _backward(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        torch.stack([t.float().square().mean() for t in tokens]).sum().backward()
        return [t.detach() for t in tokens]

    def batched(self) -> list[torch.Tensor]:
        self.module.zero_grad(set_to_none=True)
        n = self.videos
        return self._backward(self.module(self.features, [self.frames] * n, ["video"] * n,
                                          dense_embeds=self.dense, text_pooled=self.text))

    def loop(self) -> list[torch.Tensor]:
        self.module.zero_grad(set_to_none=True)
        self.module.fold_attention = False
        try:
            tokens = []
            for i in range(self.videos):
                rows = slice(i * self.frames, (i + 1) * self.frames)
                tokens += self.module(self.features[rows], [self.frames], ["video"],
                                      dense_embeds=self.dense[rows], text_pooled=self.text[i:i + 1])
            return self._backward(tokens)
        finally:
            self.module.fold_attention = True


def _measure(preset: str, geometry: Geometry, device: str, dtype: torch.dtype, repeats: int) -> list[Record]:
    step = Step(preset, geometry, device, dtype)
    ours_out, loop_out = step.batched(), step.loop()  # also the warm-up round
    max_diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(ours_out, loop_out))
    times = interleaved_times({"ours": step.batched, "loop": step.loop}, repeats=repeats, warmup=0, device=device)
    memory = {"ours": peak_memory_bytes(step.batched, device), "loop": peak_memory_bytes(step.loop, device)}
    g = geometry
    precision = str(dtype).removeprefix("torch.")
    where = f"{g.videos} x {g.frames} x {g.grid}x{g.grid} x {g.vision_dim} -> {g.llm_dim}, {device} {precision}"
    cfg = PRESETS[preset]
    flops = {
        "folded": compressor_flops(cfg, g.frames, g.grid, g.vision_dim, g.vision_dim, g.llm_dim),
        "textbook": compressor_flops(cfg, g.frames, g.grid, g.vision_dim, g.vision_dim, g.llm_dim, folded=False),
    }
    details = {"geometry": dataclasses.asdict(g), "preset": preset,
               "device": device, "dtype": str(dtype), "repeats_s": times, "peak_bytes": memory,
               "max_abs_output_diff": max_diff, "forward_gflop_per_video": {
                   k: {part: v / 1e9 for part, v in f.items()} for k, f in flops.items()}}
    logger.info("P1 %s: ours %.2f s, loop %.2f s; peak %.0f / %.0f MiB", where, median(times["ours"]),
                median(times["loop"]), memory["ours"] / 2**20, memory["loop"] / 2**20)
    return [
        compared("P1", f"compressor fwd+bwd time, {preset} preset ({where})", median(times["ours"]),
                 median(times["loop"]), "s", lower_is_better=True, target=">= 3", details=details),
        fraction("P1", f"compressor fwd+bwd peak memory, {preset} preset ({where})", memory["ours"] / 2**20,
                 memory["loop"] / 2**20, "MiB", target="<= 0.5",
                 note="peak bytes of tensors allocated during the step (activations, saved tensors, "
                      "gradients); weights and inputs excluded",
                 details={"peak_bytes": memory}),
    ]


def run(quick: bool = False, device: str = "cpu") -> list[Record]:
    geometry, repeats = (QUICK if quick else FULL), 3
    runs = [("cpu", torch.float32)]
    if torch.device(device).type == "cuda":
        runs.append((device, torch.bfloat16))
    records = []
    for dev, dtype in runs:
        for preset in ("release", "paper"):
            records += _measure(preset, geometry, dev, dtype, repeats)
    return records
