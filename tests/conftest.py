"""Shared fixtures. Tests never reach the network: the hub is switched off before anything imports it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.shared_memory import deepspeed_buffers, remove_buffers_made_since

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _remove_deepspeed_shared_buffers():
    """The DeepSpeed buffers this session leaves in /dev/shm are removed when it ends
    (:mod:`tests.helpers.shared_memory`)."""
    before = deepspeed_buffers()
    yield
    remove_buffers_made_since(before)


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
