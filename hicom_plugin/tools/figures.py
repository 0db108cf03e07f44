"""Figures of the embedded default (:mod:`hicom_plugin.tools.demo`), drawn with PIL only.

* :func:`attention_figure`: the paper's Fig. 6 at toy scale: for a few held-out videos, the sampled
  frames and, under each, the attention of the local branch (each patch's weight inside its
  ``(4, 3, 3)`` group) and of the global branch (mean over queries and heads), for two different
  instructions, for each model given (e.g. unconditional and conditional). The object each
  instruction names is boxed in red.
* :func:`ablation_chart`: accuracy per row with ±std whiskers, visual tokens under each bar, the
  chance level dashed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

SCALE = 3  # pixels per video pixel in the attention figure
LABEL_WIDTH = 260
ROW_GAP = 4


def attention_maps(model, pixels: torch.Tensor, instruction: str) -> dict[str, np.ndarray]:
    """``{"local": (T, H, W), "global": (T, H, W)}`` attention of a HICom model's branches for one
    video (``pixels`` ``(T, 3, S, S)``) under ``instruction``; branches the model lacks are left out."""
    compressor = model.get_model().mm_projector.compressor
    compressor.record_attention(True)
    try:
        with torch.no_grad():
            model.encode_visual_items([pixels], ["video"], [instruction])
        attention = compressor.last_attention
    finally:
        compressor.record_attention(False)
    t = pixels.shape[0]
    grid = model.get_vision_tower().num_patches_per_side
    maps = {}
    if "local" in attention:
        weights, coords = attention["local"][0].float(), attention["local_coords"][0]
        valid = attention["local_valid"][0]
        local = torch.zeros(t, grid, grid)
        c = coords[valid]
        local.index_put_((c[:, 0], c[:, 1], c[:, 2]), weights[valid], accumulate=True)
        maps["local"] = local.numpy()
    if "global" in attention:
        weights = attention["global"][0].float().mean(dim=(0, 1))  # over heads and queries
        maps["global"] = weights[: t * grid * grid].reshape(t, grid, grid).numpy()
    return maps


def _heat(frame: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The frame dimmed, with ``weights`` (one per patch, scaled to their max) in a black-red-yellow ramp."""
    size = frame.shape[0]
    w = weights / max(float(weights.max()), 1e-8)
    w = np.kron(w, np.ones((size // w.shape[0], size // w.shape[1])))
    w = np.pad(w, ((0, size - w.shape[0]), (0, size - w.shape[1])), mode="edge")
    ramp = np.stack([np.clip(3 * w, 0, 1), np.clip(3 * w - 1, 0, 1), np.clip(3 * w - 2, 0, 1)], -1) * 255
    return (0.3 * frame + 0.7 * ramp).astype(np.uint8)


def _strip(frames: list[np.ndarray], box: tuple[int, int, int] | None, cell: int) -> Image.Image:
    """Frames side by side, upscaled, with a red box on ``(row, col, first frame)`` where visible."""
    tiles = []
    for index, frame in enumerate(frames):
        tile = Image.fromarray(frame).resize((frame.shape[1] * SCALE, frame.shape[0] * SCALE), Image.NEAREST)
        if box is not None and index >= box[2]:
            row, col = box[0] * cell * SCALE, box[1] * cell * SCALE
            ImageDraw.Draw(tile).rectangle([col, row, col + cell * SCALE - 1, row + cell * SCALE - 1],
                                           outline=(255, 40, 40), width=2)
        tiles.append(tile)
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + 2
    return strip


def attention_figure(models: dict[str, Path], questions_dir: Path, videos_dir: Path, out: Path,
                     num_frames: int = 8, examples: int = 2) -> Path:
    """Draws :func:`attention_maps` of each model in ``models`` (label -> checkpoint folder) for the
    first ``examples`` questions of the synthetic MVBench set: its own question and one about
    another object of the same group."""
    from llava.mm_utils import get_model_name_from_path, process_video_frames
    from llava.model.builder import load_pretrained_model
    from llava.toy.synthetic import EVAL_TASK_FILE, EVAL_VIDEO_DIR, color_question
    from llava.video import load_video_frames

    items = json.loads((Path(questions_dir) / EVAL_TASK_FILE).read_text())[:examples]
    loaded = {}
    for label, folder in models.items():
        _, model, processor, _ = load_pretrained_model(str(folder), None, get_model_name_from_path(str(folder)),
                                                       device_map="cpu", torch_dtype="float32")
        loaded[label] = (model.eval(), processor, getattr(model.config, "image_aspect_ratio", None))
    grid = next(iter(loaded.values()))[0].get_vision_tower().num_patches_per_side
    rows: list[tuple[str, Image.Image]] = []
    for item in items:
        video = load_video_frames(Path(videos_dir) / EVAL_VIDEO_DIR / item["video"], num_frames=num_frames)
        frames = list(video.frames)
        cell = frames[0].shape[0] // grid  # video pixels per patch (the synthetic frames match the tower)
        asked = next(o for o in item["objects"] if color_question(o["rim"]) == item["question"])
        other = next(o for o in item["objects"] if o["in_block"] and o is not asked)
        rows.append((f"{item['video']}", _strip(frames, None, cell)))
        for obj in (asked, other):
            instruction = color_question(obj["rim"])
            first = _first_sampled(obj["appears"], video.frame_indices)
            for label, (model, processor, aspect) in loaded.items():
                pixels = process_video_frames(video.frames, processor, aspect)
                for branch, weights in attention_maps(model, pixels, instruction).items():
                    heat = [_heat(frame, weights[t]) for t, frame in enumerate(frames)]
                    rows.append((f"{label}, {branch}\n\"{instruction}\"", _strip(heat, (*obj["cell"], first), cell)))
    return _compose(rows, out, "Attention of the compressor's branches (red box: the object the instruction names)")


def _first_sampled(appears: int, frame_indices) -> int:
    """Index of the first sampled frame in which an object appearing at video frame ``appears`` is visible."""
    for index, frame in enumerate(frame_indices):
        if frame >= appears:
            return index
    return len(frame_indices)


def _compose(rows: list[tuple[str, Image.Image]], out: Path, title: str) -> Path:
    width = LABEL_WIDTH + max(image.width for _, image in rows)
    height = 30 + sum(image.height + ROW_GAP for _, image in rows)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 8), title, fill="black")
    y = 30
    for label, image in rows:
        draw.multiline_text((8, y + 4), label, fill="black")
        canvas.paste(image, (LABEL_WIDTH, y))
        y += image.height + ROW_GAP
    out = Path(out)
    canvas.save(out)
    return out


def ablation_chart(rows: list[dict], labels: dict[str, str], out: Path, chance: float) -> Path:
    """Bars of ``results.json`` rows (accuracy mean, ±std whiskers), tokens under each bar, the
    ``chance`` level (percent) dashed."""
    bar, gap, left, top, plot_h = 90, 40, 60, 50, 300
    width = left + len(rows) * (bar + gap) + gap
    canvas = Image.new("RGB", (width, top + plot_h + 90), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((left, 12), "Toy-scale Table 4: accuracy on the held-out set (mean ± std over seeds)", fill="black")

    def y_of(value: float) -> float:
        return top + plot_h * (1 - value / 100)

    for tick in range(0, 101, 25):
        draw.line([(left - 5, y_of(tick)), (width - gap // 2, y_of(tick))], fill=(225, 225, 225))
        draw.text((8, y_of(tick) - 6), f"{tick}%", fill="black")
    for x in range(left, width - gap // 2, 12):
        draw.line([(x, y_of(chance)), (x + 6, y_of(chance))], fill=(120, 120, 120), width=2)
    draw.text((width - gap // 2 - 50, y_of(chance) - 14), "chance", fill=(120, 120, 120))
    for index, row in enumerate(rows):
        x0 = left + gap + index * (bar + gap)
        mean, std = row["acc_mean"], row["acc_std"]
        colour = (200, 60, 50) if row["name"].startswith("cond") else (110, 130, 160)
        draw.rectangle([x0, y_of(mean), x0 + bar, y_of(0)], fill=colour)
        if std:
            centre = x0 + bar // 2
            draw.line([(centre, y_of(mean - std)), (centre, y_of(min(mean + std, 100)))], fill="black", width=2)
        draw.text((x0, y_of(mean) - 14), f"{mean:.1f}", fill="black")
        draw.text((x0, top + plot_h + 6), row["name"], fill="black")
        draw.text((x0, top + plot_h + 22), f"{row['tokens']} tokens", fill=(80, 80, 80))
        draw.multiline_text((x0, top + plot_h + 38), labels.get(row["name"], "").replace(", ", ",\n"),
                            fill=(80, 80, 80))
    out = Path(out)
    canvas.save(out)
    return out
