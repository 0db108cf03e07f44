"""Shared fixtures. Tests never reach the network: the hub is switched off before anything imports it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ASSEMBLER_MISSING = "assemble_llava_qwen not implemented yet"


def llava_assembler_available() -> bool:
    """Whether ``llava.model.builder.assemble_llava_qwen`` exists (a broken import still raises)."""
    try:
        from llava.model.builder import assemble_llava_qwen  # noqa: F401
    except ImportError as err:
        # Only "no such module / no such name" means not written yet; any other import error is a bug.
        if err.name == "llava.model.builder":
            return False
        raise
    return True


@pytest.fixture(scope="session")
def tiny_parts() -> tuple[str, ...]:
    """The ``llava.toy.tiny`` parts that can be built now: all, or all but ``llava_qwen``."""
    from llava.toy.tiny import PARTS

    if llava_assembler_available():
        return PARTS
    return tuple(part for part in PARTS if part != "llava_qwen")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_parts) -> Path:
    """Folder with ``siglip-tiny/``, ``qwen2-tiny/`` and ``tiny-llava-qwen/`` (seed 0), built once.

    ``tiny-llava-qwen/`` is absent while the builder lacks ``assemble_llava_qwen``; tests that need it
    take ``tiny_llava_dir`` instead. Shared by the whole session: treat it as read-only.
    """
    from llava.toy.tiny import make_all

    out = tmp_path_factory.mktemp("tiny")
    make_all(out, seed=0, parts=tiny_parts)
    return out


@pytest.fixture(scope="session")
def tiny_llava_dir(tiny_dir: Path, tiny_parts) -> Path:
    """``tiny_dir / "tiny-llava-qwen"``; skips the test while the assembler is not written."""
    if "llava_qwen" not in tiny_parts:
        pytest.skip(ASSEMBLER_MISSING)
    from llava.toy.tiny import LLAVA_QWEN_DIRNAME

    return tiny_dir / LLAVA_QWEN_DIRNAME
