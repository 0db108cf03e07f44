"""What transformers logs at WARNING or above inside a block (its warnings go to its logger, not to Python's
warnings module, and ``warning_once`` would hide one already given earlier in the process)."""

from __future__ import annotations

import contextlib
import logging


@contextlib.contextmanager
def transformers_warnings():
    """``with transformers_warnings() as messages:`` collects the messages logged in the block."""
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    try:
        yield messages
    finally:
        hf_logger.removeHandler(handler)
