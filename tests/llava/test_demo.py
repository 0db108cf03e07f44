"""The README's main-job command runs end to end on the tiny checkpoints."""

import json

from llava.demo import main


def test_demo_runs_end_to_end(tmp_path):
    results = main(["--out", str(tmp_path / "demo"), "--tiny", str(tmp_path / "tiny"), "--max-new-tokens", "3"])
    assert results["frames"] == 8
    assert results["video_tokens"] == 8 * 3 * 3  # 7x7 SigLIP grid, 2x2 average pooling per frame
    assert results["image_tokens"] == 49
    hicom = results["hicom"]
    assert hicom["available"] and hicom["video_tokens"] == 2 * 3 * 3 + 32  # (4,3,3) groups + 32 global
    assert hicom["tokens_32_frames_so400m"] == 680 and hicom["tokens_image_so400m"] == 113
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == results
    assert (tmp_path / "demo" / "moving_square.mp4").stat().st_size > 0
