"""``MERVProcessor``: every encoder's pixels from the one decoded clip.

MERV decodes ``max(frame counts)`` frames uniformly over the video (``np.linspace``) and encoder ``e``
takes every ``(max_rate / rate_e)``-th of them (16 frames each for the per-frame encoders, all 32 for
ViViT). Here a clip of ``num_frames`` LLM frames is decoded as ``num_frames * max_rate`` frames
(:meth:`MERVProcessor.frames_to_decode`); a clip that has fewer frames is sampled with the same
``linspace`` rule, which repeats frames (MERV does the same on short videos). Each encoder then gets its
own resize (``squash`` to a square, or ``short_side_crop``: short side to the size and a centre crop),
``/255``, and its own mean/std.

Images (and the text-only dummy) arrive as one tensor of the *primary* (first) encoder's pixels, which
:meth:`MERVProcessor.preprocess` makes; the tower derives the other encoders' pixels from them
(:meth:`MERVProcessor.from_primary`: de-normalised, resized in torch, so resized twice — a documented
deviation). MERV repeats an image to its 32 frames; here a per-frame encoder sees the image once and the
pooling repeats it to ``t`` (the same features, since identical frames give identical features), and a
windowed encoder (ViViT) sees one window of the repeated image, as in MERV.

Deviations from MERV's transforms (torchvision/PIL on uint8): resizing runs in torch on float frames
(``antialias=True``), and LanguageBind's random horizontal flip, which MERV applies even at evaluation,
is left out.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BatchFeature

from llava.model.weights import read_json

from .encoders import EncoderSpec

logger = logging.getLogger(__name__)

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
_SPEC_KEYS = ("name", "image_size", "frame_rate", "mean", "std", "resize", "interpolation")


def resize_frames(frames: torch.Tensor, size: int, resize: str, interpolation: str) -> torch.Tensor:
    """``(N, 3, H, W)`` float frames -> ``(N, 3, size, size)``; frames already at that size are kept."""
    height, width = frames.shape[-2:]
    if (height, width) == (size, size):
        return frames
    if resize == "short_side_crop":
        scale = size / min(height, width)
        target = (max(size, round(height * scale)), max(size, round(width * scale)))
    else:
        target = (size, size)
    out = F.interpolate(frames, size=target, mode=interpolation, antialias=True, align_corners=False)
    if interpolation == "bicubic":
        out = out.clamp(0, 1)  # bicubic overshoots; uint8 pipelines clip there too
    top, left = (target[0] - size) // 2, (target[1] - size) // 2
    return out[..., top:top + size, left:left + size]


def sample_indices(available: int, wanted: int) -> torch.Tensor:
    """MERV's uniform sampling: ``wanted`` indices over ``available`` frames (repeats when fewer)."""
    if available < 1:
        raise ValueError("MERV: a clip with no frames")
    return torch.from_numpy(np.linspace(0, available - 1, wanted).round().astype(np.int64))


class MERVProcessor:
    """Per-encoder pixels ``{name: (n * rate_e, 3, S_e, S_e)}`` from one clip of ``n`` LLM frames.

    Args:
        encoders: the encoders' preprocessing (resolved :class:`EncoderSpec` s, or their dicts); the
            first is the primary encoder, whose pixels :meth:`preprocess` makes for images.
        num_frames: LLM frames per clip (MERV: 16); ``None``: the frames decoded (``--num_frames``).
        frame_multiple: LLM frame counts are rounded up to a multiple of this (tubelet windows).
        windows: ``{name: window}`` for encoders that see fixed windows of frames (ViViT).
    """

    model_input_names = ["pixel_values"]

    def __init__(self, encoders: list[EncoderSpec | dict], num_frames: int | None = None, frame_multiple: int = 1,
                 windows: dict[str, int] | None = None):
        if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
            raise ValueError(f"MERV: num_frames must be an integer >= 1 or null, got {num_frames!r}")
        self.encoders = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in
                          ((key, getattr(e, key) if isinstance(e, EncoderSpec) else e[key]) for key in _SPEC_KEYS)}
                         for e in encoders]
        self.num_frames = num_frames
        self.frame_multiple = frame_multiple
        self.windows = dict(windows or {})
        if num_frames is not None and num_frames % frame_multiple:
            raise ValueError(f"MERV: num_frames {num_frames} is not a multiple of {frame_multiple}, which every "
                             f"encoder's window needs ({self.windows})")
        self.max_rate = max(e["frame_rate"] for e in self.encoders)
        self.primary = self.encoders[0]
        self._told = False  # frames_to_decode said once that the model's own count wins
        self.image_mean = list(self.primary["mean"])  # process_images pads images with this colour
        self.image_std = list(self.primary["std"])

    @property
    def crop_size(self) -> dict[str, int]:
        """Side of the primary encoder's pixels (what :meth:`preprocess` returns for images)."""
        return {"height": self.primary["image_size"], "width": self.primary["image_size"]}

    size = crop_size

    def frames_to_decode(self, requested: int) -> int:
        """Frames a clip is decoded to: ``num_frames * max_rate`` when the model fixes ``num_frames``
        (MERV's frame counts are part of the model), else ``requested * max_rate``."""
        if self.num_frames is not None and requested and requested != self.num_frames and not self._told:
            logger.info("MERV: the model samples its own %d frames per clip (num_frames in the tower config); "
                        "%d requested", self.num_frames, requested)
            self._told = True
        return (self.num_frames or requested) * self.max_rate

    def llm_frames(self, decoded: int) -> int:
        """LLM frames of a clip of ``decoded`` frames: ``num_frames``, or the decoded count per
        ``max_rate`` rounded up to ``frame_multiple``."""
        if self.num_frames is not None:
            return self.num_frames
        n = max(1, -(-decoded // self.max_rate))
        return -(-n // self.frame_multiple) * self.frame_multiple

    def _encoder_pixels(self, enc: dict, frames: torch.Tensor) -> torch.Tensor:
        pixels = resize_frames(frames, enc["image_size"], enc["resize"], enc["interpolation"])
        mean = pixels.new_tensor(enc["mean"])[:, None, None]
        std = pixels.new_tensor(enc["std"])[:, None, None]
        return (pixels - mean) / std

    def encoder_inputs(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(T, 3, H, W)`` frames in [0, 1] -> ``{name: (n * rate_e, 3, S_e, S_e)}``, ``n`` =
        :meth:`llm_frames`; MERV's ``linspace`` sampling, then every ``(max_rate / rate_e)``-th frame."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"MERV: expected (T, 3, H, W) frames, got shape {tuple(frames.shape)}")
        n = self.llm_frames(frames.shape[0])
        decoded = frames.float()[sample_indices(frames.shape[0], n * self.max_rate).to(frames.device)]
        return {enc["name"]: self._encoder_pixels(enc, decoded[:: self.max_rate // enc["frame_rate"]])
                for enc in self.encoders}

    def from_primary(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pixels of the primary encoder ``(T, 3, S, S)`` (an image, the text-only dummy) -> every
        encoder's pixels: the primary's as given; the others from the de-normalised frames, resized
        in torch (each frame ``rate_e`` times; a windowed encoder gets whole windows, frames repeated
        by ``linspace``, as MERV repeats an image to its 32 frames)."""
        mean = pixels.new_tensor(self.primary["mean"])[:, None, None]
        std = pixels.new_tensor(self.primary["std"])[:, None, None]
        frames = (pixels.float() * std.float() + mean.float()).clamp(0, 1)
        out = {self.primary["name"]: pixels}
        for enc in self.encoders[1:]:
            wanted = pixels.shape[0] * enc["frame_rate"]
            window = self.windows.get(enc["name"], 1)
            wanted = -(-wanted // window) * window
            picked = frames[sample_indices(frames.shape[0], wanted).to(frames.device)]
            out[enc["name"]] = self._encoder_pixels(enc, picked).to(pixels.dtype)
        return out

    def process_clip(self, frames_thwc: Any, image_aspect_ratio: str | None = None) -> dict[str, torch.Tensor]:
        """A decoded clip ``(T, H, W, 3)`` uint8 -> every encoder's pixels (MERV resizes without padding,
        whatever ``image_aspect_ratio`` says)."""
        frames = torch.as_tensor(np.asarray(frames_thwc))
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(f"MERV: expected a (T, H, W, 3) uint8 clip, got {frames.dtype} {tuple(frames.shape)}")
        return self.encoder_inputs(frames.permute(0, 3, 1, 2).float() / 255)

    def preprocess(self, images: Any, return_tensors: str | None = "pt") -> BatchFeature:
        """Images (PIL, or uint8 ``(H, W, 3)`` arrays) -> the primary encoder's pixels ``(N, 3, S, S)``."""
        if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        frames = []
        for index, image in enumerate(images):
            array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
                raise ValueError(f"MERV: image {index} is not an RGB uint8 (H, W, 3) image ({array.dtype} {array.shape})")
            frames.append(self._encoder_pixels(self.primary, torch.from_numpy(array.copy()).permute(2, 0, 1)[None] / 255))
        if not frames:
            raise ValueError("MERV: no images to preprocess")
        return BatchFeature(data={"pixel_values": torch.cat(frames)}, tensor_type=return_tensors)

    __call__ = preprocess

    # ---- folder format ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"image_processor_type": type(self).__name__, "num_frames": self.num_frames,
                "frame_multiple": self.frame_multiple, "windows": self.windows, "encoders": self.encoders}

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> MERVProcessor:
        config_file = Path(folder) / PREPROCESSOR_CONFIG_NAME
        raw = read_json(config_file)
        if raw.get("image_processor_type") != cls.__name__:
            raise ValueError(f"{config_file}: not a {cls.__name__} file (image_processor_type "
                             f"{raw.get('image_processor_type')!r})")
        return cls(raw["encoders"], raw.get("num_frames"), raw.get("frame_multiple", 1), raw.get("windows"))

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / PREPROCESSOR_CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"
