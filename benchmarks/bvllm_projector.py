"""B-VLLM projector (issue 17): our batched forward + backward against a per-video loop of the same math,
and its FLOPs as a share of the SigLIP-so400m tower (not a timed test; not part of ``benchmarks.run``).

    python -m benchmarks.bvllm_projector            # 4 videos x 32 frames x 27x27x1152 -> 3584, paper preset
    python -m benchmarks.bvllm_projector --quick    # small shapes, a smoke run

* ours: one projector call over the packed micro-batch (every video's Q-Former_T, selection, merge,
  Q-Former_S and ToMe in one batch);
* baseline: one call per video, as the public code's ``vlm_attention`` loops over samples (the same
  module and weights, so the same math; the public code's per-sample structure, not its code).

Both take one training step (forward, backward of a loss over every video's tokens; Gumbel noise drawn
from a fixed seed, so both sides select the same slots). Records use the ids of issue 8 they mirror: P1
(batched vs looped time and peak memory), P4 (FLOPs share of the vision tower, counted by
``torch.utils.flop_counter`` on one 32-frame video's forward). Results:
``benchmarks/results/bvllm/<device>/bvllm_projector.json``; the committed runs are ``benchmarks/results/bvllm/
h200.json`` (the H200, CUDA fp32) and ``cpu16.json`` (its 16 CPU cores, fp32).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import compressor
from benchmarks.common import (RESULTS_DIR, Record, compared, fraction, interleaved_times, machine_info, median,
                               peak_memory_bytes, write_results)
from benchmarks.flops import siglip_vision_flops
from bvllm_plugin.projector import BVLLMProjector
from llava.model.visual import VisualBatch

logger = logging.getLogger(__name__)
QUESTIONS = ("what is the person holding at the start", "what colour is the car that drives past",
             "how many people enter the room", "what happens after the door opens")


@dataclass(frozen=True)
class Geometry(compressor.Geometry):
    """P1's geometry (4 videos x 32 frames x 27x27 x 1152 -> 3584) plus the B-VLLM preset."""

    preset: str = "paper"


FULL = Geometry()
QUICK = Geometry(videos=2, frames=8, grid=9, vision_dim=128, llm_dim=256, preset="tiny")


class Step:
    """One training step of the projector over fixed inputs, batched or looped over videos."""

    def __init__(self, g: Geometry, device: str, seed: int = 0) -> None:
        torch.manual_seed(seed)
        config = SimpleNamespace(mm_hidden_size=g.vision_dim, hidden_size=g.llm_dim, bvllm_preset=g.preset,
                                 bvllm_qformer_tokenizer="tiny", bvllm_overrides={"qformer_dropout": 0.0})
        self.module = BVLLMProjector(config).to(device).train()  # no dropout: both sides compute the same
        gen = torch.Generator(device=device).manual_seed(seed)
        self.features = torch.randn(g.videos * g.frames, g.grid, g.grid, g.vision_dim, generator=gen, device=device)
        self.noise = -torch.empty(g.videos, self.module.bvllm.num_slots, g.frames, device=device).exponential_(
            generator=gen).log()
        self.g = g

    def _noise_for(self, rows: slice):
        return lambda like: self.noise[rows]

    def _backward(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        torch.stack([t.square().mean() for t in tokens]).sum().backward()
        return [t.detach() for t in tokens]

    def batched(self) -> list[torch.Tensor]:
        self.module.zero_grad(set_to_none=True)
        g = self.g
        self.module.gumbel_noise = self._noise_for(slice(None))
        batch = VisualBatch(self.features, [g.frames] * g.videos, ["video"] * g.videos,
                            instructions=[QUESTIONS[i % len(QUESTIONS)] for i in range(g.videos)])
        return self._backward(self.module(batch))

    def loop(self) -> list[torch.Tensor]:
        self.module.zero_grad(set_to_none=True)
        g, tokens = self.g, []
        for i in range(g.videos):
            self.module.gumbel_noise = self._noise_for(slice(i, i + 1))
            rows = self.features[i * g.frames:(i + 1) * g.frames]
            tokens += self.module(VisualBatch(rows, [g.frames], ["video"], instructions=[QUESTIONS[i % len(QUESTIONS)]]))
        return self._backward(tokens)


def forward_flops(step: Step) -> int:
    """FLOPs of one video's forward (``torch.utils.flop_counter``: matmuls, attention, einsums)."""
    g = step.g
    rows = step.features[: g.frames]
    step.module.gumbel_noise = step._noise_for(slice(0, 1))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        step.module(VisualBatch(rows, [g.frames], ["video"], instructions=[QUESTIONS[0]]))
    return counter.get_total_flops()


def run(quick: bool = False, device: str = "cpu") -> list[Record]:
    g = QUICK if quick else FULL
    step = Step(g, device)
    ours_out, loop_out = step.batched(), step.loop()  # also the warm-up round
    max_diff = max((a - b).abs().max().item() for a, b in zip(ours_out, loop_out))
    counts = [t.shape[0] for t in ours_out]
    times = interleaved_times({"ours": step.batched, "loop": step.loop}, repeats=3, warmup=0, device=device)
    memory = {"ours": peak_memory_bytes(step.batched, device), "loop": peak_memory_bytes(step.loop, device)}
    flops = forward_flops(step)
    tower = siglip_vision_flops(g.frames)["total"]
    where = f"{g.videos} x {g.frames} x {g.grid}x{g.grid} x {g.vision_dim} -> {g.llm_dim}, {g.preset} preset, {device} fp32"
    details = {"geometry": dataclasses.asdict(g), "repeats_s": times, "peak_bytes": memory,
               "max_abs_output_diff": max_diff, "tokens_per_video": counts, "forward_flops_per_video": flops,
               "siglip_so400m_flops_32_frames": tower}
    logger.info("B-VLLM %s: ours %.2f s, loop %.2f s; peak %.0f / %.0f MiB; %.1f GFLOP/video; max diff %.2e",
                where, median(times["ours"]), median(times["loop"]), memory["ours"] / 2**20, memory["loop"] / 2**20,
                flops / 1e9, max_diff)
    return [
        compared("P1", f"B-VLLM projector fwd+bwd time ({where})", median(times["ours"]), median(times["loop"]), "s",
                 lower_is_better=True, target=">= 3", details=details),
        fraction("P1", f"B-VLLM projector fwd+bwd peak memory ({where})", memory["ours"] / 2**20,
                 memory["loop"] / 2**20, "MiB", target="<= 0.5",
                 note="peak bytes of tensors allocated during the step; weights and inputs excluded",
                 details={"peak_bytes": memory}),
        fraction("P4", f"B-VLLM projector / SigLIP-so400m vision FLOPs, one {g.frames}-frame video", flops / 1e9,
                 tower / 1e9, "GFLOP", target="<= 0.02" if not quick else None,
                 note="the projector's forward (both Q-Formers, selection, merges, linears) counted by "
                      "torch.utils.flop_counter; the tower analytically (benchmarks.flops)"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None,
                        help="result folder (default benchmarks/results/bvllm/<device>, or results/quick/bvllm; outside the folder "
                             "benchmarks.run tabulates)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    start = time.perf_counter()
    records = run(args.quick, args.device)
    out = args.out or (RESULTS_DIR / "quick" / "bvllm" if args.quick else RESULTS_DIR / "bvllm" / args.device)
    meta = {"command": "python -m benchmarks.bvllm_projector " + " ".join(sys.argv[1:] if argv is None else argv),
            "quick": args.quick, "seconds": time.perf_counter() - start, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info()}
    path = write_results(Path(out), "bvllm_projector", records, meta)
    for record in records:
        print(f"{record.id} {record.measure}: ours {record.ours:.4g} baseline {record.baseline:.4g} {record.unit} "
              f"ratio {record.ratio:.3g} (target {record.target}, met {record.met})")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
