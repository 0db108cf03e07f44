"""P3: 32 frames out of a 60 s 720p mp4, seeking with decord against decoding every frame; loader clips/s.

The video is generated here (H.264, 1280x720, 30 fps, 60 s: a colour gradient scrolling sideways and
a square crossing it) and cached under ``results/cache/``. H.264 decoders can only start at a key
frame, so what seeking saves depends on the key-frame interval (GOP); two encodings are measured:
a 1 s GOP (usual for phone and streaming encodes) and x264's default of 250 frames.

* ours: ``llava.video.load_video_frames(path, num_frames=32, backend="decord")`` (seeks to each frame);
* baseline: decord reading every frame in order (each decoded and converted to RGB), keeping the same
  32; the frames returned must be identical.

The loader: a ``torch.utils.data.DataLoader`` over clips that are decoded as above and preprocessed by
our SigLIP processor (384x384, normalised), with 0, 1 and 2 workers.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import CACHE_DIR, Record, compared, interleaved_times, median
from llava.model.multimodal_encoder.siglip_processor import SigLipImageProcessor
from llava.video import load_video_frames, sample_frame_indices

logger = logging.getLogger(__name__)

NUM_FRAMES = 32


@dataclass(frozen=True)
class VideoSpec:
    seconds: int = 60
    width: int = 1280
    height: int = 720
    fps: int = 30
    gop: int = 30
    preset: str = "veryfast"  # x264 preset: CABAC and B-frames, like ordinary web encodes

    @property
    def filename(self) -> str:
        return f"synthetic_{self.width}x{self.height}_{self.fps}fps_{self.seconds}s_gop{self.gop}_{self.preset}.mp4"


FULL = (VideoSpec(gop=30), VideoSpec(gop=250))
QUICK = (VideoSpec(seconds=4, width=320, height=180, gop=30, preset="ultrafast"),)


def synthetic_frames(spec: VideoSpec):
    """Yields ``(H, W, 3)`` uint8 frames: a diagonal gradient scrolling 8 px per frame, a red square crossing."""
    rows, cols = np.mgrid[0:spec.height, 0:spec.width]
    base = np.stack([cols * 255 // spec.width, rows * 255 // spec.height,
                     (rows + cols) * 255 // (spec.width + spec.height)], axis=-1).astype(np.uint8)
    side = spec.height // 5
    for index in range(spec.seconds * spec.fps):
        frame = np.roll(base, 8 * index, axis=1)
        left = (11 * index) % (spec.width - side)
        frame[spec.height // 3: spec.height // 3 + side, left:left + side] = (230, 40, 40)
        yield frame


def make_video(spec: VideoSpec, folder: Path = CACHE_DIR) -> Path:
    """The cached mp4 of ``spec``, encoded frame by frame (the whole video never sits in memory)."""
    import av

    path = folder / spec.filename
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    start = time.perf_counter()
    with av.open(str(partial), mode="w") as container:
        stream = container.add_stream("libx264", rate=spec.fps,
                                      options={"preset": spec.preset, "crf": "23", "g": str(spec.gop)})
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        for frame in synthetic_frames(spec):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
    partial.rename(path)
    logger.info("P3: encoded %s in %.0f s", path.name, time.perf_counter() - start)
    return path


def decode_sampled(path: Path) -> np.ndarray:
    return load_video_frames(path, num_frames=NUM_FRAMES, backend="decord").frames


def decode_every_frame(path: Path) -> np.ndarray:
    """Every frame decoded and converted in order; the sampled ones kept."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)  # as load_video_frames
    wanted = sample_frame_indices(len(reader), NUM_FRAMES)
    wanted_set, kept = set(wanted), {}
    for index in range(len(reader)):
        frame = reader.next()
        if index in wanted_set:
            kept[index] = frame.asnumpy()
    return np.stack([kept[index] for index in wanted])


class ClipDataset(Dataset):
    """``clips`` copies of one video: each item decoded (32 frames) and preprocessed, ``(32, 3, 384, 384)``."""

    def __init__(self, path: Path, clips: int) -> None:
        self.path, self.clips = path, clips
        self.processor = SigLipImageProcessor()

    def __len__(self) -> int:
        return self.clips

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.processor.preprocess(decode_sampled(self.path), return_tensors="pt")["pixel_values"]


def clips_per_second(path: Path, workers: int, clips: int) -> float:
    """Clips delivered per second by a fresh loader (worker start-up included, as an epoch sees it)."""
    start = time.perf_counter()
    count = sum(1 for _ in DataLoader(ClipDataset(path, clips), batch_size=None, num_workers=workers))
    return count / (time.perf_counter() - start)


def _decode_records(path: Path, spec: VideoSpec, repeats: int) -> list[Record]:
    if not np.array_equal(decode_sampled(path), decode_every_frame(path)):  # also the warm-up round
        raise RuntimeError(f"P3: seeking and full decoding of {path.name} returned different frames")
    times = interleaved_times({"sampled": lambda: decode_sampled(path), "full": lambda: decode_every_frame(path)},
                              repeats=repeats, warmup=0)
    where = f"{spec.seconds} s {spec.width}x{spec.height} {spec.fps} fps, GOP {spec.gop}"
    logger.info("P3 %s: sampled %.2f s, every frame %.2f s", where, median(times["sampled"]), median(times["full"]))
    return [compared("P3", f"decode {NUM_FRAMES} sampled frames ({where})", median(times["sampled"]),
                     median(times["full"]), "s", lower_is_better=True, target=">= 5",
                     details={"video": asdict(spec), "repeats_s": times})]


def run(quick: bool = False, device: str = "cpu") -> list[Record]:
    if quick:  # a 4 s clip, made in a moment: not worth caching
        with tempfile.TemporaryDirectory(prefix="p3_video_") as tmp:
            return _measure(QUICK, repeats=1, clips=2, folder=Path(tmp))
    return _measure(FULL, repeats=3, clips=6, folder=CACHE_DIR)


def _measure(specs: tuple[VideoSpec, ...], repeats: int, clips: int, folder: Path) -> list[Record]:
    records = []
    for spec in specs:
        records += _decode_records(make_video(spec, folder), spec, repeats)
    path = make_video(specs[0], folder)
    rates = {workers: [] for workers in (0, 1, 2)}
    for _ in range(repeats):  # interleaved, like the timings
        for workers in rates:
            rates[workers].append(clips_per_second(path, workers, clips))
    logger.info("P3 loader clips/s: %s", {w: round(median(r), 2) for w, r in rates.items()})
    details = {"video": asdict(specs[0]), "clips_per_epoch": clips, "repeats_clips_per_s": rates}
    for workers in (1, 2):
        records.append(compared(
            "P3", f"data loader, {workers} worker{'s' * (workers > 1)} vs 0 (decode + SigLIP preprocess, "
                  f"{NUM_FRAMES} frames -> 384x384)", median(rates[workers]), median(rates[0]), "clips/s",
            lower_is_better=False, details=details,
            note="no target; on 2 cores the workers share the CPU with the main process"))
    return records
