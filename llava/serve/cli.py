"""Ask a LLaVA-style checkpoint (any registered projector) about a video (or an image) from a terminal or from a script.

    # interactive chat; answers are printed while they are generated
    python -m llava.serve.cli --model-path CKPT --video-file clip.mp4 [--num-frames 32]
    # one-shot: only the answer goes to stdout (logs go to stderr), exit status 0
    python -m llava.serve.cli --model-path CKPT --video-file clip.mp4 --question "What happens?" [--json]

One turn: decode ``--num-frames`` frames (segment midpoints) -> pixels (frames padded to squares when the
checkpoint says ``image_aspect_ratio="pad"``, as training does) -> the chat prompt, whose first user turn
holds one ``<image>`` per visual item -> ``model.generate(..., instructions=[question])``. The visual
items are encoded again at every turn, because an instruction-conditioned projector compresses the video
conditioned on the question asked now: the same video gives different tokens for different questions.

Bad inputs (a missing model folder, a missing or undecodable video or image, an unknown conversation
template) stop the command with a one-line message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import StoppingCriteriaList, TextIteratorStreamer

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle, UnknownConversationTemplateError, get_conv_template
from llava.mm_utils import (
    ImageTooLargeError,
    KeywordsStoppingCriteria,
    get_model_name_from_path,
    open_rgb_image,
    process_images,
    process_video_frames,
    tokenizer_image_token,
)
from llava.model.builder import load_pretrained_model, read_model_config
from llava.video import VideoDecodeError, load_video_frames

logger = logging.getLogger("llava.serve.cli")

DEFAULT_NUM_FRAMES = 32
EXIT_INPUT_ERROR = 2
USER_LABEL, ASSISTANT_LABEL = "USER", "ASSISTANT"
CHAT_END_WORDS = ("exit", "quit")
TORCH_DTYPES = ("float16", "bfloat16", "float32")


class CliInputError(ValueError):
    """An input named on the command line cannot be used; the message names it and says why."""


#: errors caused by the user's inputs: one line on stderr and exit status 2, no traceback
INPUT_ERRORS = (CliInputError, FileNotFoundError, VideoDecodeError, UnknownConversationTemplateError)


# --------------------------------------------------------------------------- visual inputs


@dataclass(frozen=True)
class VisualItem:
    """One visual input of the conversation.

    Attributes:
        source: the file it was read from.
        modality: ``"video"`` or ``"image"``.
        pixels: ``(T, 3, S, S)`` pixel values (``T = 1`` for an image; more for an anyres image's tiles).
        num_tokens: LLM tokens it becomes (:func:`visual_token_count`).
    """

    source: Path
    modality: str
    pixels: torch.Tensor
    num_tokens: int

    @property
    def num_frames(self) -> int:
        return self.pixels.shape[0]


def frames_to_pixels(frames_thwc: np.ndarray, image_processor: Any, image_aspect_ratio: str | None) -> torch.Tensor:
    """Video frames ``(T, H, W, 3)`` uint8 -> pixel values ``(T, 3, S, S)``.

    With ``image_aspect_ratio="pad"`` each frame is first padded to a square with the processor's mean
    colour, as training does; otherwise the frames are resized as they are (OneVision).
    """
    return process_video_frames(frames_thwc, image_processor, image_aspect_ratio)


def read_video(path: str | Path, num_frames: int) -> np.ndarray:
    """``num_frames`` frames ``(T, H, W, 3)`` uint8 of the video at ``path``."""
    try:
        return load_video_frames(path, num_frames=num_frames).frames
    except FileNotFoundError:
        raise CliInputError(f"video file not found: {path}") from None


def read_image(path: str | Path) -> Image.Image:
    """The image as training reads it (:func:`llava.mm_utils.open_rgb_image`)."""
    try:
        return open_rgb_image(path)
    except FileNotFoundError:
        raise CliInputError(f"image file not found: {path}") from None
    except ImageTooLargeError as err:
        raise CliInputError(f"image too large: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CliInputError(f"cannot read image {path}: {err}") from None


def visual_token_count(model: Any, num_frames: int, modality: str) -> int:
    """Number of LLM tokens one visual item of ``num_frames`` frames becomes (the model's own count)."""
    return model.num_visual_tokens(num_frames, modality)


# --------------------------------------------------------------------------- conversation


class VideoChat:
    """A conversation about fixed visual items, which are attached to the first user turn.

    Every :meth:`respond` sends the whole history and the visual items again, with the current
    question as the instruction each item's compression is conditioned on.
    """

    def __init__(
        self,
        tokenizer: Any,
        model: Any,
        items: Sequence[VisualItem],
        conv_mode: str = "qwen_1_5",
        temperature: float = 0.0,
        max_new_tokens: int = 512,
    ):
        self.tokenizer = tokenizer
        self.model = model
        self.items = list(items)
        self.conv = get_conv_template(conv_mode)
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.turns = 0
        self.stop_str = self.conv.sep2 if self.conv.sep_style == SeparatorStyle.TWO else self.conv.sep
        self.device = model.get_input_embeddings().weight.device
        self._pixels = [item.pixels.to(device=self.device, dtype=model.dtype) for item in self.items]

    def _user_message(self, question: str) -> str:
        if self.turns > 0 or not self.items:
            return question
        placeholder = DEFAULT_IMAGE_TOKEN
        if getattr(self.model.config, "mm_use_im_start_end", False):
            placeholder = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
        return "".join(f"{placeholder}\n" for _ in self.items) + question

    def _generation_kwargs(self, input_ids: torch.Tensor, question: str) -> dict:
        tokenizer = self.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        stopping = None
        if self.stop_str:
            stopping = StoppingCriteriaList([KeywordsStoppingCriteria([self.stop_str], tokenizer, input_ids)])
        return dict(
            inputs=input_ids,
            attention_mask=torch.ones_like(input_ids),
            images=self._pixels or None,
            modalities=[item.modality for item in self.items],
            instructions=[question] * len(self.items),
            do_sample=self.temperature > 0,
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
            use_cache=True,
            pad_token_id=pad_id,
            stopping_criteria=stopping,
        )

    def _decode(self, output_ids: torch.Tensor) -> str:
        text = self.tokenizer.batch_decode(output_ids, skip_special_tokens=True)[0].strip()
        if self.stop_str and text.endswith(self.stop_str):
            text = text[: -len(self.stop_str)].strip()
        return text

    def respond(self, question: str, on_text: Callable[[str], None] | None = None) -> str:
        """Answers ``question`` after the history so far, adds the exchange to the history, returns the answer.

        With ``on_text``, the answer is streamed: ``on_text`` receives each piece of text as soon as it is
        decoded. The returned answer is decoded from the generated ids either way.
        """
        question = question.strip()
        if not question:
            raise ValueError("VideoChat.respond: the question is empty")
        self.conv.append_message(self.conv.roles[0], self._user_message(question))
        self.conv.append_message(self.conv.roles[1], None)
        prompt = self.conv.get_prompt()
        input_ids = tokenizer_image_token(prompt, self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        kwargs = self._generation_kwargs(input_ids[None].to(self.device), question)
        try:
            if on_text is None:
                output_ids = self.model.generate(**kwargs)
            else:
                output_ids = generate_streamed(self.model, self.tokenizer, kwargs, on_text)
        except BaseException:
            del self.conv.messages[-2:]  # this turn never happened
            raise
        answer = self._decode(output_ids)
        self.conv.messages[-1][1] = answer
        self.turns += 1
        return answer


def generate_streamed(
    model: Any, tokenizer: Any, generate_kwargs: dict, on_text: Callable[[str], None]
) -> torch.Tensor:
    """Runs ``model.generate(**generate_kwargs)`` in a thread, handing its text to ``on_text`` as it is
    decoded (transformers' ``TextIteratorStreamer``); returns the generated ids."""
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict[str, Any] = {}

    def generate() -> None:
        try:
            result["ids"] = model.generate(streamer=streamer, **generate_kwargs)
        except BaseException as err:  # handed to the caller's thread below
            result["error"] = err
            streamer.end()  # lets the reading loop finish

    worker = threading.Thread(target=generate, name="llava-generate", daemon=True)
    worker.start()
    for text in streamer:
        if text:
            on_text(text)
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["ids"]


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llava.serve.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-path", required=True, help="local checkpoint folder (nothing is downloaded)")
    parser.add_argument("--model-base", default=None,
                        help="the LLM folder a projector-only checkpoint (mm_projector.bin) was trained on")
    parser.add_argument("--model-name", default=None, help="default: the checkpoint folder's name")
    parser.add_argument("--video-file", default=None, help="a video to ask about (any format decord or PyAV reads)")
    parser.add_argument("--image-file", default=None, help="an image, alone or after the video")
    parser.add_argument("--num-frames", type=int, default=None,
                        help=f"frames sampled from the video; default: the checkpoint's num_frames if its config "
                             f"has one, else {DEFAULT_NUM_FRAMES} (no upper limit)")
    parser.add_argument("--conv-mode", default="qwen_1_5", help="a name in llava.conversation.conv_templates")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="longest answer, in tokens")
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:1 ...")
    parser.add_argument("--torch-dtype", default=None, choices=TORCH_DTYPES,
                        help="default: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--attn-implementation", default=None,
                        help="sdpa, eager or flash_attention_2; default: flash_attention_2 when installed, else sdpa")
    parser.add_argument("--question", default=None,
                        help="one-shot mode: answer this question, print only the answer on stdout, and exit")
    parser.add_argument("--json", action="store_true",
                        help="with --question: print one JSON line {question, answer, frames, visual_tokens}")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations argparse cannot check; errors exit with status 2 and the usage line."""
    if args.video_file is None and args.image_file is None:
        parser.error("give --video-file and/or --image-file")
    if args.json and args.question is None:
        parser.error("--json needs --question (it formats the one-shot answer)")
    if args.question is not None and not args.question.strip():
        parser.error("--question is empty")
    if args.num_frames is not None and args.num_frames < 1:
        parser.error(f"--num-frames must be >= 1, got {args.num_frames}")
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        parser.error(f"--temperature must be >= 0, got {args.temperature}")


def default_dtype(device: str) -> str:
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "bfloat16" if on_gpu else "float32"


def start_chat(args: argparse.Namespace) -> VideoChat:
    """Checks every input, loads the model and prepares the visual items.

    Cheap checks come first (model config, conversation template, decoding the video), so a bad input
    is reported before the model is loaded.
    """
    try:
        raw_config = read_model_config(args.model_path)
    except ValueError as err:  # a half-written or foreign config.json: the message names the file
        raise CliInputError(str(err)) from None
    get_conv_template(args.conv_mode)
    num_frames = args.num_frames or raw_config.get("num_frames") or DEFAULT_NUM_FRAMES
    frames = read_video(args.video_file, num_frames) if args.video_file is not None else None
    image = read_image(args.image_file) if args.image_file is not None else None

    model_name = args.model_name or get_model_name_from_path(args.model_path)
    try:
        tokenizer, model, image_processor, _ = load_pretrained_model(
            args.model_path, args.model_base, model_name, device_map=args.device,
            torch_dtype=args.torch_dtype or default_dtype(args.device), attn_implementation=args.attn_implementation,
        )
    except FileNotFoundError:
        raise  # already names the folder and the missing file
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise CliInputError(f"cannot load the model in {args.model_path}: {err}") from err
    if image_processor is None:
        raise CliInputError(f"{args.model_path} has no vision tower: it cannot look at videos or images")

    def item(source: str, modality: str, pixels: torch.Tensor) -> VisualItem:
        return VisualItem(Path(source), modality, pixels, visual_token_count(model, len(pixels), modality))

    items = []
    if frames is not None:
        aspect = getattr(model.config, "image_aspect_ratio", None)
        items.append(item(args.video_file, "video", frames_to_pixels(frames, image_processor, aspect)))
    if image is not None:
        pixels = process_images([image], image_processor, model.config)[0]
        items.append(item(args.image_file, "image", pixels[None] if pixels.ndim == 3 else pixels))
    for visual in items:
        logger.info("%s %s: %d frame(s) -> %d visual tokens", visual.modality, visual.source, visual.num_frames,
                    visual.num_tokens)
    check_context(model, tokenizer, items)
    return VideoChat(tokenizer, model, items, args.conv_mode, args.temperature, args.max_new_tokens)


def context_length(model: Any, tokenizer: Any) -> int | None:
    """The most tokens the model reads: the tokenizer's ``model_max_length`` when set to a real value,
    else the LLM's ``max_position_embeddings``."""
    limits = [getattr(tokenizer, "model_max_length", None), getattr(model.config, "max_position_embeddings", None)]
    limits = [int(n) for n in limits if isinstance(n, int) and 0 < n < 10**9]
    return min(limits) if limits else None


def check_context(model: Any, tokenizer: Any, items: Sequence[VisualItem], room: int = 64) -> None:
    """Refuses visual items that leave fewer than ``room`` tokens of the context for the question and
    the answer (the prompt would otherwise be cut and the question lost)."""
    limit = context_length(model, tokenizer)
    used = sum(item.num_tokens for item in items)
    if limit is not None and used + room > limit:
        frames = ", ".join(f"{item.num_frames} frame(s) of {item.source}" for item in items)
        raise CliInputError(f"{used} visual tokens ({frames}) leave no room for the question in the model's "
                            f"context of {limit} tokens: use fewer --num-frames")


def answer_once(chat: VideoChat, question: str, as_json: bool, out: TextIO) -> None:
    answer = chat.respond(question)
    if as_json:
        video = next((item for item in chat.items if item.modality == "video"), None)
        record = {
            "question": question,
            "answer": answer,
            "frames": video.num_frames if video is not None else 0,
            "visual_tokens": sum(item.num_tokens for item in chat.items),
        }
        out.write(json.dumps(record) + "\n")
    else:
        out.write(answer + "\n")
    out.flush()


def run_chat(chat: VideoChat, out: TextIO, read_line: Callable[[str], str] = input) -> int:
    """Reads user turns until EOF, an empty line or ``exit``; streams each answer to ``out``."""

    def show(text: str) -> None:
        out.write(text)
        out.flush()

    logger.info("chat started: ask about the %s; an empty line, 'exit' or EOF ends it",
                " and the ".join(item.modality for item in chat.items))
    try:
        while True:
            try:
                question = read_line(f"{USER_LABEL}: ").strip()
            except EOFError:
                show("\n")
                return 0
            if not question or question.lower() in CHAT_END_WORDS:
                return 0
            show(f"{ASSISTANT_LABEL}: ")
            chat.respond(question, on_text=show)
            show("\n")
    except KeyboardInterrupt:
        show("\n")
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        chat = start_chat(args)
    except INPUT_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if args.question is not None:
        answer_once(chat, args.question, args.json, sys.stdout)
        return 0
    return run_chat(chat, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
