"""Image preprocessing and prompt tokenisation shared by training, evaluation and serving.

Public names and signatures follow LLaVA-NeXT's ``llava/mm_utils.py`` because lmms-eval and
users' scripts call them directly. Image processors are used through a duck type:
``.preprocess(images, return_tensors="pt")["pixel_values"]``, ``.image_mean`` (floats in [0, 1]),
``.crop_size["height"]`` and ``.size`` (``size[0]``, an int, or a dict with ``shortest_edge`` /
``height``).

Sizes of PIL images and resolutions are ``(width, height)`` throughout, as in PIL.
"""

from __future__ import annotations

import ast
import base64
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import StoppingCriteria

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX

__all__ = [
    "KeywordsStoppingCriteria",
    "divide_to_patches",
    "expand2square",
    "get_anyres_image_grid_shape",
    "get_model_name_from_path",
    "load_image_from_base64",
    "parse_grid_pinpoints",
    "process_anyres_image",
    "process_images",
    "resize_and_pad_image",
    "select_best_resolution",
    "tokenizer_image_token",
]

Resolution = tuple[int, int]  # (width, height)

_GRID_RANGE_CELL = re.compile(r"\((\d+)x(\d+)\)")


# --------------------------------------------------------------------------- image geometry


def expand2square(pil_img: Image.Image, background_color: Any) -> Image.Image:
    """Pad ``pil_img`` to a square with ``background_color``, keeping it centred on the long axis."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    side = max(width, height)
    result = Image.new(pil_img.mode, (side, side), background_color)
    result.paste(pil_img, ((side - width) // 2, (side - height) // 2))
    return result


def select_best_resolution(original_size: Resolution, possible_resolutions: Sequence[Resolution]) -> Resolution:
    """Pick the candidate ``(width, height)`` that keeps the most image pixels after an
    aspect-preserving fit, breaking ties by the least padding.

    Args:
        original_size: ``(width, height)`` of the image.
        possible_resolutions: candidate ``(width, height)`` canvases.
    """
    if not possible_resolutions:
        raise ValueError("select_best_resolution: possible_resolutions is empty")
    original_width, original_height = original_size
    original_area = original_width * original_height
    best: Resolution | None = None
    best_effective, best_wasted = 0, float("inf")
    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        effective = min(int(original_width * scale) * int(original_height * scale), original_area)
        wasted = width * height - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (width, height), effective, wasted
    if best is None:
        raise ValueError(f"select_best_resolution: no usable resolution among {list(possible_resolutions)}")
    return best


def resize_and_pad_image(image: Image.Image, target_resolution: Resolution) -> Image.Image:
    """Resize ``image`` to fit ``target_resolution`` (width, height) keeping its aspect ratio,
    then centre it on a black RGB canvas of exactly that size."""
    original_width, original_height = image.size
    target_width, target_height = target_resolution
    scale_w = target_width / original_width
    scale_h = target_height / original_height
    if scale_w < scale_h:
        new_width, new_height = target_width, min(math.ceil(original_height * scale_w), target_height)
    else:
        new_width, new_height = min(math.ceil(original_width * scale_h), target_width), target_height
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    offset = ((target_width - new_width) // 2, (target_height - new_height) // 2)
    canvas.paste(image.resize((new_width, new_height)), offset)
    return canvas


def divide_to_patches(image: Image.Image, patch_size: int) -> list[Image.Image]:
    """Cut ``image`` into ``patch_size`` squares, row by row (top-left first)."""
    width, height = image.size
    return [
        image.crop((left, top, left + patch_size, top + patch_size))
        for top in range(0, height, patch_size)
        for left in range(0, width, patch_size)
    ]


def parse_grid_pinpoints(grid_pinpoints: str | Sequence[Sequence[int]], patch_size: int) -> list[Resolution]:
    """Turn ``image_grid_pinpoints`` into a list of candidate ``(width, height)`` resolutions.

    Two spellings are accepted (both appear in released configs and scripts):

    * range syntax ``"(1x1),...,(6x6)"``: every grid ``(i, j)`` from the first cell to the last,
      ``i`` tiles across and ``j`` down, times ``patch_size`` pixels;
    * a literal list of pixel pairs, as a Python object or its string form
      (``"[(384, 768), (768, 384)]"``).
    """
    if isinstance(grid_pinpoints, str) and "x" in grid_pinpoints:
        cells = _GRID_RANGE_CELL.findall(grid_pinpoints)
        if not cells:
            raise ValueError(f"image_grid_pinpoints={grid_pinpoints!r}: expected cells like '(1x1),...,(6x6)'")
        (first_w, first_h), (last_w, last_h) = (tuple(map(int, cell)) for cell in (cells[0], cells[-1]))
        resolutions = [
            (cols * patch_size, rows * patch_size)
            for cols in range(first_w, last_w + 1)
            for rows in range(first_h, last_h + 1)
        ]
        if not resolutions:
            raise ValueError(f"image_grid_pinpoints={grid_pinpoints!r}: the range is empty")
        return resolutions

    pairs: Any = grid_pinpoints
    if isinstance(grid_pinpoints, str):
        try:
            pairs = ast.literal_eval(grid_pinpoints)
        except (ValueError, SyntaxError) as err:
            raise ValueError(
                f"image_grid_pinpoints={grid_pinpoints!r} is neither a range nor a list literal"
            ) from err
    try:
        resolutions = [(int(width), int(height)) for width, height in pairs]
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"image_grid_pinpoints={grid_pinpoints!r}: expected a list of (width, height) pairs"
        ) from err
    if not resolutions or any(width <= 0 or height <= 0 for width, height in resolutions):
        raise ValueError(
            f"image_grid_pinpoints={grid_pinpoints!r}: expected non-empty, positive (width, height) pairs"
        )
    return resolutions


def get_anyres_image_grid_shape(
    image_size: Resolution, grid_pinpoints: str | Sequence[Sequence[int]], patch_size: int
) -> tuple[int, int]:
    """Number of tiles ``(across, down)`` that ``process_anyres_image`` produces for an image
    of ``image_size`` (width, height)."""
    width, height = select_best_resolution(image_size, parse_grid_pinpoints(grid_pinpoints, patch_size))
    return width // patch_size, height // patch_size


# --------------------------------------------------------------------------- image processors


def _processor_image_side(processor: Any) -> int:
    """The square side (pixels) the processor resizes to, from its ``size`` attribute."""
    size = processor.size
    if isinstance(size, int):
        return size
    if isinstance(size, (list, tuple)):
        return int(min(size))
    for key in ("shortest_edge", "height"):
        try:
            value = size[key]
        except (KeyError, TypeError, AttributeError):
            continue
        if value:
            return int(value)
    raise TypeError(f"image processor {type(processor).__name__}: cannot read a side length from size={size!r}")


def _processor_crop_side(processor: Any) -> int:
    crop_size = getattr(processor, "crop_size", None)
    return _processor_image_side(processor) if crop_size is None else int(crop_size["height"])


def _pixel_values(processor: Any, images: Any) -> torch.Tensor:
    return processor.preprocess(images, return_tensors="pt")["pixel_values"]


def process_anyres_image(
    image: Image.Image, processor: Any, grid_pinpoints: str | Sequence[Sequence[int]]
) -> torch.Tensor:
    """Encode one image as an overview plus high-resolution tiles ("anyres").

    The image is fitted onto the best grid resolution, padded with black and cut into tiles of
    ``crop_size["height"]``; the whole image, squashed to the processor side, comes first.

    Returns:
        ``(1 + num_tiles, 3, side, side)`` pixel values.
    """
    side = _processor_image_side(processor)
    best_resolution = select_best_resolution(image.size, parse_grid_pinpoints(grid_pinpoints, side))
    tiles = divide_to_patches(resize_and_pad_image(image, best_resolution), _processor_crop_side(processor))
    # Upstream squashes (resizes) the overview rather than padding it; checkpoints expect that.
    overview = image.resize((side, side))
    return _pixel_values(processor, [overview, *tiles])


def process_images(
    images: Sequence[Image.Image], image_processor: Any, model_cfg: Any
) -> torch.Tensor | list[torch.Tensor]:
    """Preprocess PIL images according to ``model_cfg.image_aspect_ratio``.

    * ``"square"`` / ``None`` / unknown: one batched ``preprocess`` call (resize, no padding);
    * ``"pad"``: pad to square with the processor's mean colour, then preprocess;
    * ``"anyres"`` / ``"anyres_max_N"``: ``process_anyres_image`` with
      ``model_cfg.image_grid_pinpoints`` (the ``N`` cap is applied later, on features).

    Returns:
        ``(num_images, ...)`` stacked tensor when all per-image tensors share a shape, else a list.
    """
    if len(images) == 0:
        raise ValueError("process_images: got an empty list of images")
    aspect_ratio = getattr(model_cfg, "image_aspect_ratio", None) or "square"
    if aspect_ratio in ("highres", "crop_split"):
        raise NotImplementedError(f"process_images: image_aspect_ratio={aspect_ratio!r} is not supported")

    if aspect_ratio.startswith("anyres"):
        grid_pinpoints = getattr(model_cfg, "image_grid_pinpoints", None)
        if grid_pinpoints is None:
            raise ValueError(
                f"process_images: image_aspect_ratio={aspect_ratio!r} needs model_cfg.image_grid_pinpoints"
            )
        processed = [process_anyres_image(image, image_processor, grid_pinpoints) for image in images]
    elif aspect_ratio == "pad":
        background = tuple(int(channel * 255) for channel in image_processor.image_mean)
        processed = [_pixel_values(image_processor, expand2square(image, background))[0] for image in images]
    else:
        return _pixel_values(image_processor, list(images))

    if all(tensor.shape == processed[0].shape for tensor in processed):
        return torch.stack(processed, dim=0)
    return processed


def frames_to_decode(image_processor: Any, num_frames: int) -> int:
    """Frames to decode for ``num_frames`` visual frames: a processor whose encoders sample more frames
    than the LLM sees (``frames_to_decode(n)``, e.g. a tubelet encoder taking 2n) asks for them."""
    ask = getattr(image_processor, "frames_to_decode", None)
    return int(ask(num_frames)) if ask is not None and num_frames else num_frames


def pixel_size(pixels: Any) -> tuple[int, int]:
    """``(width, height)`` of an item's pixels (the first encoder's, for a ``{encoder: pixels}`` item)."""
    first = next(iter(pixels.values())) if isinstance(pixels, dict) else pixels
    return first.shape[-1], first.shape[-2]


def pixels_to(pixels: Any, **kwargs) -> Any:
    """An item's pixels (a tensor, or ``{encoder: tensor}``) moved/cast with ``Tensor.to(**kwargs)``."""
    if isinstance(pixels, dict):
        return {name: value.to(**kwargs) for name, value in pixels.items()}
    return pixels.to(**kwargs)


def process_video_frames(frames_thwc: Any, image_processor: Any, image_aspect_ratio: str | None) -> torch.Tensor:
    """Video frames ``(T, H, W, 3)`` uint8 -> pixel values ``(T, 3, S, S)``, the same in training,
    evaluation and serving: with ``image_aspect_ratio="pad"`` each frame is padded to a square with the
    processor's mean colour first (VideoLLaMA2's preprocessing), otherwise resized as it is (OneVision).
    A processor with ``process_clip(frames, image_aspect_ratio)`` (a tower with several encoders) makes
    the pixels itself: ``{encoder: (T_e, 3, S_e, S_e)}``."""
    process_clip = getattr(image_processor, "process_clip", None)
    if process_clip is not None:  # a tower with several encoders: its own inputs from the one clip
        return process_clip(frames_thwc, image_aspect_ratio)
    frames_thwc = np.asarray(frames_thwc)
    height, width = frames_thwc.shape[1:3]
    if image_aspect_ratio == "pad" and height != width:  # square frames need no padding
        images = [Image.fromarray(frame) for frame in frames_thwc]
        return process_images(images, image_processor, ImageConfig("pad"))
    return _pixel_values(image_processor, frames_thwc)


@dataclass
class ImageConfig:
    """The config fields ``process_images`` reads, for callers that have no model config."""

    image_aspect_ratio: str
    image_grid_pinpoints: Any = None


def load_image_from_base64(image: str | bytes) -> Image.Image:
    """Decode a base64-encoded image file (PNG, JPEG, ...)."""
    return Image.open(BytesIO(base64.b64decode(image)))


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image``, the one conversion training, evaluation and serving share:
    16- and 32-bit integer images are scaled to 8 bits (not clipped at 255), float images in [0, 1]
    are scaled, transparency is composited onto white, grayscale and palette images are expanded."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        else:
            scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


class ImageTooLargeError(ValueError):
    """An image with more pixels than the limit (its header says so; it is not decoded)."""


def open_rgb_image(path, max_pixels: int | None = None) -> Image.Image:
    """The image file at ``path`` as :func:`to_rgb` gives it. More than ``max_pixels`` (from the header,
    before decoding) or more than PIL's own limit: :class:`ImageTooLargeError`; unreadable files raise
    ``OSError`` (``UnidentifiedImageError`` among them)."""
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{path}: {err}") from None
    with image:
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ImageTooLargeError(f"{path}: {image.width}x{image.height} pixels exceeds the limit of {max_pixels}")
        image.load()
        return to_rgb(image)


# --------------------------------------------------------------------------- text


def tokenizer_image_token(
    prompt: str,
    tokenizer: Any,
    image_token_index: int = IMAGE_TOKEN_INDEX,
    return_tensors: str | None = None,
) -> list[int] | torch.Tensor:
    """Tokenise ``prompt`` with every literal ``<image>`` replaced by ``image_token_index``.

    Each text chunk between placeholders is tokenised on its own. Tokenizers that add a BOS to
    every call (LLaMA) would repeat it, so BOS is kept only at the very start.

    Args:
        return_tensors: ``None`` for a list of ids, ``"pt"`` for a 1-D ``torch.long`` tensor.
    """
    if return_tensors not in (None, "pt"):
        raise ValueError(
            f"tokenizer_image_token: return_tensors={return_tensors!r} is not supported; use None or 'pt'"
        )
    bos_id = getattr(tokenizer, "bos_token_id", None)
    input_ids: list[int] = []
    for index, chunk in enumerate(prompt.split(DEFAULT_IMAGE_TOKEN)):
        chunk_ids = list(tokenizer(chunk).input_ids)
        if index > 0:
            input_ids.append(image_token_index)
            if bos_id is not None and chunk_ids[:1] == [bos_id]:
                chunk_ids = chunk_ids[1:]
        input_ids.extend(chunk_ids)
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    return input_ids


def get_model_name_from_path(model_path: str) -> str:
    """Name a checkpoint by its directory: ``.../llava-ov-7b`` -> ``llava-ov-7b`` and
    ``.../run/checkpoint-500`` -> ``run_checkpoint-500``."""
    parts = str(model_path).rstrip("/").split("/")
    if not parts[-1]:
        raise ValueError(f"get_model_name_from_path: model_path={model_path!r} has no name component")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1 and parts[-2]:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


class KeywordsStoppingCriteria(StoppingCriteria):
    """Stop a sequence once it ends with any of ``keywords``.

    A row is done when its last tokens equal a keyword's token ids, or when the text decoded
    from its last few *generated* tokens contains a keyword. Works for any batch size and
    returns one bool per row, as transformers' ``StoppingCriteriaList`` expects.

    ``input_ids`` is the prompt, used only for its length: ``generate`` may hand back either
    prompt + new tokens, or (when generating from ``inputs_embeds``, as LLaVA does) the new tokens
    alone; both cases keep the prompt out of the text check.
    """

    _MIN_DECODE_WINDOW = 3

    def __init__(self, keywords: str | Sequence[str], tokenizer: Any, input_ids: torch.Tensor):
        self.keywords = [keywords] if isinstance(keywords, str) else list(keywords)
        if not self.keywords:
            raise ValueError("KeywordsStoppingCriteria: keywords is empty")
        self.tokenizer = tokenizer
        bos_id = getattr(tokenizer, "bos_token_id", None)
        self.keyword_ids: list[torch.Tensor] = []
        for keyword in self.keywords:
            ids = list(tokenizer(keyword).input_ids)
            if len(ids) > 1 and ids[0] == bos_id:
                ids = ids[1:]
            self.keyword_ids.append(torch.tensor(ids, dtype=torch.long))
        self.start_len = int(input_ids.shape[-1])
        self.decode_window = max([self._MIN_DECODE_WINDOW, *(len(ids) for ids in self.keyword_ids)])

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs: Any
    ) -> torch.BoolTensor:
        batch, length = input_ids.shape
        done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        for ids in self.keyword_ids:
            if 0 < len(ids) <= length:
                done |= (input_ids[:, -len(ids) :] == ids.to(input_ids.device)).all(dim=1)

        # Either prompt + new tokens, or (inputs_embeds generation) new tokens only. In the latter
        # case, once the answer outgrows the prompt this under-counts, which only narrows the window.
        generated = length - self.start_len if length > self.start_len else length
        window = min(self.decode_window, generated)
        if window > 0 and not bool(done.all()):
            texts = self.tokenizer.batch_decode(input_ids[:, -window:], skip_special_tokens=True)
            text_hit = [any(keyword in text for keyword in self.keywords) for text in texts]
            done |= torch.tensor(text_hit, dtype=torch.bool, device=input_ids.device)
        return done
