"""Projector registry: one way in, for built-in projectors and plugins alike.

``build_vision_projector(config)`` reads ``config.mm_projector_type`` and calls the builder
registered for that name. Built-ins register below; plugins register from their own package,
discovered through the ``llava.projectors`` entry-point group (see ``setup.py``)::

    [options.entry_points]
    llava.projectors =
        hicom = hicom_plugin.projector:register

An entry point names a zero-argument callable (or a module) whose import/call registers projectors.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from torch import nn

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llava.projectors"

#: builder(config, **kwargs) -> nn.Module; kwargs carry e.g. ``vision_cfg``.
ProjectorBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: ProjectorBuilder
    pattern: re.Pattern | None  # None: exact name match


_REGISTRY: dict[str, _Entry] = {}
_plugins_loaded = False


def register_projector(name: str, *, pattern: str | None = None, overwrite: bool = False):
    """Decorator registering ``builder(config, **kwargs) -> nn.Module`` under ``name``.

    ``pattern`` (a regex, matched with ``fullmatch``) lets one builder serve a family of type strings,
    e.g. ``mlp(\\d+)x_gelu``. Registering the same builder twice is a no-op; a different builder under
    an existing name needs ``overwrite=True``.
    """

    def decorator(builder: ProjectorBuilder) -> ProjectorBuilder:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.builder is not builder and not overwrite:
            raise ValueError(f"projector {name!r} is already registered (by {existing.builder.__module__})")
        _REGISTRY[name] = _Entry(name, builder, re.compile(pattern) if pattern else None)
        return builder

    return decorator


def load_projector_plugins() -> None:
    """Imports every ``llava.projectors`` entry point once; a broken plugin fails loudly."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
        except Exception as err:
            raise ImportError(f"projector plugin entry point {ep.name!r} ({ep.value}) failed to load: {err}") from err
        if callable(target) and not inspect.ismodule(target):
            target()
        logger.debug("loaded projector plugin %s (%s)", ep.name, ep.value)


def list_projectors() -> list[str]:
    """Names of all registered projectors (plugins included)."""
    load_projector_plugins()
    return sorted(_REGISTRY)


def _lookup(projector_type: str) -> _Entry:
    load_projector_plugins()
    if projector_type in _REGISTRY and _REGISTRY[projector_type].pattern is None:
        return _REGISTRY[projector_type]
    for entry in _REGISTRY.values():
        if entry.pattern is not None and entry.pattern.fullmatch(projector_type):
            return entry
    if projector_type in _REGISTRY:
        return _REGISTRY[projector_type]
    raise ValueError(
        f"Unknown mm_projector_type {projector_type!r}; registered projectors: {', '.join(list_projectors())}"
    )


def projector_wants_dense_embeds(config) -> bool:
    """Asks the registered builder (a ``StructuredProjector`` class, say) before anything is built."""
    projector_type = getattr(config, "mm_projector_type", None) or "linear"
    ask = getattr(_lookup(projector_type).builder, "wants_dense_embeds", None)
    return bool(ask(config)) if ask is not None else False


def build_vision_projector(config, delay_load: bool = False, **kwargs) -> nn.Module:
    """Builds ``config.mm_projector_type`` (default ``linear``).

    ``delay_load=True`` (a checkpoint is being loaded) tells projectors that own pretrained parts,
    such as a text tower, to build them without reading their weights.
    """
    projector_type = getattr(config, "mm_projector_type", None) or "linear"
    return _lookup(projector_type).builder(config, delay_load=delay_load, **kwargs)


# ----------------------------------------------------------------------------- built-ins


class IdentityMap(nn.Module):
    """Passes features through unchanged (``mm_hidden_size`` must equal ``hidden_size``)."""

    def forward(self, x, *args, **kwargs):
        return x

    @property
    def config(self):
        return {"mm_projector_type": "identity"}


@register_projector("linear")
def _build_linear(config, **kwargs) -> nn.Module:
    return nn.Linear(config.mm_hidden_size, config.hidden_size)


@register_projector("mlp_gelu", pattern=r"mlp(\d+)x_gelu")
def _build_mlp_gelu(config, **kwargs) -> nn.Module:
    """``mlp<N>x_gelu``: Linear(mm→h), then (N-1) × [GELU, Linear(h→h)]; keys ``0.*``, ``2.*`` ..."""
    depth = int(re.fullmatch(r"mlp(\d+)x_gelu", config.mm_projector_type).group(1))
    if depth < 1:
        raise ValueError(f"mm_projector_type {config.mm_projector_type!r}: depth must be >= 1")
    layers: list[nn.Module] = [nn.Linear(config.mm_hidden_size, config.hidden_size)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)]
    return nn.Sequential(*layers)


@register_projector("identity")
def _build_identity(config, **kwargs) -> nn.Module:
    if config.mm_hidden_size != config.hidden_size:
        raise ValueError(
            f"mm_projector_type 'identity' needs mm_hidden_size == hidden_size, got "
            f"{config.mm_hidden_size} and {config.hidden_size}"
        )
    return IdentityMap()
