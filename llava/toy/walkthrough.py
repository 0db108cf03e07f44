"""A walkthrough of the video path on untrained tiny offline checkpoints, on a CPU (``make walkthrough``).

    python -m llava.toy.walkthrough --out playground/walkthrough \\
        [--projector NAME [--projector-config JSON]] ...

Builds the tiny checkpoints (:mod:`llava.toy.tiny`) under ``--tiny``, writes a synthetic mp4 (a
coloured square crossing the frame), decodes it with decord, and runs tower -> projector -> LLM
``generate`` for the video and for one image with OneVision's token-wise path (``mlp2x_gelu`` + 2x2
pooling), printing the visual token counts. Each ``--projector NAME`` (any name of the projector
registry, plugins included; repeatable) runs the same video through a tiny model built with that
projector, ``--projector-config`` adding config keys for the ``--projector`` before it; the question
goes along, for projectors conditioned on the instruction.

The tiny models have random weights: the text they produce is meaningless; the point is that every
stage runs end to end.
"""

from __future__ import annotations

import argparse
import hashlib
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
from llava.model.multimodal_projector.builder import list_projectors
from llava.toy.tiny import make_all
from llava.video import process_video_with_decord, write_video

logger = logging.getLogger(__name__)

VIDEO_QUESTION = "Where does the red square move?"
IMAGE_QUESTION = "What colour is the square?"
# SigLIP-so400m/14@384's grid, for the record of what a projector makes of a real-size input
SO400M_SIDE = 27


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


class _ProjectorAction(argparse.Action):
    """``--projector NAME``: appends ``{"name": NAME, "config": None}`` to the projectors to run."""

    def __call__(self, parser, namespace, value, option_string=None):
        runs = list(getattr(namespace, self.dest) or [])
        runs.append({"name": value, "config": None})
        setattr(namespace, self.dest, runs)


class _ProjectorConfigAction(argparse.Action):
    """``--projector-config JSON``: config keys of the ``--projector`` given just before it."""

    def __call__(self, parser, namespace, value, option_string=None):
        runs = getattr(namespace, "projectors", None)
        if not runs:
            parser.error(f"{option_string} {value!r} must follow the --projector it configures")
        if runs[-1]["config"] is not None:
            parser.error(f"{option_string}: --projector {runs[-1]['name']} is configured twice")
        try:
            config = json.loads(value)
        except json.JSONDecodeError as err:
            parser.error(f"{option_string} for --projector {runs[-1]['name']} is not valid JSON ({err.msg}): {value!r}")
        if not isinstance(config, dict):
            parser.error(f"{option_string} for --projector {runs[-1]['name']} must be a JSON object of config "
                         f"keys, got {value!r}")
        runs[-1]["config"] = config


def _checkpoint_folder(tiny: Path, name: str, config: dict) -> Path:
    """One folder per (projector, config): a cached checkpoint is only reused for the same settings."""
    if not config:
        return tiny / f"tiny-{name}-qwen"
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    return tiny / f"tiny-{name}-{digest}-qwen"


def run_projector(tiny: Path, paths: dict, name: str, config: dict, video: torch.Tensor,
                  max_new_tokens: int) -> dict:
    """The walkthrough's video through a tiny model whose projector is the registered ``name``."""
    folder = _checkpoint_folder(tiny, name, config)
    if not (folder / "config.json").is_file():
        assemble_llava_qwen(paths["qwen2"], paths["siglip"], folder, mm_projector_type=name, **config)
    tokenizer, model, _, _ = load_pretrained_model(str(folder), None, folder.name, device_map="cpu",
                                                   torch_dtype="float32")
    answer, tokens = _ask(tokenizer, model, video, "video", VIDEO_QUESTION, max_new_tokens)
    result = {"name": name, "config": config, "checkpoint": str(folder), "video_tokens": tokens,
              "video_answer": answer}
    count = getattr(model.get_model().mm_projector, "num_output_tokens", None)
    if count is not None:  # a projector that compresses whole items says what it makes of real-size ones
        result["tokens_32_frames_so400m"] = count(32, SO400M_SIDE, SO400M_SIDE)
        result["tokens_image_so400m"] = count(1, SO400M_SIDE, SO400M_SIDE, "image")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.toy.walkthrough", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="playground/walkthrough", help="where the video and results.json go")
    parser.add_argument("--tiny", default="playground/tiny", help="where the tiny checkpoints are made")
    parser.add_argument("--num-frames", type=int, default=8, help="frames sampled from the synthetic video")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="longest answer of the untrained models")
    parser.add_argument("--projector", dest="projectors", action=_ProjectorAction, default=[], metavar="NAME",
                        help="also run the video through a tiny model with this registered projector (repeatable)")
    parser.add_argument("--projector-config", action=_ProjectorConfigAction, metavar="JSON",
                        help='config keys for the --projector before it, e.g. \'{"mm_spatial_pool_stride": 3}\'')
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    registered = list_projectors()
    unknown = [run["name"] for run in args.projectors if run["name"] not in registered]
    if unknown:
        parser.error(f"--projector {', '.join(unknown)}: not registered; registered projectors: "
                     f"{', '.join(registered)}")
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
    answer, tokens = _ask(tokenizer, model, video, "video", VIDEO_QUESTION, args.max_new_tokens)
    results.update(video_tokens=tokens, video_answer=answer)
    answer, tokens = _ask(tokenizer, model, image, "image", IMAGE_QUESTION, args.max_new_tokens)
    results.update(image_tokens=tokens, image_answer=answer, seconds=round(time.perf_counter() - start, 1))
    results["projectors"] = [run_projector(Path(args.tiny), paths, run["name"], run["config"] or {}, video,
                                           args.max_new_tokens) for run in args.projectors]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
