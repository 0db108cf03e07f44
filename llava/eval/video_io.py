"""From a question's video to pixel values: file lookup, frame sampling (whole video, a bounded
segment, or a folder of frame images), the model's pixel preprocessing, and subtitles at the
sampled frames.

Whole videos go through ``llava.video.load_video_frames`` (segment midpoints, VideoLLaMA2's rule).
Bounded segments and frame folders use the same rule restricted to the segment
(:func:`bounded_frame_indices`). Every decoding problem surfaces as ``llava.video.VideoDecodeError``,
which inference records as a failed item.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import UnidentifiedImageError

from llava.mm_utils import open_rgb_image, process_video_frames
from llava.video import VideoDecodeError, load_video_frames, sample_frame_indices

#: frame rate of MVBench's frame folders (TVQA frames are extracted at 3 fps)
FRAME_FOLDER_FPS = 3.0
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class Clip:
    """Sampled frames ``(T, H, W, 3)`` uint8 and their timestamps in seconds."""

    frames: np.ndarray
    times: tuple[float, ...]


def resolve_video(folder: Path, candidates: Sequence[str]) -> Path | None:
    """The first candidate (relative to ``folder``) that exists, else ``None``."""
    for candidate in candidates:
        path = folder / candidate
        if path.exists():
            return path
    return None


def bounded_frame_indices(total: int, fps: float, n: int, start: float, end: float) -> list[int]:
    """``n`` indices spread over the segment ``[start, end]`` seconds of a ``total``-frame video.

    VideoLLaMA2's rule for MVBench's bounded tasks: negative times count as 0, reversed bounds are swapped and
    an empty segment is widened to one second; the segment covers frames ``int(start*fps) - 1`` to
    ``int(end*fps) - 1`` clipped to the video, and ``sample_frame_indices`` picks ``n`` of them. A segment
    lying wholly after the video's end falls back to its last frame (VideoLLaMA2's code would index
    outside the segment there).
    """
    start, end = max(start, 0.0), max(end, 0.0)
    if start > end:
        start, end = end, start
    elif start == end:
        end = start + 1
    last = max(min(int(end * fps) - 1, total - 1), 0)
    first = min(max(int(start * fps) - 1, 0), last)
    return [first + i for i in sample_frame_indices(last - first + 1, n)]


def load_clip(path: Path, num_frames: int, bound: tuple[float, float] | None = None, backend: str = "auto") -> Clip:
    """``num_frames`` frames of the video file or frame folder at ``path`` (of the segment ``bound``)."""
    if path.is_dir():
        return _load_frame_folder(path, num_frames, bound)
    if bound is None:
        video = load_video_frames(path, num_frames=num_frames, backend=backend)
        return Clip(video.frames, tuple(video.frame_times))
    return _load_segment(path, num_frames, bound, backend)


def _load_segment(path: Path, num_frames: int, bound: tuple[float, float], backend: str = "auto") -> Clip:
    """``num_frames`` frames of the segment ``bound`` (seconds), through the same decoders as whole videos
    (decord, or PyAV where decord is not installed or cannot read the file)."""

    def select(total: int, fps: float) -> list[int]:
        return bounded_frame_indices(total, fps, num_frames, *bound)

    video = load_video_frames(path, backend=backend, frame_selector=select)
    return Clip(video.frames, tuple(video.frame_times))


def _load_frame_folder(folder: Path, num_frames: int, bound: tuple[float, float] | None) -> Clip:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
    if not files:
        raise VideoDecodeError(f"frame folder '{folder}' holds no {'/'.join(FRAME_EXTENSIONS)} images", path=str(folder))
    if bound is None:
        indices = sample_frame_indices(len(files), num_frames)
    else:
        indices = bounded_frame_indices(len(files), FRAME_FOLDER_FPS, num_frames, *bound)
    try:
        frames = [np.asarray(open_rgb_image(files[i])) for i in indices]
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise VideoDecodeError(f"frame folder '{folder}': cannot read an image ({err})", path=str(folder)) from err
    if len({f.shape for f in frames}) > 1:
        raise VideoDecodeError(f"frame folder '{folder}': frames differ in size", path=str(folder))
    return Clip(np.stack(frames), tuple(i / FRAME_FOLDER_FPS for i in indices))


def clip_pixels(clip: Clip, image_processor, image_aspect_ratio: str | None) -> torch.Tensor:
    """``(T, 3, S, S)`` pixel values. Frames are padded to squares first when the checkpoint says
    ``image_aspect_ratio="pad"`` (VideoLLaMA2's video preprocessing), and resized otherwise (OneVision's)."""
    return process_video_frames(clip.frames, image_processor, image_aspect_ratio)


# --------------------------------------------------------------------------- subtitles

_SRT_TIME = re.compile(r"(\d+):(\d+):(\d+)[,.](\d+)\s*-->\s*(\d+):(\d+):(\d+)[,.](\d+)")
_MARKUP = re.compile(r"<[^>]+>|\{[^}]*\}")


def read_srt(path: Path) -> list[tuple[float, float, str]]:
    """``(start, end, text)`` cues of an ``.srt`` file, times in seconds, markup removed."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as err:
        raise ValueError(f"subtitle file {path} cannot be read ({err})") from err
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = block.strip().splitlines()
        for at, line in enumerate(lines):
            match = _SRT_TIME.search(line)
            if match:
                h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in match.groups())
                body = " ".join(lines[at + 1:]).replace("\\N", " ")
                cues.append((h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000,
                             _MARKUP.sub("", body).strip()))
                break
    return cues


def subtitles_at(cues: Sequence[tuple[float, float, str]], times: Sequence[float]) -> str:
    """The cue shown at each sampled frame time (as the release picks them), one line per frame that
    has a non-empty one."""
    lines = []
    for t in times:
        text = next((cue for start, end, cue in cues if start < t < end), "")
        if text:
            lines.append(text)
    return "\n".join(lines)
