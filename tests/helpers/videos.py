"""Synthetic test videos whose frames say which source frame they are.

Each frame carries its index as a binary code: the frame is cut into ``INDEX_BITS`` vertical
stripes and stripe ``k`` (counted from the left) is white when bit ``k`` of the index is set,
black otherwise. Flat black/white stripes survive lossy codecs and chroma subsampling, so
``decode_frame_indices`` reads the index back exactly from any decoded frame, which lets tests
check *which* frames a loader returned, not just how many.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from llava.video import write_video

INDEX_BITS = 8
_MIN_STRIPE_PX = 4


def frame_with_index(index: int, width: int, height: int) -> np.ndarray:
    """Return the RGB frame ``(height, width, 3)`` uint8 that encodes ``index``."""
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"index={index} does not fit in {INDEX_BITS} bits")
    stripe = width // INDEX_BITS
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    for bit in range(INDEX_BITS):
        if (index >> bit) & 1:
            frame[:, bit * stripe : (bit + 1) * stripe] = 255
    return frame


def decode_frame_indices(frames_thwc: np.ndarray) -> list[int]:
    """Read back the index encoded in each frame of ``frames_thwc`` (T, H, W, 3)."""
    frames_thwc = np.asarray(frames_thwc)
    if frames_thwc.ndim != 4:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {frames_thwc.shape}")
    width = frames_thwc.shape[2]
    stripe = width // INDEX_BITS
    # Sample the middle half of each stripe so codec ringing at the edges cannot flip a bit.
    quarter = max(stripe // 4, 0)
    bits_tk = np.stack(
        [
            frames_thwc[:, :, k * stripe + quarter : (k + 1) * stripe - quarter].mean(axis=(1, 2, 3)) > 127
            for k in range(INDEX_BITS)
        ],
        axis=1,
    )
    weights = 1 << np.arange(INDEX_BITS)
    return [int(v) for v in (bits_tk * weights).sum(axis=1)]


def write_test_video(
    path: str | Path,
    num_frames: int = 48,
    width: int = 64,
    height: int = 48,
    fps: int | Fraction = 24,
    codec: str = "libx264",
) -> Path:
    """Encode ``num_frames`` index-coded frames into ``path`` and return the path.

    Dimensions must be even (yuv420p) and wide enough for ``INDEX_BITS`` stripes of at
    least 4 pixels. ``codec`` may be ``"libx264"`` or ``"mpeg4"``.
    """
    path = Path(path)
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
    if width // INDEX_BITS < _MIN_STRIPE_PX:
        raise ValueError(f"width={width} is too small: need >= {INDEX_BITS * _MIN_STRIPE_PX} pixels")
    if not 0 < num_frames <= 2**INDEX_BITS:
        raise ValueError(f"num_frames={num_frames} must be in [1, {2**INDEX_BITS}]")

    frames = np.stack([frame_with_index(index, width, height) for index in range(num_frames)])
    return write_video(path, frames, fps=fps, codec=codec)
