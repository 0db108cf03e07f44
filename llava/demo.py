"""A walkthrough of the video path on untrained tiny offline checkpoints, on a CPU (``make walkthrough``).

    python -m llava.demo --out playground/walkthrough

Builds the tiny checkpoints (``llava.tiny``) under ``--tiny``, writes a synthetic mp4 (a coloured
square crossing the frame), decodes it with decord, and runs tower -> projector -> LLM ``generate``
for the video and for one image, printing the visual token counts — once with OneVision's
``mlp2x_gelu`` projector + 2x2 pooling and once with the HICom projector (``mm_projector_type
"hicom"``, found through the projector registry's entry points), conditioned on the question.
The tiny models have random weights: the text they produce is meaningless; the point is that every
stage runs end to end.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import conv_templates
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import assemble_llava_qwen, load_pretrained_model
from llava.tiny import make_all
from llava.utils import process_video_with_decord, write_video

logger = logging.getLogger("llava.demo")


def moving_square_frames(num_frames: int = 48, size: int = 96, seed: int = 0) -> np.ndarray:
    """``(T, size, size, 3)`` uint8: a red square moving left to right over a grey background."""
    rng = np.random.default_rng(seed)
    frames = np.full((num_frames, size, size, 3), 110, dtype=np.uint8)
    side = size // 4
    top = int(rng.integers(0, size - side))
    for t in range(num_frames):
        left = int((size - side) * t / max(num_frames - 1, 1))
        frames[t, top : top + side, left : left + side] = (220, 30, 30)
    return frames


def _ask(tokenizer, model, visual, modality: str, question: str, max_new_tokens: int) -> tuple[str, int]:
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]
    with torch.no_grad():
        item = visual if visual.ndim == 4 else visual[None]
        tokens = model.encode_visual_items([item], [modality], [question])[0].shape[0]
    out = model.generate(ids, images=[visual], modalities=[modality], max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out, skip_special_tokens=True)[0], tokens


def _run_hicom(tiny: Path, paths: dict, video: torch.Tensor, max_new_tokens: int) -> dict:
    """The same video through a tiny HICom model (paper preset), if the plugin is installed."""
    from llava.model.multimodal_projector.builder import list_projectors

    if "hicom" not in list_projectors():
        logger.warning("the hicom projector is not registered (pip install -e . installs the plugin)")
        return {"available": False}
    folder = tiny / "tiny-hicom-qwen"
    if not (folder / "config.json").is_file():
        assemble_llava_qwen(paths["qwen2"], paths["siglip"], folder, mm_projector_type="hicom", hicom_preset="paper")
    tokenizer, model, _, _ = load_pretrained_model(str(folder), None, "hicom", device_map="cpu", torch_dtype="float32")
    answer, tokens = _ask(tokenizer, model, video, "video", "Where does the red square move?", max_new_tokens)
    projector = model.get_model().mm_projector
    return {
        "available": True,
        "video_tokens": tokens,
        "video_answer": answer,
        # SigLIP-so400m geometry (27x27 patches per frame), for the record
        "tokens_32_frames_so400m": projector.num_output_tokens(32, 27, 27),
        "tokens_image_so400m": projector.num_output_tokens(1, 27, 27, "image"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="playground/demo", help="where the video and results.json go")
    parser.add_argument("--tiny", default="playground/tiny", help="where the tiny checkpoints are made")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = make_all(Path(args.tiny))
    video_path = write_video(out / "moving_square.mp4", moving_square_frames(), fps=12)
    logger.info("wrote %s", video_path)

    tokenizer, model, processor, _ = load_pretrained_model(
        str(paths["llava_qwen"]), None, "llava_qwen", device_map="cpu", torch_dtype="float32"
    )
    frames, duration, _, num = process_video_with_decord(
        str(video_path), SimpleNamespace(frames_upbound=args.num_frames, force_sample=True, video_fps=1)
    )
    video = processor.preprocess(frames, return_tensors="pt")["pixel_values"]
    image = processor.preprocess(Image.fromarray(frames[0]), return_tensors="pt")["pixel_values"][0]

    results = {"video": str(video_path), "video_seconds": round(float(duration), 2), "frames": int(num)}
    answer, tokens = _ask(tokenizer, model, video, "video", "Where does the red square move?", args.max_new_tokens)
    results.update(video_tokens=tokens, video_answer=answer)
    answer, tokens = _ask(tokenizer, model, image, "image", "What colour is the square?", args.max_new_tokens)
    results.update(image_tokens=tokens, image_answer=answer, seconds=round(time.perf_counter() - start, 1))
    results["hicom"] = _run_hicom(Path(args.tiny), paths, video, args.max_new_tokens)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
