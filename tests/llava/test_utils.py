"""Sharding and process helpers of ``llava.utils``, and its re-exports of the video loaders."""

from __future__ import annotations

import pytest
import torch

from llava import constants, utils, video
from llava.utils import build_logger, disable_torch_init, get_chunk, rank0_print, rank_print, split_list


def test_utils_re_exports_the_video_loaders():
    """Upstream scripts import ``process_video_with_decord`` and friends from ``llava.utils``."""
    for name in ("DecodedVideo", "VideoDecodeError", "load_video_frames", "process_video_with_decord",
                 "process_video_with_pyav", "sample_frame_indices", "write_video"):
        assert getattr(utils, name) is getattr(video, name) and name in utils.__all__


# --------------------------------------------------------------------------- sharding


def test_split_list_and_get_chunk():
    assert split_list(list(range(10)), 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert split_list(list(range(10)), 4) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert split_list(list(range(9)), 4) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], []]  # every worker gets a chunk
    assert split_list([], 2) == [[], []]
    assert get_chunk(list(range(10)), 3, 2) == [8, 9]
    assert get_chunk(list(range(9)), 4, 3) == []
    with pytest.raises(ValueError, match="n=0"):
        split_list([1], 0)
    with pytest.raises(IndexError, match="k=3"):
        get_chunk([1, 2], 3, 3)


# --------------------------------------------------------------------------- process helpers


def test_rank_printing_outside_distributed(capsys):
    rank0_print("loss", 1.5)
    rank_print("step", 2)
    assert capsys.readouterr().out == "loss 1.5\nstep 2\n"


def test_rank_printing_inside_distributed(tmp_path, capsys):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        rank0_print("hello")
        rank_print("world")
    finally:
        torch.distributed.destroy_process_group()
    assert capsys.readouterr().out == "Rank 0:  hello\nRank 0:  world\n"


def test_disable_torch_init_makes_reset_parameters_a_no_op(monkeypatch):
    # Register the originals so monkeypatch restores them after the global patch below.
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", torch.nn.Linear.reset_parameters)
    monkeypatch.setattr(torch.nn.LayerNorm, "reset_parameters", torch.nn.LayerNorm.reset_parameters)
    linear, norm = torch.nn.Linear(3, 2), torch.nn.LayerNorm(3)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(norm.weight)
    disable_torch_init()
    linear.reset_parameters()
    norm.reset_parameters()
    assert linear.weight.abs().sum().item() == 0.0 and norm.weight.abs().sum().item() == 0.0


def test_build_logger_writes_under_logdir_once(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "LOGDIR", str(tmp_path))
    log = build_logger("llava.tests.build_logger", "logs/worker.log")
    try:
        again = build_logger("llava.tests.build_logger", "logs/worker.log")
        assert again is log and len(log.handlers) == 1
        log.info("hello from the test")
        log.handlers[0].flush()
        assert "hello from the test" in (tmp_path / "logs" / "worker.log").read_text()
    finally:
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)
