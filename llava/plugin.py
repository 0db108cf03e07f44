"""What a plugin contributes to the core besides its modules, declared once and consumed generically.

A method package registers a :class:`Plugin` (entry-point group ``llava.plugins``)::

    from llava.plugin import AuxLoss, ParamGroup, Plugin, SampleField, register_plugin

    @dataclass
    class MyTrainingArguments:
        my_injector_lr: float | None = None
        my_loss_weight: float = 0.5

    def register():
        register_plugin(Plugin(
            name="mymethod",
            training_args=MyTrainingArguments,                  # merged into the HfArgumentParser
            param_groups=(ParamGroup("my_injector", lr_flag="my_injector_lr"),),
            aux_losses=(AuxLoss("my_loss", weight_flag="my_loss_weight"),),
            sample_fields=(SampleField("instances", parse=parse_instances, default=list),),
        ))

The core reads these declarations and never a method's name:

* **arguments** (:func:`llava.train.arguments.parse_args`): the plugin's dataclass fields join the
  training command line; a name clash with the core or another plugin is an error.
* **parameter groups** (:mod:`llava.train.tunable`): a module of the model (projector, tower) returns
  the parameters of each group from ``tunable_parts()``; the group's name is accepted by
  ``--mm_tunable_parts`` and its ``lr_flag`` gives it its own learning rate. ``adapter=False`` marks a
  standalone part (e.g. a text tower read from its own folder): outside ``mm_projector.bin`` while
  frozen, and training it makes the run save the whole model.
* **auxiliary losses** (:mod:`llava.model.llava_arch`, the trainer): a projector may return named
  losses; the model adds ``sum(weight * loss)`` to the LM loss, the weight read from ``weight_flag``;
  the trainer logs each one.
* **per-sample fields** (:mod:`llava.train.data`): read from each annotation record, checked by
  ``parse`` (a ``ValueError`` drops the record, counted, or is an error with ``--strict_data``),
  batched per visual item into ``VisualBatch.fields``.
* **config and export**: ``config_from_args`` returns the config keys the plugin's modules read when
  built; ``model_card`` adds lines to an exported model's README; ``export_files`` writes side files
  (a tokenizer) next to exported weights.
* **toy rows** (:mod:`llava.toy.zoo`, ``make demo`` / ``make demo-zoo``): the rows of the embedded
  default's table that show the method, as :class:`ToyRow` (trained through the method's own tiny
  stage scripts, or a training-free token reducer on the reference checkpoint), each with the picture
  of what the method selects under two instructions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from llava.registry import Registry


@dataclass(frozen=True)
class ParamGroup:
    """A named parameter subset, taken from ``module.tunable_parts()[name]`` of a model module."""

    name: str
    lr_flag: str | None = None  # a training-argument field (the plugin's own or a core one)
    adapter: bool = True  # part of the adapter (``mm_projector.bin``); False: standalone


@dataclass(frozen=True)
class AuxLoss:
    """A loss a projector returns by ``name``; its weight is the training argument ``weight_flag``."""

    name: str
    weight_flag: str


@dataclass(frozen=True)
class SampleField:
    """A per-sample annotation field (``record[name]``), handed to the projector per visual item.

    ``parse(value) -> value`` raises ``ValueError`` with the reason when the value is bad; records
    without the key get ``default()`` (``required=True``: such records are dropped, counted).
    """

    name: str
    parse: Callable[[Any], Any] = lambda value: value
    default: Callable[[], Any] = lambda: None
    required: bool = False


@dataclass(frozen=True)
class ToyStage:
    """One training stage of a toy row: a stage script (path from the repository root) that prints its
    ``train_mem.py`` command under ``LAUNCHER=print``; the zoo trains that command in-process, with
    ``extra`` flags after the script's own and its shared budget flags last."""

    script: str
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToyClip:
    """An eval video of the toy set as a picture shows it: ``frames`` ``(T, H, W, 3)`` uint8 (the frames
    the eval samples), two ``instructions`` (questions about two different tiles), and the tile each
    asks about: ``targets[i] = (frame index where it first shows, row, col)`` on the patch grid."""

    name: str
    frames: Any
    instructions: tuple[str, str]
    targets: tuple[tuple[int, int, int], tuple[int, int, int]]


@dataclass(frozen=True)
class ToyRow:
    """A row of the embedded default's table (:mod:`llava.toy.zoo`).

    Trained rows give ``stages`` (the method's tiny stage scripts, run with the settings ``env``; the
    last stage is the instruction tuning, whose data, steps, batch and learning rates the zoo sets the
    same for every row); training-free rows give ``reducer`` (a registered token reducer, run by the
    comparison harness on the reference row's checkpoint at the shared token budget, with
    ``reducer_options``). ``methods``: the registered projectors, vision towers or token reducers the
    row shows (every registered one needs a row). ``prepare(tiny_folder) -> env`` builds checkpoints
    the row needs besides the shared tiny ones. ``picture``: ``"module:function"``, imported when
    drawn, a ``function(row, model_dir, clips, out) -> out`` that draws what the method attends to or
    selects for each :class:`ToyClip` under its two instructions (one PNG).
    ``headline``: in ``make demo``'s subset; ``reference``: the uncompressed model the others are
    compared with (the core declares it).
    """

    name: str
    label: str
    methods: tuple[str, ...]
    stages: tuple[ToyStage, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    prepare: Callable[[Any], Mapping[str, str]] | None = None
    reducer: str | None = None
    reducer_options: Mapping[str, Any] = field(default_factory=dict)
    picture: str | None = None
    headline: bool = False
    reference: bool = False

    def __post_init__(self):
        if bool(self.stages) == bool(self.reducer):
            raise ValueError(f"toy row {self.name!r}: give training stages or a training-free reducer (one of them)")
        if not self.methods:
            raise ValueError(f"toy row {self.name!r}: name the registered method(s) it shows in 'methods'")


@dataclass(frozen=True)
class Plugin:
    """Everything a method contributes to the core besides its registered modules (module docstring)."""

    name: str
    model_args: type | None = None
    data_args: type | None = None
    training_args: type | None = None
    param_groups: tuple[ParamGroup, ...] = ()
    #: other names ``--mm_tunable_parts`` accepts for a part (e.g. a release's own names)
    part_aliases: Mapping[str, str] = field(default_factory=dict)
    aux_losses: tuple[AuxLoss, ...] = ()
    sample_fields: tuple[SampleField, ...] = ()
    #: ``(model_args, data_args, training_args) -> {config key: value}`` written before modules are built
    config_from_args: Callable[[Any, Any, Any], dict] | None = None
    #: ``(config) -> [markdown lines]`` for the exported model card, or ``[]`` when the model is not this method's
    model_card: Callable[[Any], list[str]] | None = None
    #: ``(model, folder) -> None``: side files next to exported weights (may set portable config keys)
    export_files: Callable[[Any, Any], None] | None = None
    #: the rows of the embedded default's table that show this method (:class:`ToyRow`)
    toy_rows: tuple[ToyRow, ...] = ()

    def argument_fields(self) -> list[str]:
        """Names of every CLI argument the plugin contributes."""
        return [f.name for cls in (self.model_args, self.data_args, self.training_args) if cls for f in fields(cls)]


PLUGINS = Registry("plugin", "plugin")


def register_plugin(plugin: Plugin, overwrite: bool = False) -> Plugin:
    """Registers ``plugin`` under ``plugin.name`` (call from the plugin's entry point)."""
    return PLUGINS.register(plugin.name, overwrite=overwrite)(plugin)


def list_plugins() -> list[str]:
    return PLUGINS.names()


def plugins() -> list[Plugin]:
    """Every registered plugin, in name order."""
    return PLUGINS.values()


def param_groups() -> dict[str, ParamGroup]:
    """Every plugin parameter group by name; two plugins declaring one name must agree."""
    groups: dict[str, ParamGroup] = {}
    for plugin in plugins():
        for group in plugin.param_groups:
            if group.name in groups and groups[group.name] != group:
                raise ValueError(f"plugin {plugin.name!r} declares parameter group {group.name!r} differently "
                                 f"from another plugin ({groups[group.name]} vs {group})")
            groups[group.name] = group
    return groups


def toy_rows() -> list[ToyRow]:
    """Every plugin's toy rows, in plugin then declaration order; a name used twice is an error."""
    rows: dict[str, ToyRow] = {}
    for plugin in plugins():
        for row in plugin.toy_rows:
            if row.name in rows:
                raise ValueError(f"plugin {plugin.name!r}: toy row {row.name!r} is declared by another plugin too")
            rows[row.name] = row
    return list(rows.values())


def part_aliases() -> dict[str, str]:
    return {alias: part for plugin in plugins() for alias, part in plugin.part_aliases.items()}


def aux_losses() -> dict[str, AuxLoss]:
    return {loss.name: loss for plugin in plugins() for loss in plugin.aux_losses}


def sample_fields() -> dict[str, SampleField]:
    found: dict[str, SampleField] = {}
    for plugin in plugins():
        for spec in plugin.sample_fields:
            if spec.name in found and found[spec.name] is not spec:
                raise ValueError(f"plugin {plugin.name!r}: sample field {spec.name!r} is declared by another plugin too")
            found[spec.name] = spec
    return found


def declared_for(module, attribute: str, declared: Mapping[str, Any], what: str) -> list:
    """The declarations named by ``module.<attribute>`` (e.g. a projector's ``sample_fields``), in order;
    a name no plugin declares is an error naming the module and the declared names."""
    wanted = list(getattr(module, attribute, ()))
    unknown = [name for name in wanted if name not in declared]
    if unknown:
        raise ValueError(f"{type(module).__name__}.{attribute} names {what} {unknown} that no plugin declares "
                         f"(declared: {sorted(declared)})")
    return [declared[name] for name in wanted]


def json_flag(text: str | None, flag: str) -> Any:
    """The JSON value of a command-line flag (``--my_overrides '{"k": 1}'``), ``None`` when not given;
    invalid JSON is a ``ValueError`` naming the flag and its text."""
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--{flag} is not valid JSON ({err.msg}): {text!r}") from None


class OptionsMixin:
    """``to_dict`` / ``from_dict`` / ``replace`` for a plugin's dataclass of options (what its projector
    stores in ``config.json``): unknown keys are an error naming the class and the known keys, missing
    ones take the defaults, and ``replace`` builds (and so validates) a new instance."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        cls._check_names(data, "keys")
        return cls(**data)

    def replace(self, **changes: Any):
        self._check_names(changes, "fields")
        return dataclasses.replace(self, **changes)

    @classmethod
    def _check_names(cls, given: Mapping[str, Any], what: str) -> None:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown {what} {unknown}; known {what}: {sorted(known)}")


def check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    """``value`` must be an ``int`` (not a ``bool``) ``>= minimum``; else a ``ValueError`` naming
    ``owner.name`` (e.g. ``MyConfig.num_queries``) and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name}={value!r}; expected an integer >= {minimum}")


def _plain(value: Any) -> Any:
    """JSON-friendly: tuples become lists (recursively), nested option dataclasses dicts."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


__all__ = ["AuxLoss", "OptionsMixin", "ParamGroup", "Plugin", "SampleField", "aux_losses", "check_int", "declared_for",
           "json_flag", "list_plugins", "param_groups", "part_aliases", "plugins", "register_plugin", "sample_fields"]
