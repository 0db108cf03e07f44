"""Picture of B-VLLM's text-conditioned frame selection: which frames each selector slot weighs, for one
video under two questions (issue 17). Drawn with Pillow.

    python -m benchmarks.bvllm_picture [--out benchmarks/results/bvllm/selection.png]

What it shows is the mechanism, at toy scale: a tiny projector (``bvllm_preset: tiny``) whose selector
(Q-Former_T, its queries, the score projection) was trained for a few Adam steps on the slot weights
alone, on one 6-frame video in which frame 1 carries a "red" signature and frame 4 a "blue" one, to put
its weight on the frame each question names. The same video and the same weights then give different
slot weights for the two questions; the picture prints the slots kept after the γ merge and the token
count of each question. ``conditioned_selector`` is shared with ``tests/bvllm_plugin``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image, ImageDraw, ImageFont

from bvllm_plugin.projector import BVLLMProjector
from llava.model.visual import VisualBatch

VISION, LLM, GRID, FRAMES = 32, 64, 3, 6
LESSONS = (("where is the red square", 1), ("count the blue circles", 4))
SWATCHES = {1: (214, 39, 40), 4: (31, 119, 180)}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bvllm" / "selection.png"


def conditioned_selector(steps: int = 25, seed: int = 3) -> tuple[BVLLMProjector, torch.Tensor]:
    """A tiny projector whose selector learned to weigh the frame a question names (module docstring),
    in eval mode, and the ``(FRAMES, GRID, GRID, VISION)`` features of the video."""
    torch.manual_seed(seed)
    config = SimpleNamespace(mm_hidden_size=VISION, hidden_size=LLM, bvllm_preset="tiny", bvllm_qformer_tokenizer="tiny")
    p = BVLLMProjector(config).eval()
    feats = torch.randn(FRAMES, GRID, GRID, VISION, generator=torch.Generator().manual_seed(seed + 1))
    signature = 3 * torch.linspace(-1, 1, VISION)
    feats[1] += signature
    feats[4] -= signature
    selector = [x for name, x in p.named_parameters() if not name.startswith("spatial")]
    optimizer = torch.optim.Adam(selector, lr=1e-2)
    texts = {q: p.text([q], feats.device) for q, _ in LESSONS}
    for _ in range(steps):
        loss = 0.0
        for question, frame in LESSONS:
            weights, _, _ = p.select(feats.flatten(1, 2), [FRAMES], *texts[question])
            loss = loss - weights[0, :, frame].clamp_min(1e-9).log().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return p, feats


def selections(p: BVLLMProjector, feats: torch.Tensor) -> list[dict]:
    """Per question: its slot weights ``(K, T)``, kept slots and token count."""
    out = []
    with torch.no_grad():
        for question, _ in LESSONS:
            tokens = p(VisualBatch(feats, [FRAMES], ["video"], instructions=[question]))[0]
            state = p.last_selection
            out.append({"question": question, "weights": state["weights"][0, :, :FRAMES].clone(),
                        "kept": state["kept"][0].tolist(), "tokens": tokens.shape[0]})
    return out


def draw(panels: list[dict], path: Path) -> Path:
    cell, left, top, gap = 56, 90, 120, 110
    k = panels[0]["weights"].shape[0]
    width = left + len(panels) * (FRAMES * cell + gap) + 20
    height = top + k * cell + 90
    image = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    pen.text((20, 15), "B-VLLM frame selection: slot weights over frames, one video, two questions "
                       "(tiny projector, selector trained on the slot weights only)", fill="black", font=font)
    for p_index, panel in enumerate(panels):
        x0 = left + p_index * (FRAMES * cell + gap)
        pen.text((x0, 45), f"Q: {panel['question']}", fill="black", font=font)
        pen.text((x0, 62), f"kept slots {sum(panel['kept'])} of {k} -> {panel['tokens']} tokens", fill="black", font=font)
        for t in range(FRAMES):  # the frames: grey, red or blue swatches
            colour = SWATCHES.get(t, (190, 190, 190))
            pen.rectangle([x0 + t * cell + 8, 82, x0 + (t + 1) * cell - 8, top - 8], fill=colour)
            pen.text((x0 + t * cell + 20, top + k * cell + 8), f"f{t}", fill="black", font=font)
        for slot in range(k):
            pen.text((x0 - 60, top + slot * cell + 20), f"slot {slot}", fill="black", font=font)
            for t in range(FRAMES):
                w = float(panel["weights"][slot, t])
                shade = int(255 * (1 - w))
                box = [x0 + t * cell, top + slot * cell, x0 + (t + 1) * cell - 2, top + (slot + 1) * cell - 2]
                pen.rectangle(box, fill=(shade, shade, 255 if w > 0 else shade), outline=(220, 220, 220))
                pen.text((box[0] + 12, box[1] + 20), f"{w:.2f}", fill="black" if w < 0.5 else "white", font=font)
    pen.text((20, height - 30), "cell = softmax weight of the frame in the slot (eval: no Gumbel noise); "
                                "swatches: frame 1 red, frame 4 blue", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    panels = selections(*conditioned_selector())
    for panel in panels:
        print(panel["question"], "-> argmax frames per slot", panel["weights"].argmax(-1).tolist(),
              "kept", panel["kept"], "tokens", panel["tokens"])
    print(draw(panels, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
