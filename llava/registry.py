"""Registries of the plugin host: one way in for built-ins and plugins alike (timm's ``register_model``).

Every kind of component has a :class:`Registry` (projectors, vision towers, token reducers, plugin
contributions). Plugins register from their own package, discovered through entry points, one group
per kind (``setup.py``)::

    entry_points={
        "llava.plugins": ["mymethod = my_plugin.plugin:register"],        # args, groups, losses, fields
        "llava.projectors": ["mymethod = my_plugin.projector:register"],
        "llava.vision_towers": [...],
        "llava.token_reducers": [...],
    }

An entry point names a zero-argument callable (or a module) whose import/call registers things. All
groups are loaded together, once, the first time any registry is read: a plugin's CLI arguments must
be known before the command line is parsed, whichever registry asked first. A broken plugin fails
loudly, naming its entry point.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUPS = ("llava.plugins", "llava.projectors", "llava.vision_towers", "llava.token_reducers")

_loaded = False


def load_plugins() -> None:
    """Imports (and calls) every entry point of every group once; a broken plugin raises ImportError."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for group in ENTRY_POINT_GROUPS:
        for ep in entry_points(group=group):
            try:
                target = ep.load()
                if callable(target) and not inspect.ismodule(target):
                    target()
            except Exception as err:
                _loaded = False  # let a fixed environment retry
                raise ImportError(f"plugin entry point {ep.name!r} of group {group} ({ep.value}) failed: "
                                  f"{type(err).__name__}: {err}") from err
            logger.debug("loaded plugin %s (%s: %s)", ep.name, group, ep.value)


@dataclass(frozen=True)
class _Entry:
    name: str
    value: Any
    pattern: re.Pattern | None  # None: exact name match
    examples: tuple[dict, ...]


class Registry:
    """Named components of one kind.

    ``what`` names the kind in errors (``"projector"``) and ``flag`` the config key or CLI flag that
    selects one (``"mm_projector_type"``), so an unknown name reads
    ``Unknown mm_projector_type 'x'; registered projectors: a, b``.
    """

    def __init__(self, what: str, flag: str):
        self.what, self.flag = what, flag
        self._entries: dict[str, _Entry] = {}

    def register(self, name: str, *, pattern: str | None = None, overwrite: bool = False,
                 examples: tuple[dict, ...] | None = None) -> Callable:
        """Decorator registering ``value`` under ``name``; ``pattern`` (a regex, ``fullmatch``) lets one
        value serve a family of names. The same value twice is a no-op; a different value under a taken
        name needs ``overwrite=True``.

        ``examples``: config settings (``{key: value}``) that build a working instance, used by the
        contract test that every registered component passes (default: ``{flag: name}``, none for a
        pattern entry). The key ``hidden_size`` names the LLM width the component needs (the test
        builds its tiny LLM at that width, e.g. for ``identity``); every other key is a config setting.
        """

        def decorator(value):
            existing = self._entries.get(name)
            if existing is not None and existing.value is not value and not overwrite:
                owner = getattr(existing.value, "__module__", type(existing.value).__module__)
                raise ValueError(f"{self.what} {name!r} is already registered (by {owner})")
            default = () if pattern else ({self.flag: name},)
            self._entries[name] = _Entry(name, value, re.compile(pattern) if pattern else None,
                                         tuple(examples) if examples is not None else default)
            return value

        return decorator

    def unregister(self, name: str) -> None:
        """Removes ``name`` (tests that register throwaway components clean up with this)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def values(self) -> list[Any]:
        load_plugins()
        return [self._entries[name].value for name in sorted(self._entries)]

    def examples(self, name: str) -> list[dict]:
        """The example settings registered with ``name`` (see :meth:`register`)."""
        load_plugins()
        return [dict(example) for example in self._entries[name].examples]

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._entries

    def get(self, name: str) -> Any:
        """The value registered for ``name`` (exact names first, then patterns)."""
        load_plugins()
        entry = self._entries.get(name)
        if entry is not None and entry.pattern is None:
            return entry.value
        for candidate in self._entries.values():
            if candidate.pattern is not None and candidate.pattern.fullmatch(name):
                return candidate.value
        if entry is not None:
            return entry.value
        raise ValueError(f"Unknown {self.flag} {name!r}; registered {self.what}s: {', '.join(self.names()) or 'none'}")
