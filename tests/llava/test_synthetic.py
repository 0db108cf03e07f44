"""The synthetic dataset is a pure function of its seed, and its videos decode as written."""

from __future__ import annotations

import json

from llava.synthetic import make_dataset
from llava.utils import load_video_frames


def test_same_seed_same_annotation_bytes_and_decodable_videos(tmp_path):
    a = make_dataset(tmp_path / "a", seed=3, videos=3, images=2, frames=8, size=32)
    b = make_dataset(tmp_path / "b", seed=3, videos=3, images=2, frames=8, size=32)
    c = make_dataset(tmp_path / "c", seed=4, videos=3, images=2, frames=8, size=32)
    for name in ("stage1", "stage2", "stage3", "mixture"):
        assert a[name].read_bytes() == b[name].read_bytes()
    assert a["stage2"].read_bytes() != c["stage2"].read_bytes()
    records = json.loads(a["stage2"].read_text())
    assert len(records) == 3
    for record in records:
        video = load_video_frames(tmp_path / "a" / record["video"], backend="decord")
        assert video.frames.shape == (8, 32, 32, 3)
        assert record["conversations"][0]["value"].startswith("<video>\nDescribe the ")
