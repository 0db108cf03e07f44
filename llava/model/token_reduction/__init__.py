"""Hook points for training-free visual-token reducers (the reducers themselves live in plugins).

``base`` defines the contract (:class:`TokenReducer`, its contexts), ``registry`` the one way in
(``register_token_reducer`` / ``build_token_reducer``), ``llm_hooks`` the in-LLM stages (c) and (d)
(:func:`llm_reduction`). See ``base`` for the four stages.
"""

from .base import LLM_STAGES, STAGES, DecodeContext, LayerContext, TokenReducer
from .llm_hooks import CacheMasking, PromptPruning, llm_reduction
from .registry import (
    ENTRY_POINT_GROUP,
    build_token_reducer,
    list_token_reducers,
    load_token_reducer_plugins,
    register_token_reducer,
    unregister_token_reducer,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "LLM_STAGES",
    "STAGES",
    "CacheMasking",
    "DecodeContext",
    "LayerContext",
    "PromptPruning",
    "TokenReducer",
    "build_token_reducer",
    "list_token_reducers",
    "llm_reduction",
    "load_token_reducer_plugins",
    "register_token_reducer",
    "unregister_token_reducer",
]
