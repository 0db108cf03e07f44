"""DeepSpeed's CPU all-reduce leaves a 66 MB shared-memory buffer per rank in /dev/shm and never unlinks
it: every 2-rank launch of the suite would hold 132 MB of RAM until a reboot. The session fixture in
``tests/conftest.py`` removes the ones a session made."""

from __future__ import annotations

from pathlib import Path

SHARED_MEMORY = Path("/dev/shm")
DEEPSPEED_BUFFERS = "deepspeed_allreduce_buffer_*"


def deepspeed_buffers(folder: Path = SHARED_MEMORY) -> set[Path]:
    return set(folder.glob(DEEPSPEED_BUFFERS))


def remove_buffers_made_since(before: set[Path], folder: Path = SHARED_MEMORY) -> list[Path]:
    """Unlinks the DeepSpeed buffers in ``folder`` that ``before`` does not list; returns them."""
    made = sorted(deepspeed_buffers(folder) - before)
    for path in made:
        path.unlink(missing_ok=True)
    return made
