"""The projector registry: built-ins, decorator and entry-point plugins, clear errors."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from llava import registry
from llava.model.multimodal_projector.builder import (
    IdentityMap,
    build_vision_projector,
    list_projectors,
    register_projector,
)


def _cfg(kind, mm=8, hidden=12):
    return SimpleNamespace(mm_projector_type=kind, mm_hidden_size=mm, hidden_size=hidden)


def test_builtin_mlp_keeps_upstream_keys_and_depth():
    proj = build_vision_projector(_cfg("mlp2x_gelu"))
    assert sorted(proj.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    deep = build_vision_projector(_cfg("mlp3x_gelu"))
    assert sum(isinstance(m, nn.Linear) for m in deep) == 3
    assert build_vision_projector(_cfg("linear"))(torch.zeros(2, 5, 8)).shape == (2, 5, 12)


def test_identity_requires_equal_widths():
    assert isinstance(build_vision_projector(_cfg("identity", 8, 8)), IdentityMap)
    with pytest.raises(ValueError, match="mm_hidden_size == hidden_size"):
        build_vision_projector(_cfg("identity", 8, 12))


def test_missing_type_defaults_to_linear():
    proj = build_vision_projector(SimpleNamespace(mm_hidden_size=4, hidden_size=6))
    assert isinstance(proj, nn.Linear) and proj.weight.shape == (6, 4)


class _Doubler(nn.Module):
    def forward(self, x):
        return 2 * x


def test_decorator_registration_builds_by_name():
    @register_projector("test_doubler", overwrite=True)
    def _build(config, **kwargs):
        return _Doubler()

    assert "test_doubler" in list_projectors()
    proj = build_vision_projector(_cfg("test_doubler"))
    assert torch.equal(proj(torch.ones(3)), torch.full((3,), 2.0))


def test_unknown_name_lists_registered_names():
    with pytest.raises(ValueError) as err:
        build_vision_projector(_cfg("no_such_projector"))
    message = str(err.value)
    assert "no_such_projector" in message
    for name in ("linear", "mlp_gelu", "identity"):
        assert name in message


def test_conflicting_registration_is_refused():
    @register_projector("test_conflict", overwrite=True)
    def _first(config, **kwargs):
        return _Doubler()

    with pytest.raises(ValueError, match="already registered"):

        @register_projector("test_conflict")
        def _second(config, **kwargs):
            return _Doubler()


_PLUGIN_CALLS = []


def plugin_register():
    """Target of the fake entry point below."""
    _PLUGIN_CALLS.append(1)

    @register_projector("test_entry_point_projector", overwrite=True)
    def _build(config, **kwargs):
        return _Doubler()


class _FakeEntryPoint:
    name = "fake"
    value = f"{__name__}:plugin_register"

    def load(self):
        return plugin_register


class _BrokenEntryPoint:
    name = "broken"
    value = "not_a_module:register"

    def load(self):
        raise ModuleNotFoundError("No module named 'not_a_module'")


def test_entry_point_plugins_are_discovered_once(monkeypatch):
    monkeypatch.setattr(registry, "entry_points", lambda group: [_FakeEntryPoint()] if group == "llava.projectors" else [])
    monkeypatch.setattr(registry, "_loaded", False)
    _PLUGIN_CALLS.clear()
    proj = build_vision_projector(_cfg("test_entry_point_projector"))
    assert isinstance(proj, _Doubler)
    list_projectors()
    assert _PLUGIN_CALLS == [1]


def test_broken_plugin_fails_loudly(monkeypatch):
    monkeypatch.setattr(registry, "entry_points", lambda group: [_BrokenEntryPoint()])
    monkeypatch.setattr(registry, "_loaded", False)
    with pytest.raises(ImportError, match="broken"):
        list_projectors()
