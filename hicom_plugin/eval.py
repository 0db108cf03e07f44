"""What HICom contributes to the evaluation commands: its users' name for the prompt style.

The release's evaluation scripts (``lntzm/HICom``, ``hicom/eval/video/*``) prompt as the core's
``release`` style does, so ``--prompt-style hicom`` is an alias of it (:func:`register_eval`, called
from the plugin's entry point).
"""

from __future__ import annotations

from llava.eval.benchmarks import register_prompt_style_alias

PROMPT_STYLE_ALIAS = "hicom"


def register_eval() -> None:
    """Registers ``--prompt-style hicom`` as the name of the ``release`` prompts."""
    register_prompt_style_alias(PROMPT_STYLE_ALIAS, "release")


__all__ = ["PROMPT_STYLE_ALIAS", "register_eval"]
