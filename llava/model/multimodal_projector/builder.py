"""Projector registry: one way in, for built-in projectors and plugins alike.

``build_vision_projector(config)`` reads ``config.mm_projector_type`` and calls the builder
registered for that name. Built-ins register below; plugins register from their own package,
discovered through the ``llava.projectors`` entry-point group (:mod:`llava.registry`)::

    entry_points={"llava.projectors": ["mymethod = my_plugin.projector:register"]}
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from llava.registry import Registry, load_plugins

#: builder(config, **kwargs) -> nn.Module; kwargs carry e.g. ``vision_cfg``.
ProjectorBuilder = Callable[..., nn.Module]

PROJECTORS = Registry("projector", "mm_projector_type")

#: Kept for callers of the first registry; every plugin group is loaded together.
load_projector_plugins = load_plugins


def register_projector(name: str, *, pattern: str | None = None, overwrite: bool = False,
                       examples: tuple[dict, ...] | None = None):
    """Decorator registering ``builder(config, **kwargs) -> nn.Module`` under ``name``.

    ``pattern`` (a regex, matched with ``fullmatch``) lets one builder serve a family of type strings,
    e.g. ``mlp(\\d+)x_gelu``. Registering the same builder twice is a no-op; a different builder under
    an existing name needs ``overwrite=True``. ``examples``: config settings that build it (the
    contract test runs each; :meth:`llava.registry.Registry.register`).
    """
    return PROJECTORS.register(name, pattern=pattern, overwrite=overwrite, examples=examples)


def list_projectors() -> list[str]:
    """Names of all registered projectors (plugins included)."""
    return PROJECTORS.names()


def projector_builder(config) -> ProjectorBuilder:
    return PROJECTORS.get(getattr(config, "mm_projector_type", None) or "linear")


def projector_wants_dense_embeds(config) -> bool:
    """Asks the registered builder (a ``StructuredProjector`` class, say) before anything is built."""
    ask = getattr(projector_builder(config), "wants_dense_embeds", None)
    return bool(ask(config)) if ask is not None else False


def build_vision_projector(config, delay_load: bool = False, **kwargs) -> nn.Module:
    """Builds ``config.mm_projector_type`` (default ``linear``).

    ``delay_load=True`` (a checkpoint is being loaded) tells projectors that own pretrained parts,
    such as a text tower, to build them without reading their weights.
    """
    return projector_builder(config)(config, delay_load=delay_load, **kwargs)


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


@register_projector("mlp_gelu", pattern=r"mlp(\d+)x_gelu", examples=({"mm_projector_type": "mlp2x_gelu"},))
def _build_mlp_gelu(config, **kwargs) -> nn.Module:
    """``mlp<N>x_gelu``: Linear(mm→h), then (N-1) × [GELU, Linear(h→h)]; keys ``0.*``, ``2.*`` ..."""
    depth = int(re.fullmatch(r"mlp(\d+)x_gelu", config.mm_projector_type).group(1))
    if depth < 1:
        raise ValueError(f"mm_projector_type {config.mm_projector_type!r}: depth must be >= 1")
    layers: list[nn.Module] = [nn.Linear(config.mm_hidden_size, config.hidden_size)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)]
    return nn.Sequential(*layers)


@register_projector("identity", examples=({"mm_projector_type": "identity", "hidden_size": 32},))
def _build_identity(config, **kwargs) -> nn.Module:
    if config.mm_hidden_size != config.hidden_size:
        raise ValueError(
            f"mm_projector_type 'identity' needs mm_hidden_size == hidden_size, got "
            f"{config.mm_hidden_size} and {config.hidden_size}"
        )
    return IdentityMap()
