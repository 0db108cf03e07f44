"""Token-reducer registry: one way in, for reducers of a plugin package and tests alike.

``build_token_reducer(config.mm_token_reducer, config.mm_token_reducer_config)`` builds the
registered class by name. Plugins register from their own package, discovered through the
``llava.token_reducers`` entry-point group (``setup.py``)::

    entry_points={"llava.token_reducers": ["reducers = my_reducers.registry:register"]}

An entry point names a zero-argument callable (or a module) whose import/call registers reducers;
every plugin group is loaded together (:mod:`llava.registry`).
"""

from __future__ import annotations

import inspect

from llava.registry import Registry, load_plugins

from .base import STAGES, TokenReducer

ENTRY_POINT_GROUP = "llava.token_reducers"
#: Config value meaning "no reducer" (as well as ``None``).
NO_REDUCER = "none"

TOKEN_REDUCERS = Registry("token reducer", "mm_token_reducer")

#: Kept for callers of the first reducer registry; every plugin group is loaded together.
load_token_reducer_plugins = load_plugins


def register_token_reducer(name: str, *, overwrite: bool = False, examples: tuple[dict, ...] | None = None):
    """Decorator registering a :class:`TokenReducer` subclass under ``name``.

    Registering the same class twice is a no-op; a different class under a taken name needs
    ``overwrite=True``. ``examples``: ``{"mm_token_reducer": name, "mm_token_reducer_config": {...}}``
    settings the contract test runs (default: the reducer with its default options).
    """
    if name == NO_REDUCER:
        raise ValueError(f"token reducer name {NO_REDUCER!r} is reserved for 'no reducer'")

    def decorator(cls: type[TokenReducer]) -> type[TokenReducer]:
        if not (inspect.isclass(cls) and issubclass(cls, TokenReducer)):
            raise TypeError(f"register_token_reducer({name!r}) needs a TokenReducer subclass, got {cls!r}")
        stage = getattr(cls, "stage", None)
        if stage not in STAGES:
            raise ValueError(f"token reducer {name!r} ({cls.__name__}): stage {stage!r} is not one of {STAGES}")
        if stage in ("features", "tokens") and cls.num_output_tokens is TokenReducer.num_output_tokens:
            raise TypeError(
                f"token reducer {name!r} ({cls.__name__}) changes the LLM input (stage {stage!r}) and must "
                f"override num_output_tokens so budgets are counted"
            )
        return TOKEN_REDUCERS.register(name, overwrite=overwrite, examples=examples)(cls)

    return decorator


def unregister_token_reducer(name: str) -> None:
    """Removes ``name`` (tests that register throwaway reducers clean up with this)."""
    TOKEN_REDUCERS.unregister(name)


def list_token_reducers() -> list[str]:
    """Names of all registered token reducers (plugins included)."""
    return TOKEN_REDUCERS.names()


def build_token_reducer(name: str | None, options: dict | None = None) -> TokenReducer | None:
    """The reducer registered as ``name``, built with ``options``; ``None`` for ``None`` / ``"none"``.

    Raises:
        ValueError: unknown ``name`` (the message lists the registered ones); options given without a
            reducer; an option the reducer does not take, a required one missing, or a value its
            ``__init__`` rejects (the message names the reducer and the option).
    """
    options = dict(options or {})
    if name is None or name == NO_REDUCER:
        if options:
            raise ValueError(f"token reducer options {sorted(options)} given but no reducer is selected")
        return None
    cls = TOKEN_REDUCERS.get(name)
    accepted = cls.option_names()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"token reducer {name!r}: unknown option(s) {', '.join(unknown)}; it takes "
            f"{', '.join(accepted) or 'no options'}"
        )
    params = inspect.signature(cls.__init__).parameters
    missing = [key for key in accepted if params[key].default is inspect.Parameter.empty and key not in options]
    if missing:
        raise ValueError(f"token reducer {name!r}: missing required option(s) {', '.join(missing)}")
    try:
        return cls(**options)
    except ValueError as err:
        raise ValueError(f"token reducer {name!r}: {err}") from err
