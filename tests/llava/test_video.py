"""Video decoding and frame sampling of ``llava.video``.

Videos are written on the fly by ``tests.helpers.videos``; every frame encodes its own index, so
the tests check which source frames a loader returned, not only how many.
"""

from __future__ import annotations

import logging
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

import llava.video as decoding
from llava.video import (
    VideoDecodeError,
    load_video_frames,
    process_video_with_decord,
    process_video_with_pyav,
    sample_frame_indices,
)
from tests.helpers.videos import decode_frame_indices, write_test_video

BACKENDS = ["decord", "pyav"]


@pytest.fixture(scope="module")
def video_48(tmp_path_factory) -> Path:
    """48 frames, 64x48, 24 fps: two seconds."""
    return write_test_video(tmp_path_factory.mktemp("videos") / "clip.mp4", num_frames=48, width=64, height=48, fps=24)


@pytest.fixture
def fresh_auto_backend():
    decoding._auto_backend.cache_clear()
    yield
    decoding._auto_backend.cache_clear()


# --------------------------------------------------------------------------- sampling rules


def test_sample_frame_indices_are_segment_midpoints():
    assert sample_frame_indices(48, 8) == [3, 9, 15, 21, 26, 32, 38, 44]
    assert sample_frame_indices(90, 7) == [6, 19, 32, 45, 57, 70, 83]
    assert sample_frame_indices(48, 48) == list(range(48))
    assert sample_frame_indices(3, 5) == [0, 1, 1, 1, 2]  # fewer frames than asked: repeats
    assert sample_frame_indices(1, 3) == [0, 0, 0]
    for total, n in [(0, 4), (10, 0)]:
        with pytest.raises(ValueError):
            sample_frame_indices(total, n)


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kwargs, indices, times",
    [
        ({"num_frames": 8}, [3, 9, 15, 21, 26, 32, 38, 44], "0.12s,0.38s,0.62s,0.88s,1.08s,1.33s,1.58s,1.83s"),
        ({"fps": 1}, [0, 24], "0.00s,1.00s"),
        # Upstream divided by the stride here and reported 0,1,2,3 seconds.
        ({"fps": 2}, [0, 12, 24, 36], "0.00s,0.50s,1.00s,1.50s"),
        ({"fps": 2, "frames_upbound": 3}, [0, 23, 47], "0.00s,0.96s,1.96s"),
        ({"fps": 1, "frames_upbound": 4}, [0, 24], "0.00s,1.00s"),
        ({"fps": 1, "frames_upbound": 4, "force_sample": True}, [0, 15, 31, 47], "0.00s,0.62s,1.29s,1.96s"),
    ],
)
def test_load_video_frames_returns_the_sampled_frames(video_48, backend, kwargs, indices, times):
    video = load_video_frames(video_48, backend=backend, **kwargs)
    assert video.frames.dtype == np.uint8 and video.frames.shape == (len(indices), 48, 64, 3)
    assert video.frame_indices == indices
    assert decode_frame_indices(video.frames) == indices
    assert video.frame_time_str == times
    assert (video.total_frames, video.avg_fps, video.duration) == (48, 24.0, 2.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_all_frames_without_sampling_options(video_48, backend):
    video = load_video_frames(video_48, backend=backend)
    assert decode_frame_indices(video.frames) == list(range(48))


def test_decord_and_pyav_return_the_same_frames(tmp_path):
    path = write_test_video(tmp_path / "mpeg4.mp4", num_frames=90, width=64, height=48, fps=30, codec="mpeg4")
    for kwargs in ({"num_frames": 7}, {"fps": 1}, {"fps": 4, "frames_upbound": 5}):
        by_decord = load_video_frames(path, backend="decord", **kwargs)
        by_pyav = load_video_frames(path, backend="pyav", **kwargs)
        assert by_decord.frame_indices == by_pyav.frame_indices
        assert decode_frame_indices(by_decord.frames) == decode_frame_indices(by_pyav.frames) == by_decord.frame_indices
        diff = np.abs(by_decord.frames.astype(np.int16) - by_pyav.frames.astype(np.int16))
        assert diff.mean() < 2.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_low_fps_video_never_gets_a_zero_stride(tmp_path, backend):
    # 0.5 fps: upstream computed round(0.5 / 1) = 0 and crashed in range().
    path = write_test_video(tmp_path / "slow.mp4", num_frames=6, width=64, height=48, fps=Fraction(1, 2))
    video = load_video_frames(path, fps=1, backend=backend)
    assert video.frame_indices == [0, 1, 2, 3, 4, 5]
    assert video.frame_time_str == "0.00s,2.00s,4.00s,6.00s,8.00s,10.00s"
    assert video.duration == 12.0


@pytest.mark.parametrize("loader", [process_video_with_decord, process_video_with_pyav])
def test_process_video_return_contract(video_48, loader):
    frames, video_time, frame_time, num_frames = loader(
        str(video_48), SimpleNamespace(video_fps=1, frames_upbound=3, force_sample=True)
    )
    assert isinstance(frames, np.ndarray) and frames.shape == (3, 48, 64, 3) and frames.dtype == np.uint8
    assert decode_frame_indices(frames) == [0, 23, 47]
    assert (video_time, frame_time, num_frames) == (2.0, "0.00s,0.96s,1.96s", 3)
    # Missing or None fields fall back to video_fps=1, frames_upbound=0, force_sample=False.
    for data_args in (SimpleNamespace(), SimpleNamespace(video_fps=None, frames_upbound=None, force_sample=None)):
        frames, video_time, frame_time, num_frames = loader(str(video_48), data_args)
        assert decode_frame_indices(frames) == [0, 24] and frame_time == "0.00s,1.00s" and num_frames == 2


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_missing_file_raises_file_not_found_naming_the_path(tmp_path, backend):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4") as info:
        load_video_frames(missing, num_frames=4, backend=backend)
    assert info.value.filename == str(missing)


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_file_raises_video_decode_error(tmp_path, backend):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="corrupt.mp4") as info:
        load_video_frames(corrupt, num_frames=4, backend=backend)
    assert isinstance(info.value, ValueError) and info.value.path == str(corrupt)


@pytest.mark.parametrize("backend", BACKENDS)
def test_video_without_frames_raises_video_decode_error(tmp_path, backend):
    empty = tmp_path / "zero.mp4"
    with av.open(str(empty), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoDecodeError, match="zero.mp4"):
        load_video_frames(empty, fps=1, backend=backend)


def test_directory_raises_video_decode_error(tmp_path):
    with pytest.raises(VideoDecodeError, match="directory"):
        load_video_frames(tmp_path, num_frames=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_frames": 4, "fps": 1}, "cannot be combined"),
        ({"num_frames": 4, "frames_upbound": 8}, "cannot be combined"),
        ({"num_frames": 0}, "num_frames=0"),
        ({"fps": 0}, "fps=0"),
        ({"frames_upbound": -1}, "frames_upbound=-1"),
        ({"backend": "ffmpeg"}, "backend='ffmpeg'"),
    ],
)
def test_invalid_arguments(video_48, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_video_frames(video_48, **kwargs)


# --------------------------------------------------------------------------- backend choice


def test_auto_backend_prefers_decord_and_logs_it(video_48, fresh_auto_backend, caplog):
    with caplog.at_level(logging.INFO, logger="llava.video"):
        video = load_video_frames(video_48, num_frames=2)
    assert decode_frame_indices(video.frames) == [12, 35]
    assert "Video decoding backend: decord" in caplog.text


def test_auto_backend_falls_back_to_pyav_without_decord(video_48, fresh_auto_backend, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` raise ImportError
    with caplog.at_level(logging.INFO, logger="llava.video"):
        video = load_video_frames(video_48, num_frames=2)
    assert decode_frame_indices(video.frames) == [12, 35]
    assert "Video decoding backend: pyav" in caplog.text


def test_auto_backend_falls_back_to_pyav_when_decord_fails(tmp_path, monkeypatch):
    path = write_test_video(tmp_path / "clip.mp4", num_frames=12)
    direct = load_video_frames(path, num_frames=4, backend="pyav")

    def broken(video_path, select):
        raise decoding._decode_error(video_path, "decord refused it")

    monkeypatch.setitem(decoding._DECODERS, "decord", broken)
    monkeypatch.setattr(decoding, "_auto_backend", lambda: "decord")
    fallback = load_video_frames(path, num_frames=4)
    assert fallback.frame_indices == direct.frame_indices
    assert (fallback.frames == direct.frames).all()

    monkeypatch.setattr(decoding, "_decode_with_pyav", lambda video_path, select: broken(video_path, select))
    with pytest.raises(VideoDecodeError, match="decord refused it; PyAV fallback: decord refused it"):
        load_video_frames(path, num_frames=4)


# --------------------------------------------------------------------------- the decoded-clip cache


def _counting_decoder(monkeypatch) -> list[str]:
    """Every decode ``load_video_frames`` does from now on appends the path to the returned list."""
    calls = []
    real = decoding._DECODERS["pyav"]

    def counted(video_path, select):
        calls.append(video_path)
        return real(video_path, select)

    monkeypatch.setitem(decoding._DECODERS, "pyav", counted)
    return calls


def test_cache_decodes_a_clip_once_and_returns_the_same_frames(tmp_path, monkeypatch):
    path = write_test_video(tmp_path / "clip.mp4", num_frames=12)
    direct = load_video_frames(path, num_frames=4, backend="pyav")
    calls = _counting_decoder(monkeypatch)
    cache = decoding.DecodedVideoCache(2**20)
    first = cache.load(path, num_frames=4, backend="pyav")
    second = cache.load(path, num_frames=4, backend="pyav")
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert second is first and not first.frames.flags.writeable
    assert first.frame_indices == direct.frame_indices and (first.frames == direct.frames).all()
    with pytest.raises(ValueError, match="read-only"):
        first.frames[0, 0, 0, 0] = 0
    # other sampling options are another clip
    other = cache.load(path, num_frames=6, backend="pyav")
    assert len(calls) == 2 and len(other.frame_indices) == 6 and len(cache) == 2
    assert cache.bytes == first.frames.nbytes + other.frames.nbytes


def test_cache_evicts_the_least_recently_used_clip_beyond_its_size(tmp_path, monkeypatch):
    paths = [write_test_video(tmp_path / f"clip{i}.mp4", num_frames=8) for i in range(3)]
    one = load_video_frames(paths[0], num_frames=4, backend="pyav").frames.nbytes
    calls = _counting_decoder(monkeypatch)
    cache = decoding.DecodedVideoCache(2 * one)
    cache.load(paths[0], num_frames=4, backend="pyav")
    cache.load(paths[1], num_frames=4, backend="pyav")
    cache.load(paths[0], num_frames=4, backend="pyav")  # clip 0 is now the most recent
    cache.load(paths[2], num_frames=4, backend="pyav")  # evicts clip 1
    assert len(cache) == 2 and cache.bytes == 2 * one
    cache.load(paths[0], num_frames=4, backend="pyav")
    cache.load(paths[1], num_frames=4, backend="pyav")
    assert [Path(p).name for p in calls] == ["clip0.mp4", "clip1.mp4", "clip2.mp4", "clip1.mp4"]
    # a clip larger than the whole cache is decoded and returned, never kept
    small = decoding.DecodedVideoCache(one - 1)
    clip = small.load(paths[0], num_frames=4, backend="pyav")
    assert len(small) == 0 and small.bytes == 0 and clip.frames.flags.writeable


def test_cache_decodes_an_edited_file_again_and_off_keeps_nothing(tmp_path, monkeypatch):
    path = write_test_video(tmp_path / "clip.mp4", num_frames=12)
    calls = _counting_decoder(monkeypatch)
    cache = decoding.DecodedVideoCache(2**20)
    before = cache.load(path, num_frames=4, backend="pyav")
    write_test_video(path, num_frames=24)
    after = cache.load(path, num_frames=4, backend="pyav")
    assert len(calls) == 2 and (before.total_frames, after.total_frames) == (12, 24)
    off = decoding.DecodedVideoCache(0)
    off.load(path, num_frames=4, backend="pyav")
    off.load(path, num_frames=4, backend="pyav")
    assert len(calls) == 4 and len(off) == 0 and off.hits == 0
    with pytest.raises(FileNotFoundError):
        cache.load(tmp_path / "missing.mp4", num_frames=4)
    with pytest.raises(ValueError, match="max_bytes=-1"):
        decoding.DecodedVideoCache(-1)
