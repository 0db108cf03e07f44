"""Shared video QA inference, in the ``model_vqa`` style: one process answers one chunk of a benchmark's
questions and appends the answers to a JSONL file.

Per question: resolve the video -> sample ``--num-frames`` frames (the whole video, the question's
segment, or a frame folder) -> pixel values -> prompt in the chat template with one ``<image>`` ->
``model.generate(..., instructions=[bare question])`` -> one answer line. The bare question is the
instruction that instruction-conditioned projectors see; the LLM gets the full benchmark prompt.

Resuming: questions already in ``--answers-file`` (for the same question set and settings) are
skipped, so rerunning an interrupted command answers only what is missing. A video that cannot be
decoded is recorded as a failed item and the run goes on; missing videos are an error before the
model is loaded (or, with ``--allow-missing-videos``, failed items too).

The thin entry points are ``llava.eval.model_video_mcqa`` and ``llava.eval.model_video_oqa``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle, conv_templates
from llava.mm_utils import (KeywordsStoppingCriteria, frames_to_decode, get_model_name_from_path, pixels_to,
                             tokenizer_image_token)
from llava.registry import load_plugins
from llava.utils import get_chunk, inside_root
from llava.video import VideoDecodeError

from .answers import AnswerWriter, check_answers, model_fingerprint, read_answers, write_lines
from .benchmarks import BENCHMARKS, DEFAULT_PROMPT_STYLE, PROMPT_STYLES, resolve_prompt_style
from .cli import MissingVideoError, UsageError, add_question_args, command, questions_from_args
from .questions import VideoQuestion
from .video_io import Clip, clip_pixels, load_clip, read_srt, resolve_video, subtitles_at

logger = logging.getLogger(__name__)


#: ``--visual-layout``: the pooling / newline config keys of lmms-eval's two stock wrappers for video
#: (``llava_onevision``: 2x2 bilinear, one trailing newline; ``llava_vid``: 2x2 average, a newline per row).
#: ``checkpoint`` keeps the checkpoint's own keys.
VISUAL_LAYOUTS = {
    "checkpoint": {},
    "onevision": {"mm_spatial_pool_mode": "bilinear", "mm_spatial_pool_stride": 2, "mm_newline_position": "one_token"},
    "llava_video": {"mm_spatial_pool_mode": "average", "mm_spatial_pool_stride": 2, "mm_newline_position": "grid"},
}


@dataclass
class LoadedModel:
    tokenizer: Any
    model: Any
    image_processor: Any


def build_parser(kind: str, max_new_tokens: int, description: str) -> argparse.ArgumentParser:
    command = {"mcqa": "model_video_mcqa", "oqa": "model_video_oqa"}[kind]
    parser = argparse.ArgumentParser(prog=f"python -m llava.eval.{command}", description=description)
    parser.add_argument("--model-path", required=True, help="the model folder (HF format, local)")
    parser.add_argument("--model-base", default=None,
                        help="the base LLM folder, for an adapter-only (stage 1/2) model path")
    add_question_args(parser, kind)
    parser.add_argument("--video-folder", required=True, help="the benchmark's video root (paths stay inside it)")
    parser.add_argument("--subtitle-folder", default=None,
                        help="videomme only: add the subtitles shown at the sampled frames (<videoID>.srt)")
    parser.add_argument("--answers-file", required=True, help="JSONL; appended to, and resumed from if it exists")
    parser.add_argument("--conv-mode", default="qwen_1_5", help="conversation template (llava.conversation)")
    parser.add_argument("--prompt-style", default=DEFAULT_PROMPT_STYLE,
                        help=f"{' | '.join(PROMPT_STYLES)} (or an alias a plugin registers): release: the released "
                             "evaluation scripts' prompts; lmms: lmms-eval's default prompts")
    parser.add_argument("--num-chunks", type=int, default=1, help="split the questions into this many chunks")
    parser.add_argument("--chunk-idx", type=int, default=0, help="the chunk this process answers (0-based)")
    parser.add_argument("--num-frames", type=int, default=32, help="frames sampled per video (no upper limit)")
    parser.add_argument("--video-backend", default="auto", choices=("auto", "decord", "pyav"),
                        help="auto: decord when installed, PyAV for what it cannot read")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None, help="nucleus sampling (with --temperature > 0)")
    parser.add_argument("--num_beams", "--num-beams", dest="num_beams", type=int, default=1, help="beam search width")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=max_new_tokens,
                        help="longest answer, in tokens")
    parser.add_argument("--seed", type=int, default=0, help="with sampling: each question gets seed(seed, question id)")
    parser.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda:0 ...")
    parser.add_argument("--torch-dtype", default=None, help="float16 / bfloat16 / float32 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--attn-implementation", default=None,
                        help="sdpa | flash_attention_2 | eager (default: flash-attn 2 on a GPU when installed, else SDPA)")
    parser.add_argument("--token-reducer", default=None,
                        help="a registered training-free token reducer applied to the checkpoint (default: none)")
    parser.add_argument("--token-reducer-config", default=None, help='JSON of the reducer\'s options, e.g. {"ratio": 0.25}')
    parser.add_argument("--visual-layout", default="checkpoint", choices=tuple(VISUAL_LAYOUTS),
                        help="token layout of token-wise projectors: the checkpoint's, or that of lmms-eval's "
                             "llava_onevision (196 tokens/frame at 384 px + one newline) or llava_vid wrapper "
                             "(169 + 13 row newlines per frame)")
    parser.add_argument("--allow-missing-videos", action="store_true",
                        help="record questions whose video is missing as failed instead of stopping")
    parser.add_argument("--retry-failed", action="store_true", help="answer again the items recorded as failed")
    parser.add_argument("--allow-outside-data-root", action="store_true",
                        help="read video paths that are absolute or leave --video-folder via '..' (refused by default)")
    return parser


def load_model(args: argparse.Namespace) -> LoadedModel:
    from llava.model.builder import load_pretrained_model

    dtype = args.torch_dtype or ("bfloat16" if torch.cuda.is_available() and args.device != "cpu" else "float32")
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, args.model_base, get_model_name_from_path(args.model_path), device_map=args.device,
        torch_dtype=dtype, attn_implementation=args.attn_implementation,
    )
    if image_processor is None:
        raise UsageError(f"{args.model_path} has no vision tower: it cannot answer video questions")
    for key, value in VISUAL_LAYOUTS[getattr(args, "visual_layout", "checkpoint")].items():
        setattr(model.config, key, value)  # read at every forward
    if getattr(args, "token_reducer", None) is not None:
        try:
            model.get_model().set_token_reducer(args.token_reducer, reducer_options(args))
        except ValueError as err:
            raise UsageError(f"--token-reducer: {err}") from None
    return LoadedModel(tokenizer, model, image_processor)


def reducer_options(args: argparse.Namespace) -> dict | None:
    """``--token-reducer-config`` parsed (a JSON object), or ``None``."""
    text = getattr(args, "token_reducer_config", None)
    if text is None:
        return None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--token-reducer-config is not valid JSON ({err.msg}): {text!r}") from None
    if not isinstance(options, dict):
        raise UsageError(f"--token-reducer-config must be a JSON object, got {text!r}")
    return options


def run_settings(args: argparse.Namespace) -> dict:
    """The settings that shape the answers; an answers file is only resumed under the same ones."""
    settings = {
        "benchmark": args.benchmark, "model_id": get_model_name_from_path(args.model_path),
        "model_base": args.model_base, "conv_mode": args.conv_mode,
        "prompt_style": resolve_prompt_style(args.prompt_style),
        "num_frames": args.num_frames, "subtitles": args.subtitle_folder is not None,
        "temperature": args.temperature, "top_p": args.top_p, "num_beams": args.num_beams,
        "max_new_tokens": args.max_new_tokens, "seed": args.seed, "torch_dtype": args.torch_dtype,
        "model_weights": model_fingerprint(args.model_path),
    }
    if args.model_base:
        settings["model_base_weights"] = model_fingerprint(args.model_base)
    if getattr(args, "token_reducer", None) is not None:  # absent otherwise: earlier answers files resume
        settings.update(token_reducer=args.token_reducer, token_reducer_config=reducer_options(args))
    if getattr(args, "visual_layout", "checkpoint") != "checkpoint":
        settings["visual_layout"] = args.visual_layout
    return settings


def item_seed(seed: int, qid: str) -> int:
    """A per-question seed, so sampled answers do not depend on how questions are chunked."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{qid}".encode()).digest()[:8], "little") % (2**63)


class VideoQA:
    """Answers questions with one loaded model, one at a time, under the run's flags."""

    def __init__(self, loaded: LoadedModel, args: argparse.Namespace):
        self.loaded = loaded
        self.args = args
        self._last: tuple[tuple, Clip, torch.Tensor] | None = None  # consecutive questions often share a video

    def visual(self, question: VideoQuestion, path: Path) -> tuple[Clip, torch.Tensor]:
        key = (path, question.bound)
        if self._last is None or self._last[0] != key:
            frames = frames_to_decode(self.loaded.image_processor, self.args.num_frames)
            clip = load_clip(path, frames, question.bound, backend=self.args.video_backend)
            aspect = getattr(self.loaded.model.config, "image_aspect_ratio", None)
            self._last = (key, clip, clip_pixels(clip, self.loaded.image_processor, aspect))
        return self._last[1], self._last[2]

    def subtitles(self, question: VideoQuestion, clip: Clip) -> str | None:
        if self.args.subtitle_folder is None:
            return None
        srt = Path(self.args.subtitle_folder) / question.info.get("subtitle", "")
        return subtitles_at(read_srt(srt), clip.times) if srt.is_file() else ""

    def answer(self, prompt: str, instruction: str, pixels: torch.Tensor, qid: str) -> str:
        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        image = DEFAULT_IMAGE_TOKEN
        if getattr(model.config, "mm_use_im_start_end", False):
            image = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
        conv = conv_templates[self.args.conv_mode].copy()
        conv.append_message(conv.roles[0], f"{image}\n{prompt}")
        conv.append_message(conv.roles[1], None)
        device = next(model.parameters()).device
        ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None].to(device)
        stop = conv.sep2 if conv.sep_style == SeparatorStyle.TWO else conv.sep
        sample = self.args.temperature > 0
        if sample:
            torch.manual_seed(item_seed(self.args.seed, qid))
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), images=[pixels_to(pixels, device=device, dtype=model.dtype)],
            modalities=["video"], instructions=[instruction], do_sample=sample, temperature=self.args.temperature,
            top_p=self.args.top_p, num_beams=self.args.num_beams, max_new_tokens=self.args.max_new_tokens,
            use_cache=True, pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            stopping_criteria=[KeywordsStoppingCriteria([stop], tokenizer, ids)] if stop else None,
        )
        text = tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()
        return text[: -len(stop)].strip() if stop and text.endswith(stop) else text

    def record_extras(self) -> dict:
        """Extra keys for the answer line of the question just answered (a measuring subclass adds its
        measurements here; see ``llava.eval.compare``)."""
        return {}


def run_inference(args: argparse.Namespace, loaded: LoadedModel | None = None,
                  qa_class: type[VideoQA] = VideoQA) -> dict:
    """Answers this chunk's unanswered questions; returns counts. ``loaded`` skips model loading;
    ``qa_class`` answers (a subclass may measure and add keys to each answer line)."""
    benchmark = BENCHMARKS[args.benchmark]
    style = resolve_prompt_style(args.prompt_style)
    if args.subtitle_folder is not None and args.benchmark != "videomme":
        raise UsageError("--subtitle-folder is only used by videomme")
    if not 0 <= args.chunk_idx < args.num_chunks:
        raise UsageError(f"--chunk-idx {args.chunk_idx} is outside [0, --num-chunks {args.num_chunks})")
    questions, fingerprint = questions_from_args(args)
    chunk = list(get_chunk(questions, args.num_chunks, args.chunk_idx))
    path = Path(args.answers_file)
    run = run_settings(args)

    existing = read_answers(path, repair=True)
    model_path = os.path.abspath(args.model_path) if Path(args.model_path).exists() else args.model_path
    check_answers(path, existing, fingerprint, questions, run=run, model_path=model_path)
    if args.retry_failed and any(r["failed"] for r in existing.values()):
        existing = {qid: r for qid, r in existing.items() if not r["failed"]}
        write_lines(path, existing.values())
    todo = [q for q in chunk if q.qid not in existing]
    logger.info("%s chunk %d/%d: %d questions, %d already answered in %s, %d to answer", args.benchmark,
                args.chunk_idx, args.num_chunks, len(chunk), len(chunk) - len(todo), path, len(todo))

    folder = Path(args.video_folder)
    if not args.allow_outside_data_root:
        for q in todo:
            outside = [name for name in q.videos if not inside_root(str(folder / name), str(folder))]
            if outside:
                raise UsageError(f"question {q.qid}: video path {outside[0]!r} leaves --video-folder {folder} "
                                 "(pass --allow-outside-data-root to permit)")
    videos = {q.qid: resolve_video(folder, q.videos) for q in todo}
    missing = [q for q in todo if videos[q.qid] is None]
    if missing and not args.allow_missing_videos:
        examples = ", ".join(str(folder / q.videos[0]) for q in missing[:3])
        raise MissingVideoError(
            f"{len(missing)} of {len(todo)} questions to answer have no video under {folder}, e.g. {examples} "
            "(pass --allow-missing-videos to record them as failed and go on)"
        )
    counts = {"chunk_questions": len(chunk), "already_answered": len(chunk) - len(todo), "answered": 0, "failed": 0}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    if not todo:
        return counts

    loaded = loaded or load_model(args)
    qa = qa_class(loaded, args)
    with AnswerWriter(path) as writer:
        for question in tqdm(todo, desc=f"{args.benchmark} {args.chunk_idx + 1}/{args.num_chunks}", unit="q"):
            prompt = text = failed = None
            extras = {}
            video = videos[question.qid]
            if video is None:
                failed = f"video not found under {folder} (tried {', '.join(question.videos[:3])} ...)"
            else:
                try:
                    clip, pixels = qa.visual(question, video)
                except VideoDecodeError as err:
                    logger.warning("question %s: %s", question.qid, err)
                    failed = str(err)
                else:
                    prompt = benchmark.prompt(question, style, qa.subtitles(question, clip))
                    text = qa.answer(prompt, question.question, pixels, question.qid)
                    extras = qa.record_extras()
            writer.write({"question_id": question.qid, "prompt": prompt, "text": text, "model_id": run["model_id"],
                          "model_path": model_path, "failed": failed, "question_set": fingerprint, "run": run,
                          **extras})
            counts["failed" if failed else "answered"] += 1
    logger.info("%s: answered %d, failed %d (written to %s)", args.benchmark, counts["answered"], counts["failed"], path)
    return counts


def make_main(kind: str, max_new_tokens: int, description: str):
    """``main(argv)`` of an inference command for the benchmarks of ``kind``."""

    def run(args: argparse.Namespace) -> int:
        load_plugins()  # plugins may register prompt-style aliases
        run_inference(args)
        return 0

    return command(run, build_parser(kind, max_new_tokens, description))
