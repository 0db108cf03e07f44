"""The token-reducer registry and contract: names, options, stages, entry-point plugins, clear errors."""

from __future__ import annotations

import json
import sys
import types
from importlib.metadata import EntryPoint

import pytest
import torch

from llava.model.token_reduction import (
    TokenReducer,
    build_token_reducer,
    list_token_reducers,
    register_token_reducer,
    unregister_token_reducer,
)
from llava import registry
from llava.model.token_reduction import registry as reducer_registry


class EveryOther(TokenReducer):
    """Keeps every ``stride``-th projected token of each item."""

    stage = "tokens"

    def __init__(self, stride: int = 2, mode: str = "uniform"):
        super().__init__()
        if stride < 1:
            raise ValueError(f"option stride must be >= 1, got {stride}")
        self.stride, self.mode = stride, mode

    def reduce_tokens(self, tokens, batch):
        return [t[:: self.stride] for t in tokens]

    def num_output_tokens(self, num_tokens_in, t, h, w, modality):
        return -(-num_tokens_in // self.stride)


class NeedsBudget(TokenReducer):
    stage = "llm"

    def __init__(self, *, budget: int, layer: int = 2):
        super().__init__()
        self.budget, self.layer = budget, layer
        self.llm_layer = layer


@pytest.fixture
def registered():
    names = {"test_every_other": EveryOther, "test_needs_budget": NeedsBudget}
    for name, cls in names.items():
        register_token_reducer(name)(cls)
    yield names
    for name in names:
        unregister_token_reducer(name)


def test_build_by_name_resolves_options(registered):
    reducer = build_token_reducer("test_every_other", {"stride": 3})
    assert isinstance(reducer, EveryOther) and reducer.options() == {"stride": 3, "mode": "uniform"}
    assert json.loads(json.dumps(reducer.options())) == {"stride": 3, "mode": "uniform"}
    out = reducer.reduce_tokens([torch.zeros(10, 4), torch.zeros(7, 4)], batch=None)
    assert [t.shape[0] for t in out] == [reducer.num_output_tokens(n, 1, 3, 3, "video") for n in (10, 7)] == [4, 3]
    assert build_token_reducer("test_needs_budget", {"budget": 64}).options() == {"budget": 64, "layer": 2}
    assert {"test_every_other", "test_needs_budget"} <= set(list_token_reducers())


def test_no_reducer():
    assert build_token_reducer(None) is None and build_token_reducer("none", {}) is None
    with pytest.raises(ValueError, match=r"options \['stride'\] given but no reducer is selected"):
        build_token_reducer("none", {"stride": 2})


def test_unknown_name_lists_registered_names(registered):
    with pytest.raises(ValueError) as err:
        build_token_reducer("no_such_reducer")
    message = str(err.value)
    assert "Unknown mm_token_reducer 'no_such_reducer'" in message
    assert "test_every_other" in message and "test_needs_budget" in message


def test_bad_options_name_the_reducer_and_option(registered):
    unknown = r"token reducer 'test_every_other': unknown option\(s\) strid; it takes stride, mode"
    with pytest.raises(ValueError, match=unknown):
        build_token_reducer("test_every_other", {"strid": 2})
    with pytest.raises(ValueError, match="token reducer 'test_needs_budget': missing required option\\(s\\) budget"):
        build_token_reducer("test_needs_budget", {"layer": 1})
    with pytest.raises(ValueError, match="token reducer 'test_every_other': option stride must be >= 1, got 0"):
        build_token_reducer("test_every_other", {"stride": 0})


def test_duplicate_registration(registered):
    register_token_reducer("test_every_other")(EveryOther)  # same class again: a no-op
    with pytest.raises(ValueError, match="token reducer 'test_every_other' is already registered"):
        register_token_reducer("test_every_other")(NeedsBudget)
    register_token_reducer("test_every_other", overwrite=True)(NeedsBudget)
    assert isinstance(build_token_reducer("test_every_other", {"budget": 1}), NeedsBudget)


def test_registration_checks_the_contract():
    class NoStage(TokenReducer):
        pass

    class Uncounted(TokenReducer):
        stage = "features"

    with pytest.raises(ValueError, match="stage None is not one of"):
        register_token_reducer("test_no_stage")(NoStage)
    with pytest.raises(TypeError, match="must override num_output_tokens"):
        register_token_reducer("test_uncounted")(Uncounted)
    with pytest.raises(TypeError, match="needs a TokenReducer subclass"):
        register_token_reducer("test_not_a_reducer")(torch.nn.Linear)
    with pytest.raises(ValueError, match="reserved"):
        register_token_reducer("none")
    assert not {"test_no_stage", "test_uncounted", "test_not_a_reducer"} & set(list_token_reducers())


def test_options_need_attributes_of_the_same_name():
    class Forgetful(TokenReducer):
        stage = "decode"

        def __init__(self, ratio: float = 0.5):
            super().__init__()

    with pytest.raises(AttributeError, match="missing self.ratio"):
        Forgetful().options()


def test_entry_point_plugins_load_once_and_broken_ones_are_named(monkeypatch):
    plugin = types.ModuleType("fake_reducer_plugin")
    calls = []

    def register():
        calls.append(1)
        register_token_reducer("test_from_plugin")(EveryOther)

    plugin.register = register
    monkeypatch.setitem(sys.modules, "fake_reducer_plugin", plugin)
    good = EntryPoint("fake", "fake_reducer_plugin:register", reducer_registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [good] if group == "llava.token_reducers" else [])
    monkeypatch.setattr(registry, "_loaded", False)
    try:
        assert "test_from_plugin" in list_token_reducers()
        list_token_reducers()
        assert calls == [1]
    finally:
        unregister_token_reducer("test_from_plugin")

    broken = EntryPoint("broken", "no_such_module_for_reducers:register", reducer_registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken] if group == "llava.token_reducers" else [])
    monkeypatch.setattr(registry, "_loaded", False)
    with pytest.raises(ImportError, match="plugin entry point 'broken' of group llava.token_reducers \\(no_such_module_for_reducers"):
        build_token_reducer("anything")
