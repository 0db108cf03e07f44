"""Process-level helpers, and the upstream import path of the video loaders.

* Distributed-aware printing (``rank0_print``, ``rank_print``), ``build_logger`` and
  ``disable_torch_init``: legacy names that training, evaluation and serving scripts import.
* ``split_list`` / ``get_chunk``: contiguous sharding of evaluation questions across workers.
* Video decoding lives in :mod:`llava.video`; its public names are re-exported here because
  LLaVA-NeXT's users import ``process_video_with_decord`` from ``llava.utils``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

from llava import constants
from llava.video import (
    DecodedVideo,
    VideoDecodeError,
    load_video_frames,
    process_video_with_decord,
    process_video_with_pyav,
    sample_frame_indices,
    write_video,
)

__all__ = [
    "DecodedVideo",
    "VideoDecodeError",
    "build_logger",
    "disable_torch_init",
    "get_chunk",
    "inside_root",
    "load_video_frames",
    "process_video_with_decord",
    "process_video_with_pyav",
    "rank0_print",
    "rank_print",
    "sample_frame_indices",
    "split_list",
    "write_video",
]

T = TypeVar("T")


# --------------------------------------------------------------------------- process helpers


def _distributed_rank() -> int | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return None


def rank0_print(*args: Any) -> None:
    """Print on rank 0 only (or always, outside ``torch.distributed``).

    Kept as ``print`` for scripts that rely on seeing this output; new code should log instead.
    """
    rank = _distributed_rank()
    if rank is None:
        print(*args)
    elif rank == 0:
        print(f"Rank {rank}: ", *args)


def rank_print(*args: Any) -> None:
    """Print on every rank, prefixed with the rank inside ``torch.distributed``."""
    rank = _distributed_rank()
    if rank is None:
        print(*args)
    else:
        print(f"Rank {rank}: ", *args)


def disable_torch_init() -> None:
    """Skip the random initialisation of ``nn.Linear`` and ``nn.LayerNorm``.

    Loading pretrained weights overwrites them anyway, so this only saves time. It patches the
    classes for the whole process.
    """
    setattr(torch.nn.Linear, "reset_parameters", lambda self: None)
    setattr(torch.nn.LayerNorm, "reset_parameters", lambda self: None)


def build_logger(logger_name: str, logger_filename: str) -> logging.Logger:
    """Return logger ``logger_name`` at INFO, also writing to ``LOGDIR/logger_filename``.

    Calling it again with the same file does not add a second handler.
    """
    log = logging.getLogger(logger_name)
    log.setLevel(logging.INFO)
    path = os.path.abspath(os.path.join(constants.LOGDIR, logger_filename))
    already_attached = any(
        isinstance(handler, logging.FileHandler) and handler.baseFilename == path for handler in log.handlers
    )
    if not already_attached:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s"))
        log.addHandler(handler)
    return log


# --------------------------------------------------------------------------- sharding


def inside_root(path: str, root: str) -> bool:
    """Whether ``path`` (joined under ``root``) stays inside ``root`` once ``..`` is resolved; an absolute
    media path is outside any root it was not written under. Symbolic links inside the root are the
    data owner's choice and are followed (a folder of links to the real videos is common)."""
    base = os.path.abspath(root or ".")
    return os.path.commonpath([base, os.path.abspath(path)]) == base


def split_list(lst: Sequence[T], n: int) -> list[Sequence[T]]:
    """Split ``lst`` into ``n`` contiguous chunks of ``ceil(len / n)`` items (the last ones may
    be shorter or empty), so every worker index in ``range(n)`` has a chunk."""
    if n < 1:
        raise ValueError(f"split_list: n={n} must be >= 1")
    size = math.ceil(len(lst) / n)
    return [lst[k * size : (k + 1) * size] for k in range(n)]


def get_chunk(lst: Sequence[T], n: int, k: int) -> Sequence[T]:
    """Chunk ``k`` (0-based) of ``split_list(lst, n)``, as ``--num-chunks n --chunk-idx k`` use."""
    if not 0 <= k < n:
        raise IndexError(f"get_chunk: chunk index k={k} is outside [0, {n}) for n={n} chunks")
    return split_list(lst, n)[k]

