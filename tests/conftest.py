"""Shared fixtures. Tests never reach the network: the hub is switched off before anything imports it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_MEMORY = Path("/dev/shm")
DEEPSPEED_BUFFERS = "deepspeed_allreduce_buffer_*"


@pytest.fixture(scope="session", autouse=True)
def _remove_deepspeed_shared_buffers():
    """DeepSpeed's CPU all-reduce leaves a 66 MB shared-memory buffer per rank in /dev/shm and never
    unlinks it: every 2-rank launch of the suite would hold 132 MB of RAM until a reboot. The buffers
    this session made are removed when it ends."""
    before = set(SHARED_MEMORY.glob(DEEPSPEED_BUFFERS))
    yield
    for path in set(SHARED_MEMORY.glob(DEEPSPEED_BUFFERS)) - before:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def tiny_parts() -> tuple[str, ...]:
    """Every ``llava.toy.tiny`` part (all are built for the session's ``tiny_dir``)."""
    from llava.toy.tiny import PARTS

    return PARTS


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Folder with ``siglip-tiny/``, ``qwen2-tiny/`` and ``tiny-llava-qwen/`` (seed 0), built once.
    Shared by the whole session: treat it as read-only."""
    from llava.toy.tiny import make_all

    out = tmp_path_factory.mktemp("tiny")
    make_all(out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_llava_dir(tiny_dir: Path) -> Path:
    """``tiny_dir / "tiny-llava-qwen"``."""
    from llava.toy.tiny import LLAVA_QWEN_DIRNAME

    return tiny_dir / LLAVA_QWEN_DIRNAME
