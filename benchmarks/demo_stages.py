"""P5: wall time per stage of the untrained-model walkthrough, ``make walkthrough``
(``python -m llava.toy.walkthrough`` with the HICom projector), on this machine.

The demo's path, stage by stage, through the same public functions it calls: tiny offline checkpoints
(``llava.toy.tiny.make_all``), the synthetic mp4, model loading, decord decoding, SigLIP preprocessing,
tower + projector, and ``generate``, for the OneVision projector and for HICom, after a fresh
interpreter's imports. Each stage's value is its first, cold call (what one ``make walkthrough`` sees: lazy
imports, first-call kernel set-up); the warm median of further calls is in the details. The checkpoints
are built into a fresh temporary folder.

The embedded default itself (``make demo``: ``llava.toy.zoo``, the toy zoo) times its own runs:
``playground/demo/runs.json`` holds seconds per stage and per run.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from benchmarks.common import Record, median
from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import conv_templates
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import assemble_llava_qwen, load_pretrained_model
from llava.toy.tiny import make_all
from llava.toy.walkthrough import moving_square_frames
from llava.video import process_video_with_decord, write_video

logger = logging.getLogger(__name__)

QUESTION = "Where does the red square move?"


class StageTimer:
    """Times named stages; a stage run several times keeps every duration."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def __call__(self, name: str, fn: Callable[[], Any], repeats: int = 1) -> Any:
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn()
            self.seconds.setdefault(name, []).append(time.perf_counter() - start)
        return result


def _prompt_ids(tokenizer) -> torch.Tensor:
    conv = conv_templates["qwen_1_5"].copy()
    for role, text in zip(conv.roles, (f"{DEFAULT_IMAGE_TOKEN}\n{QUESTION}", None)):
        conv.append_message(role, text)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]


def _model_stages(timer: StageTimer, label: str, folder: Path, model_name: str, video_path: Path,
                  repeats: int, new_tokens: int) -> None:
    """Load, decode, preprocess, encode, generate with the checkpoint in ``folder``."""
    def load():
        return load_pretrained_model(str(folder), None, model_name, device_map="cpu", torch_dtype="float32")

    tokenizer, model, processor, _ = timer(f"{label}: load model", load, repeats)
    sampling = SimpleNamespace(frames_upbound=8, force_sample=True, video_fps=1)  # the demo's
    frames = timer(f"{label}: decode video (decord)", lambda: process_video_with_decord(str(video_path), sampling),
                   repeats)[0]
    video = timer(f"{label}: SigLIP preprocess", lambda: processor.preprocess(frames, return_tensors="pt"),
                  repeats)["pixel_values"]
    with torch.no_grad():
        timer(f"{label}: tower + projector", lambda: model.encode_visual_items([video], ["video"], [QUESTION]),
              repeats)
        ids = _prompt_ids(tokenizer)
        timer(f"{label}: generate {new_tokens} tokens", lambda: model.generate(
            ids, images=[video], modalities=["video"], max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, pad_token_id=tokenizer.pad_token_id), repeats)


def run(quick: bool = False, device: str = "cpu") -> list[Record]:
    repeats, new_tokens = (1, 4) if quick else (4, 16)
    timer = StageTimer()
    # In a child process: this one has imported everything already.
    timer("start python, import llava.toy.walkthrough (torch, transformers)",
          lambda: subprocess.run([sys.executable, "-c", "import llava.toy.walkthrough"], check=True))
    with tempfile.TemporaryDirectory(prefix="p5_demo_") as tmp:
        tmp = Path(tmp)
        paths = timer("build tiny checkpoints (llava.toy.tiny)", lambda: make_all(tmp / "tiny"))
        video_path = timer("write synthetic mp4",
                           lambda: write_video(tmp / "square.mp4", moving_square_frames(), fps=12))
        _model_stages(timer, "OneVision", paths["llava_qwen"], "llava_qwen", video_path, repeats, new_tokens)
        hicom = tmp / "tiny-hicom-qwen"
        timer("assemble HICom checkpoint", lambda: assemble_llava_qwen(
            paths["qwen2"], paths["siglip"], hicom, mm_projector_type="hicom", hicom_preset="paper"))
        _model_stages(timer, "HICom", hicom, "hicom", video_path, repeats, new_tokens)
    total = sum(s[0] for s in timer.seconds.values())
    logger.info("P5: %s", {name: round(s[0], 3) for name, s in timer.seconds.items()})
    records = [Record("P5", f"llava.toy.walkthrough stage: {name}", s[0], None, None, None, "s",
                      details={"runs_s": s, "warm_median_s": median(s[1:]) if len(s) > 1 else None})
               for name, s in timer.seconds.items()]
    records.append(Record(
        "P5", "llava.toy.walkthrough: all stages, cold", total, None, None, None, "s",
        note="first call of each stage; tiny random-weight checkpoints, CPU, fp32; no baseline or target "
             "(issue 8 asks for the breakdown); warm medians in the JSON details",
    ))
    return records
