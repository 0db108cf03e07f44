"""Video decoding and frame sampling: one function per sampling rule, decord or PyAV underneath.

* ``load_video_frames`` decodes frames with decord (or PyAV when decord is not installed, or cannot
  read the file) and samples them either at a target fps (LLaVA-Video's rule, with an optional cap)
  or as a fixed number of segment midpoints (``sample_frame_indices``, VideoLLaMA2's rule). It
  returns a :class:`DecodedVideo` (frames ``(T, H, W, 3)`` uint8, their indices and times).
* ``DecodedVideoCache`` keeps recently decoded clips up to a size, for a training run that reads the
  same videos every epoch (``--video_cache_mb``).
* ``process_video_with_decord`` / ``process_video_with_pyav`` wrap it with LLaVA-NeXT's
  ``(video, video_time, frame_time, num_frames)`` return contract (``llava.utils`` re-exports them
  under the upstream import path).
* ``write_video`` encodes frames into an mp4 (synthetic data, tests).

Every decoding problem of an existing file is a :class:`VideoDecodeError` naming the file and the
reason; a missing file is a ``FileNotFoundError``.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "VIDEO_BACKENDS",
    "DecodedVideo",
    "DecodedVideoCache",
    "VideoDecodeError",
    "load_video_frames",
    "process_video_with_decord",
    "process_video_with_pyav",
    "sample_frame_indices",
    "write_video",
]

VIDEO_BACKENDS = ("auto", "decord", "pyav")


class VideoDecodeError(ValueError):
    """A video file exists but no frames can be decoded from it (corrupt, empty, unsupported)."""

    def __init__(self, message: str, path: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.path = path
        self.reason = reason or message


def _decode_error(path: str, reason: str) -> VideoDecodeError:
    return VideoDecodeError(f"cannot decode video '{path}': {reason}", path=path, reason=reason)


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
    """Frames sampled from one video.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        frame_indices: source index of each returned frame (``T`` entries, may repeat).
        avg_fps: the container's average frame rate.
        total_frames: number of frames in the video.
    """

    frames: np.ndarray
    frame_indices: list[int]
    avg_fps: float
    total_frames: int

    @property
    def duration(self) -> float:
        """Video length in seconds (``total_frames / avg_fps``)."""
        return self.total_frames / self.avg_fps

    @property
    def frame_times(self) -> list[float]:
        """Timestamp in seconds of each returned frame."""
        return [index / self.avg_fps for index in self.frame_indices]

    @property
    def frame_time_str(self) -> str:
        """``"0.00s,1.00s,..."``, the form LLaVA-Video's time instruction embeds."""
        return ",".join(f"{t:.2f}s" for t in self.frame_times)


def sample_frame_indices(total: int, n: int) -> list[int]:
    """Indices of ``n`` frames spread uniformly over ``total``: the midpoints of ``n`` equal
    segments of ``[0, total - 1]`` (VideoLLaMA2's segment-midpoint rule). Repeats when ``total < n``."""
    if total < 1:
        raise ValueError(f"sample_frame_indices: total={total} must be >= 1")
    if n < 1:
        raise ValueError(f"sample_frame_indices: n={n} must be >= 1")
    segment = (total - 1) / n
    # The epsilon rounds exact .5 midpoints up, as the reference implementation does.
    midpoints = segment * (np.arange(n) + 0.5) + 1e-6
    return np.round(midpoints).astype(int).tolist()


def _fps_frame_indices(
    total: int, avg_fps: float, fps: float | None, frames_upbound: int, force_sample: bool
) -> list[int]:
    """LLaVA-Video's sampling: every ``round(avg_fps / fps)``-th frame (all frames when ``fps``
    is None); if ``frames_upbound > 0`` and that gives more frames (or ``force_sample``), take
    ``frames_upbound`` frames evenly from first to last instead."""
    stride = 1 if fps is None else max(1, round(avg_fps / fps))
    indices = list(range(0, total, stride))
    if frames_upbound > 0 and (len(indices) > frames_upbound or force_sample):
        indices = np.linspace(0, total - 1, frames_upbound, dtype=int).tolist()
    return indices


IndexSelector = Callable[[int, float], list[int]]  # (total_frames, avg_fps) -> frame indices


def _decode_with_decord(path: str, select: IndexSelector) -> DecodedVideo:
    import decord

    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as err:
        raise _decode_error(path, f"decord could not open it ({err})") from err
    total, avg_fps = len(reader), float(reader.get_avg_fps())
    indices = _checked_selection(path, total, avg_fps, select)
    try:
        frames = reader.get_batch(indices).asnumpy()
    except (decord.DECORDError, RuntimeError) as err:
        raise _decode_error(path, f"decord failed reading frames {indices[:8]}... ({err})") from err
    return DecodedVideo(frames=frames, frame_indices=indices, avg_fps=avg_fps, total_frames=total)


def _decode_with_pyav(path: str, select: IndexSelector) -> DecodedVideo:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise _decode_error(path, "it has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            avg_fps = float(rate) if rate else 0.0
            total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        indices = _checked_selection(path, total, avg_fps, select)

        # Decode sequentially and keep only the requested frames, stopping after the last one.
        wanted = set(indices)
        last = max(indices)
        kept: dict[int, np.ndarray] = {}
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    kept[index] = frame.to_ndarray(format="rgb24")
                if index >= last:
                    break
    except av.FFmpegError as err:
        raise _decode_error(path, f"PyAV failed ({err})") from err
    if len(kept) < len(wanted):
        raise _decode_error(
            path, f"the container reports {total} frames but only {len(kept)} of the requested ones could be decoded"
        )
    frames = np.stack([kept[index] for index in indices])
    return DecodedVideo(frames=frames, frame_indices=indices, avg_fps=avg_fps, total_frames=total)


def _checked_selection(path: str, total: int, avg_fps: float, select: IndexSelector) -> list[int]:
    if total <= 0:
        raise _decode_error(path, "it contains no frames")
    if not avg_fps > 0:
        raise _decode_error(path, f"its frame rate is unknown (avg_fps={avg_fps})")
    return select(total, avg_fps)


_DECODERS: dict[str, Callable[[str, IndexSelector], DecodedVideo]] = {
    "decord": _decode_with_decord,
    "pyav": _decode_with_pyav,
}


@functools.cache
def _auto_backend() -> str:
    try:
        import decord  # noqa: F401
    except ImportError:
        backend = "pyav"
    else:
        backend = "decord"
    logger.info("Video decoding backend: %s", backend)
    return backend


def load_video_frames(
    path: str | os.PathLike,
    num_frames: int | None = None,
    fps: float | None = None,
    frames_upbound: int = 0,
    force_sample: bool = False,
    backend: str = "auto",
    repeat_frames: bool = True,
    frame_selector: IndexSelector | None = None,
) -> DecodedVideo:
    """Decode frames of the video at ``path``.

    Sampling, in order of precedence:

    * ``num_frames=N``: ``sample_frame_indices(total, N)``, N segment midpoints. It cannot be
      combined with the fps options.
    * otherwise LLaVA-Video's rule: one frame every ``round(avg_fps / fps)`` (every frame when
      ``fps`` is None); with ``frames_upbound > 0``, more frames than that (or ``force_sample``)
      switch to ``frames_upbound`` frames evenly spaced from the first to the last.

    Args:
        backend: ``"decord"``, ``"pyav"`` or ``"auto"``: decord when importable, and PyAV for files
            decord cannot read (the error then names both failures).
        repeat_frames: with ``num_frames`` and a video shorter than that, repeat frames to return
            exactly ``num_frames`` (the reference behaviour); ``False`` returns every frame once.
        frame_selector: ``(total_frames, avg_fps) -> indices``, a sampling rule of the caller's own
            (e.g. a benchmark's time segment) used instead of the ones above.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoDecodeError: the file cannot be decoded, has no frames or no frame rate.
        ValueError: invalid sampling arguments or backend name.
    """
    path = os.fspath(path)
    if num_frames is not None:
        if fps is not None or frames_upbound or force_sample:
            raise ValueError(
                "load_video_frames: num_frames cannot be combined with fps, frames_upbound or force_sample "
                f"(got num_frames={num_frames}, fps={fps}, frames_upbound={frames_upbound}, "
                f"force_sample={force_sample})"
            )
        if num_frames < 1:
            raise ValueError(f"load_video_frames: num_frames={num_frames} must be >= 1")
    if fps is not None and not fps > 0:
        raise ValueError(f"load_video_frames: fps={fps} must be > 0")
    if frames_upbound < 0:
        raise ValueError(f"load_video_frames: frames_upbound={frames_upbound} must be >= 0")
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"load_video_frames: backend={backend!r} is not one of {VIDEO_BACKENDS}")

    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "video file not found", path)
    if os.path.isdir(path):
        raise _decode_error(path, "it is a directory, not a video file")

    if frame_selector is not None:
        select = frame_selector
    elif num_frames is not None:

        def select(total: int, avg_fps: float) -> list[int]:
            return sample_frame_indices(total, num_frames if repeat_frames else min(num_frames, total))

    else:

        def select(total: int, avg_fps: float) -> list[int]:
            return _fps_frame_indices(total, avg_fps, fps, frames_upbound, force_sample)

    if backend != "auto":
        return _DECODERS[backend](path, select)
    resolved = _auto_backend()
    try:
        return _DECODERS[resolved](path, select)
    except VideoDecodeError as first:
        if resolved == "pyav":
            raise
        try:
            video = _decode_with_pyav(path, select)
        except VideoDecodeError as second:
            raise _decode_error(path, f"{first.reason}; PyAV fallback: {second.reason}") from second
        logger.warning("%s: decord failed (%s); decoded with PyAV instead", path, first.reason)
        return video


class DecodedVideoCache:
    """:func:`load_video_frames` that keeps the most recently used clips, up to ``max_bytes`` of frames.

    A training run reads every video once per epoch (and once per question asked about it); with the
    cache a video is decoded once while its frames fit. A clip is keyed by its path, the file's size and
    modification time, and the sampling options, so an edited file is decoded again. Cached frames are
    read-only: every caller gets the same array. ``max_bytes=0`` keeps nothing (every call decodes).
    A process has its own cache (each data-loader worker too)."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"DecodedVideoCache: max_bytes={max_bytes} must be >= 0")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._clips: OrderedDict[tuple, DecodedVideo] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clips)

    def load(self, path: str | os.PathLike, **options: Any) -> DecodedVideo:
        """``load_video_frames(path, **options)``, from the cache when the same file and options were
        decoded before and are still held."""
        if not self.max_bytes:
            return load_video_frames(path, **options)
        path = os.fspath(path)
        stat = os.stat(path)  # FileNotFoundError, as load_video_frames raises it
        key = (path, stat.st_size, stat.st_mtime_ns, tuple(sorted(options.items())))
        clip = self._clips.get(key)
        if clip is not None:
            self._clips.move_to_end(key)
            self.hits += 1
            return clip
        self.misses += 1
        clip = load_video_frames(path, **options)
        size = clip.frames.nbytes
        if size <= self.max_bytes:
            clip.frames.setflags(write=False)
            self._clips[key] = clip
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._clips.popitem(last=False)
                self.bytes -= evicted.frames.nbytes
        return clip


def _data_arg(data_args: Any, name: str, default: Any) -> Any:
    value = getattr(data_args, name, None)
    return default if value is None else value


def _process_video(video_file: str, data_args: Any, backend: str) -> tuple[np.ndarray, float, str, int]:
    video = load_video_frames(
        video_file,
        fps=_data_arg(data_args, "video_fps", 1),
        frames_upbound=_data_arg(data_args, "frames_upbound", 0),
        force_sample=bool(_data_arg(data_args, "force_sample", False)),
        backend=backend,
    )
    return video.frames, video.duration, video.frame_time_str, len(video.frame_indices)


def process_video_with_decord(video_file: str, data_args: Any) -> tuple[np.ndarray, float, str, int]:
    """LLaVA-NeXT's training-time video loader, decoding with decord.

    Reads ``data_args.video_fps`` (default 1), ``frames_upbound`` (0 = no cap) and
    ``force_sample`` (False). Unlike upstream, the stride is never 0 for low-fps videos and
    frame times are ``index / avg_fps`` seconds.

    Returns:
        ``(frames (T, H, W, 3) uint8, video_time seconds, frame_time "0.00s,...", T)``.
    """
    return _process_video(video_file, data_args, backend="decord")


def process_video_with_pyav(video_file: str, data_args: Any) -> tuple[np.ndarray, float, str, int]:
    """``process_video_with_decord`` with PyAV decoding; same arguments, sampling and return."""
    return _process_video(video_file, data_args, backend="pyav")


def write_video(path, frames_thwc: np.ndarray, fps: float | Fraction = 24, codec: str = "libx264") -> Path:
    """Encodes uint8 RGB frames ``(T, H, W, 3)`` (even H and W) into an mp4 at ``path`` with PyAV."""
    import av  # imported here: only writers need it

    path = Path(path)
    frames_thwc = np.asarray(frames_thwc)
    if frames_thwc.ndim != 4 or frames_thwc.shape[-1] != 3 or frames_thwc.dtype != np.uint8:
        raise ValueError(f"write_video({path}): need uint8 frames (T,H,W,3), got {frames_thwc.dtype} {frames_thwc.shape}")
    height, width = frames_thwc.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"write_video({path}): width and height must be even for yuv420p, got {width}x{height}")
    options = {"crf": "10", "preset": "ultrafast"} if codec == "libx264" else {"qscale": "2"}
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames_thwc:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
