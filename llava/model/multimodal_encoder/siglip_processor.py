"""SigLIP image preprocessing with PIL and numpy only (no torchvision).

Each image or video frame goes: RGB -> bicubic resize straight to ``size`` (no aspect-preserving
resize, no crop) -> ``* rescale_factor`` -> ``(x - mean) / std`` -> channel-first. This is what
upstream LLaVA-OneVision's ``SigLipImageProcessor`` and transformers' ``SiglipImageProcessor`` do, so
checkpoints see the pixels they were trained on. Padding to a square (``image_aspect_ratio="pad"``)
happens before this, elsewhere.

The folder format is transformers' ``preprocessor_config.json``: a real SigLIP checkpoint's file
loads here, and the file written by :meth:`SigLipImageProcessor.save_pretrained` loads in
transformers' own ``SiglipImageProcessor``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from transformers import BatchFeature

from ..weights import read_json

logger = logging.getLogger(__name__)

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"

# Keys of preprocessor_config.json that this processor reads; the others (image_processor_type,
# processor_class, crop_size, ...) are bookkeeping or derived from these.
_CONFIG_KEYS = (
    "size",
    "image_mean",
    "image_std",
    "resample",
    "rescale_factor",
    "do_resize",
    "do_rescale",
    "do_normalize",
    "do_convert_rgb",
)


class ImageSize(NamedTuple):
    """Target ``(height, width)`` of the resize.

    Readable both ways that LLaVA-family code reads a processor's size: by position
    (``size[0]``, upstream LLaVA) and by key (``size["height"]``, HF-style size dicts).
    """

    height: int
    width: int

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            if key in ("height", "width"):
                return getattr(self, key)
            raise KeyError(f"ImageSize has keys 'height' and 'width', not {key!r}")
        return tuple.__getitem__(self, key)

    def to_dict(self) -> dict[str, int]:
        return {"height": self.height, "width": self.width}


def parse_size(value: Any, source: str = "size") -> ImageSize:
    """``384``, ``(384, 384)`` or ``{"height": 384, "width": 384}`` -> ``ImageSize(384, 384)``.

    Args:
        value: the size as written in code or in a preprocessor config.
        source: where the value came from, for the error message.
    """
    if isinstance(value, ImageSize):
        return value
    if isinstance(value, Mapping):
        if set(value) != {"height", "width"}:
            # e.g. {"shortest_edge": n} asks for an aspect-preserving resize, which SigLIP never does.
            raise ValueError(f"{source}: expected a size with keys 'height' and 'width', got {dict(value)!r}")
        height, width = value["height"], value["width"]
    elif isinstance(value, int):
        height = width = value
    elif isinstance(value, Sequence) and len(value) == 2:
        height, width = value
    else:
        raise ValueError(f"{source}: expected an int, (height, width) or a height/width dict, got {value!r}")
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"{source}: height and width must be positive ints, got {value!r}")
    return ImageSize(height, width)


class SigLipImageProcessor:
    """Turns images or video frames into SigLIP's ``pixel_values (N, 3, height, width)`` float32.

    Args:
        image_mean: per-channel mean subtracted after rescaling (RGB order).
        image_std: per-channel std divided by after subtracting the mean.
        size: resize target; any form :func:`parse_size` accepts. Stored as :class:`ImageSize`.
        resample: PIL resampling filter (``PIL.Image.Resampling`` or its int value; 3 = bicubic).
        rescale_factor: multiplies uint8 values before normalisation.
        do_resize, do_rescale, do_normalize, do_convert_rgb: switch the matching step on or off.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        size: Any = (384, 384),
        resample: int = Image.Resampling.BICUBIC,
        rescale_factor: float = 1 / 255,
        do_resize: bool = True,
        do_rescale: bool = True,
        do_normalize: bool = True,
        do_convert_rgb: bool = True,
    ):
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values (RGB), got {image_mean!r} and {image_std!r}")
        self.image_mean = [float(m) for m in image_mean]
        self.image_std = [float(s) for s in image_std]
        self.size = size
        self.resample = Image.Resampling(resample)
        self.rescale_factor = float(rescale_factor)
        self.do_resize = do_resize
        self.do_rescale = do_rescale
        self.do_normalize = do_normalize
        self.do_convert_rgb = do_convert_rgb

    @property
    def size(self) -> ImageSize:
        return self._size

    @size.setter
    def size(self, value: Any) -> None:
        self._size = parse_size(value)

    @property
    def crop_size(self) -> dict[str, int]:
        """SigLIP does not crop; the output size, in the key form that lmms-eval and LLaVA read."""
        return self._size.to_dict()

    # ---- preprocessing -------------------------------------------------------------------------

    def preprocess(self, images: Any, return_tensors: str | None = "pt") -> BatchFeature:
        """Preprocesses one image, a list of images, or a video.

        Args:
            images: a PIL image; a list of PIL images or of uint8 ``(H, W, 3)`` arrays; or a uint8
                array ``(T, H, W, 3)`` (a decoded video) or ``(H, W, 3)`` (one image).
            return_tensors: ``"pt"`` for a torch tensor, ``"np"`` or ``None`` for a numpy array.

        Returns:
            ``BatchFeature`` with ``pixel_values (N, 3, height, width)`` float32, N = number of
            images or frames, in input order.
        """
        frames_nhwc = np.stack([self._resized_rgb(frame) for frame in _as_frame_list(images)])
        pixels = frames_nhwc.astype(np.float32)
        if self.do_rescale:
            pixels *= np.float32(self.rescale_factor)
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32)
            std = np.asarray(self.image_std, dtype=np.float32)
            pixels = (pixels - mean) / std
        pixel_values_nchw = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
        return BatchFeature(data={"pixel_values": pixel_values_nchw}, tensor_type=return_tensors)

    __call__ = preprocess

    def _resized_rgb(self, frame: Image.Image | np.ndarray) -> np.ndarray:
        """One image -> uint8 ``(height, width, 3)``; resizing uint8 pixels in PIL like upstream."""
        target_hw3 = (self._size.height, self._size.width, 3)
        if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == target_hw3:
            return frame  # already RGB at the target size: the PIL round trip would return the same bytes
        image = Image.fromarray(frame) if isinstance(frame, np.ndarray) else frame
        if self.do_convert_rgb and image.mode != "RGB":
            image = image.convert("RGB")
        target_wh = (self._size.width, self._size.height)
        if image.size != target_wh:
            if not self.do_resize:
                raise ValueError(
                    f"do_resize=False but an image is {image.size[1]}x{image.size[0]} (HxW), not "
                    f"{self._size.height}x{self._size.width}"
                )
            image = image.resize(target_wh, resample=self.resample)
        return np.asarray(image)

    # ---- folder format -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` content; ``image_processor_type`` names transformers' class."""
        return {
            "image_processor_type": "SiglipImageProcessor",
            "size": self._size.to_dict(),
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "resample": int(self.resample),
            "rescale_factor": self.rescale_factor,
            "do_resize": self.do_resize,
            "do_rescale": self.do_rescale,
            "do_normalize": self.do_normalize,
            "do_convert_rgb": self.do_convert_rgb,
        }

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], source: str = "config") -> SigLipImageProcessor:
        """Builds a processor from ``preprocessor_config.json`` content; unknown keys are ignored."""
        kwargs = {key: config[key] for key in _CONFIG_KEYS if key in config}
        if "size" in kwargs:
            kwargs["size"] = parse_size(kwargs["size"], source=f"{source}: size")
        ignored = sorted(set(config) - set(_CONFIG_KEYS))
        if ignored:
            logger.debug("%s: ignoring keys %s", source, ignored)
        return cls(**kwargs)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> SigLipImageProcessor:
        """Reads ``folder/preprocessor_config.json`` (local folders only; nothing is downloaded).

        Raises:
            FileNotFoundError: the folder or its ``preprocessor_config.json`` is missing.
            ValueError: the file is not valid JSON or holds an unusable size.
        """
        config_file = Path(folder) / PREPROCESSOR_CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{folder}: no {PREPROCESSOR_CONFIG_NAME} there (the SigLIP image processor is read from a "
                f"local checkpoint folder only)"
            )
        return cls.from_dict(read_json(config_file), source=str(config_file))

    def save_pretrained(self, folder: str | Path) -> Path:
        """Writes ``folder/preprocessor_config.json`` (creating the folder) and returns its path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config_file = folder / PREPROCESSOR_CONFIG_NAME
        config_file.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return config_file

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


def _as_frame_list(images: Any) -> list[Image.Image | np.ndarray]:
    """Splits the accepted inputs into single images, checking arrays are uint8 ``(H, W, 3)``."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            frames = list(images)
        elif images.ndim == 3:
            frames = [images]
        else:
            raise ValueError(f"expected a (T, H, W, 3) video or an (H, W, 3) image array, got shape {images.shape}")
    elif isinstance(images, (list, tuple)):
        frames = list(images)
    else:
        raise TypeError(
            f"expected a PIL image, a list of PIL images or uint8 arrays, or a uint8 (T, H, W, 3) array; "
            f"got {type(images).__name__}"
        )
    if not frames:
        raise ValueError("no images to preprocess (empty list or zero-frame video)")
    for index, frame in enumerate(frames):
        if isinstance(frame, Image.Image):
            continue
        if not isinstance(frame, np.ndarray):
            raise TypeError(f"image {index}: expected a PIL image or a numpy array, got {type(frame).__name__}")
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(
                f"image {index}: expected a uint8 (H, W, 3) array, got dtype {frame.dtype} shape {frame.shape}"
            )
    return frames
