"""Reading the authors' released HICom checkpoints (``lntzm/HICom`` layout) into this code base.

The release saves the same tensors as ours under other names. This module maps the names once, at
the edge, and checks strictly that every tensor has a home (and every home a tensor):

* :func:`load_release_projector`: a stage-1/2 ``mm_projector.bin`` onto a built
  :class:`~hicom_plugin.projector.HIComProjector`;
* :func:`import_release_checkpoint` (CLI ``python -m hicom_plugin.tools.release --src DIR --out DIR
  [--vision-tower DIR]``): a stage-3 folder (``model_type: hicom_qwen2``) into a ``llava_qwen`` folder
  that ``load_pretrained_model`` reads.

Key prefixes (release -> ours):

| release                                           | ours                                                 |
|---------------------------------------------------|------------------------------------------------------|
| ``model.mm_projector.local_compressor.``          | ``model.mm_projector.compressor.local_compressor.``  |
| ``model.mm_projector.global_compressor.``         | ``model.mm_projector.compressor.global_compressor.`` |
| ``model.vision_tower.guide_encoder.text_model.``  | ``model.mm_projector.text_encoder.text_model.``      |
| ``model.vision_tower.vision_tower.vision_model.`` | unchanged                                            |
| ``model.layers.``, ``model.embed_tokens.``,       | unchanged                                            |
| ``model.norm.``, ``lm_head.``                     |                                                      |

Names inside a branch (checked against ``named_parameters()`` of compressors that build every
submodule, see ``tests/hicom_plugin/tools/test_release.py``). Each row maps a whole dotted prefix; what
follows it (``.weight``, ``.0.bias``, the attention's ``q_proj`` ...) is unchanged:

| where         | release                     | ours                                | what                           |
|---------------|-----------------------------|-------------------------------------|--------------------------------|
| local, global | ``readout``                 | ``readout``                         | MLP d -> D -> D (``0``, ``2``) |
| global        | ``query``                   | ``query``                           | learnable queries (N, d)       |
| global        | ``attn_layer``              | ``attn``                            | 9-head attention, q/k/v/out    |
| local, global | ``guide_injector``          | ``injector``                        | Inj(A, C); rows below          |
| local         | ``q_{proj,norm,alpha}``     | ``q_adapter.{proj,norm,alpha}``     | query adapter (Linear)         |
| local         | ``k_{proj,norm,alpha}``     | ``k_adapter.{proj,norm,alpha}``     | key adapter (MLP)              |
| local         | ``v_{proj,norm,alpha}``     | ``v_adapter.{proj,norm,alpha}``     | value adapter (MLP)            |
| injector      | ``text2qk_proj``            | ``text_proj``                       | text -> query width MLP        |
| injector      | ``guide_{proj,norm,alpha}`` | ``guide_adapter.{proj,norm,alpha}`` | instruction adapter            |
| injector      | ``coarse_proj``             | ``coarse_proj``                     | adaLN MLP d -> 2d -> 2d        |
| injector      | ``coarse_norm``             | ``coarse_norm``                     | adaLN LayerNorm                |
| injector      | ``fine_proj``               | ``fine_attn``                       | fine cross-attention           |
| injector      | ``fine_norm``               | ``fine_norm``                       | fine LayerNorm                 |

The compressor author's notes list every renamed row; the unchanged ``coarse_proj``,
``coarse_norm`` and ``fine_norm`` are the names of the release's ``GuideInjector`` (reference §1.6:
MLP_c + LN_c, MHA_f + LN_f). The renames are scoped: the release's local ``k_proj`` (an adapter)
and ``attn_layer.k_proj`` (an attention projection) map differently.

Tensors that are not parameters are never expected and, if a release file holds them, skipped and
listed as ``ignored``: the global branch's ``pos_embed`` cache, ``position_ids`` / ``inv_freq``
buffers, and the vision-tower layers past ``mm_vision_select_layer`` when our tower is truncated
there (an unguided model keeps no head).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from llava.model.builder import read_model_config, register_model_type
from llava.model.language_model.llava_qwen import LlavaQwenConfig, LlavaQwenForCausalLM
from llava.model.weights import read_state_dict, read_tensor_file

from ..config import parse_release_projector_type

if TYPE_CHECKING:  # imported where used: the projector's register() imports this module
    from ..projector import HIComProjector

logger = logging.getLogger(__name__)

RELEASE_MODEL_TYPES = ("hicom_qwen2",)
RELEASE_ARCHITECTURE = "HIComQwen2ForCausalLM"
REPORT_FILE = "import_report.json"

RELEASE_PROJECTOR = "model.mm_projector."
OURS_PROJECTOR = "model.mm_projector."
OURS_COMPRESSOR = "model.mm_projector.compressor."
RELEASE_GUIDE_ENCODER = "model.vision_tower.guide_encoder."
RELEASE_TEXT = "model.vision_tower.guide_encoder.text_model."
OURS_TEXT = "model.mm_projector.text_encoder.text_model."
VISION = "model.vision_tower.vision_tower.vision_model."
BRANCHES = ("local_compressor", "global_compressor")

Rows = tuple[tuple[str, str], ...]  # (release prefix, ours prefix), whole dotted components


def _adapter_rows(release: str, ours: str) -> Rows:
    """A gated adapter: the release's ``<x>_proj/<x>_norm/<x>_alpha`` are our ``<x>_adapter.*``."""
    return tuple((f"{release}_{part}", f"{ours}.{part}") for part in ("proj", "norm", "alpha"))


INJECTOR = ("guide_injector", "injector")
BRANCH_ROWS: dict[str, Rows] = {
    "local_compressor": (
        ("readout", "readout"),
        *_adapter_rows("q", "q_adapter"),
        *_adapter_rows("k", "k_adapter"),
        *_adapter_rows("v", "v_adapter"),
    ),
    "global_compressor": (("readout", "readout"), ("query", "query"), ("attn_layer", "attn")),
}
INJECTOR_ROWS: Rows = (
    ("text2qk_proj", "text_proj"),
    *_adapter_rows("guide", "guide_adapter"),
    ("coarse_proj", "coarse_proj"),
    ("coarse_norm", "coarse_norm"),
    ("fine_proj", "fine_attn"),
    ("fine_norm", "fine_norm"),
)
#: Release tensors that are caches, not weights (skipped if a file holds them).
RELEASE_CACHES = ("model.mm_projector.global_compressor.pos_embed",)
_BUFFER_SUFFIXES = (".position_ids", ".inv_freq", ".original_inv_freq")


# ---------------------------------------------------------------------------------- key names


def _swap(name: str, rows: Rows, to_ours: bool) -> str | None:
    """Replaces the row prefix that ``name`` starts with (on a component boundary); None if none does."""
    src, dst = (0, 1) if to_ours else (1, 0)
    for row in rows:
        if name == row[src] or name.startswith(row[src] + "."):
            return row[dst] + name[len(row[src]):]
    return None


def _rename_in_branch(name: str, branch: str, to_ours: bool) -> str | None:
    """``name`` relative to a branch, e.g. ``guide_injector.fine_proj.q_proj.weight``."""
    src, dst = INJECTOR if to_ours else INJECTOR[::-1]
    if name.startswith(src + "."):
        inner = _swap(name[len(src) + 1:], INJECTOR_ROWS, to_ours)
        return None if inner is None else f"{dst}.{inner}"
    return _swap(name, BRANCH_ROWS[branch], to_ours)


def _branch_key(key: str, prefix: str, to_ours: bool) -> str | None:
    branch, _, inner = key[len(prefix):].partition(".")
    if branch not in BRANCHES or not inner:
        return None
    renamed = _rename_in_branch(inner, branch, to_ours)
    if renamed is None:
        return None
    return f"{OURS_COMPRESSOR if to_ours else RELEASE_PROJECTOR}{branch}.{renamed}"


def release_to_ours(key: str) -> str | None:
    """Our name of a release tensor name.

    Projector and text-tower names are renamed (module docstring); every other key (LLM, vision
    tower) is returned unchanged. None: a projector or text-tower name the release tables do not
    know (e.g. ``use_clip_scale``'s ``local_logit_scale``).
    """
    if key.startswith(RELEASE_TEXT):
        return OURS_TEXT + key[len(RELEASE_TEXT):]
    if key.startswith(RELEASE_GUIDE_ENCODER):
        return None
    if key.startswith(RELEASE_PROJECTOR):
        return _branch_key(key, RELEASE_PROJECTOR, to_ours=True)
    return key


def ours_to_release(key: str) -> str | None:
    """Inverse of :func:`release_to_ours`: the release name of one of our tensor names (None: no
    release counterpart)."""
    if key.startswith(OURS_TEXT):
        return RELEASE_TEXT + key[len(OURS_TEXT):]
    if key.startswith(OURS_COMPRESSOR):
        return _branch_key(key, OURS_COMPRESSOR, to_ours=False)
    if key.startswith(OURS_PROJECTOR):
        return None
    return key


# ---------------------------------------------------------------------------------- the report


def _part(ours_key: str) -> str:
    if ours_key.startswith(OURS_COMPRESSOR):
        return "projector"
    if ours_key.startswith(OURS_TEXT):
        return "text tower"
    if ours_key.startswith("model.vision_tower."):
        return "vision tower"
    return "language model"


@dataclass
class ReleaseLoadReport:
    """What a release-to-ours conversion did, by name.

    Attributes:
        mapped: ``(release name, our name)`` of every tensor carried over.
        missing: our tensors the release lacks (a tied alias that is present counts as present).
        unexpected: release tensors with no place in our model.
        ignored: ``(release name, reason)`` of release tensors deliberately skipped (caches, buffers,
            tower layers our truncated tower does not keep).
    """

    mapped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def mapped_by_part(self) -> dict[str, int]:
        return dict(Counter(_part(ours) for _, ours in self.mapped))

    def summary(self) -> str:
        parts = ", ".join(f"{part} {n}" for part, n in sorted(self.mapped_by_part().items()))
        return (
            f"mapped {len(self.mapped)} release tensors ({parts}); missing {len(self.missing)}; "
            f"unexpected {len(self.unexpected)}; ignored {len(self.ignored)}"
        )

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "mapped_by_part": self.mapped_by_part(),
            "mapped": [list(pair) for pair in self.mapped],
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "ignored": [list(pair) for pair in self.ignored],
        }


# ---------------------------------------------------------------------------------- state dicts


@dataclass(frozen=True)
class _Target:
    """The tensors a module expects, under full names: shapes, tied aliases, non-persistent buffers."""

    shapes: dict[str, torch.Size]
    aliases: dict[str, frozenset[str]]
    buffers: frozenset[str]

    @classmethod
    def of(cls, module: nn.Module, prefix: str = "") -> _Target:
        state = module.state_dict(keep_vars=True)  # tied weights are one tensor under several names
        by_tensor: dict[int, set[str]] = defaultdict(set)
        for name, tensor in state.items():
            by_tensor[id(tensor)].add(prefix + name)
        aliases = {name: frozenset(group) for group in by_tensor.values() for name in group}
        persistent = {prefix + name for name in state}
        buffers = frozenset(prefix + name for name, _ in module.named_buffers()) - persistent
        return cls({prefix + k: v.shape for k, v in state.items()}, aliases, buffers)

    @property
    def truncated_tower(self) -> bool:
        return not any(k.startswith(VISION + "head.") for k in self.shapes)


def _ignore_reason(release_key: str, ours_key: str | None, target: _Target) -> str | None:
    if release_key in RELEASE_CACHES:
        return "position-table cache of the release (not a parameter; rebuilt at run time)"
    if release_key.endswith(_BUFFER_SUFFIXES) or (ours_key is not None and ours_key in target.buffers):
        return "non-persistent buffer (rebuilt at run time)"
    if release_key.startswith(VISION) and release_key not in target.shapes and target.truncated_tower:
        rest = release_key[len(VISION):]
        if rest.startswith(("head.", "post_layernorm.")) or re.match(r"encoder\.layers\.\d+\.", rest):
            return "vision-tower weight past mm_vision_select_layer (this model's tower is truncated there)"
    return None


def _listing(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _convert(state: dict, target: _Target, strict: bool, source: str) -> tuple[dict, ReleaseLoadReport]:
    report = ReleaseLoadReport()
    converted: dict[str, torch.Tensor] = {}
    for release_key in sorted(state):
        value = state[release_key]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{source}: entry {release_key!r} is a {type(value).__name__}, not a tensor")
        ours_key = release_to_ours(release_key)
        reason = _ignore_reason(release_key, ours_key, target)
        if reason is not None:
            report.ignored.append((release_key, reason))
        elif ours_key is None or ours_key not in target.shapes:
            report.unexpected.append(release_key)
        else:
            converted[ours_key] = value
            report.mapped.append((release_key, ours_key))
    present = set(converted)
    report.missing = sorted(k for k in target.shapes if not target.aliases[k] & present)
    if strict and not report.ok:
        problems = []
        if report.missing:
            named = [f"{key} (release name {ours_to_release(key)})" for key in report.missing]
            problems.append(f"{len(report.missing)} of our tensors are missing from it: {_listing(named)}")
        if report.unexpected:
            hint = ""
            if any(k.startswith(OURS_COMPRESSOR) for k in report.unexpected):
                hint = " (names under 'mm_projector.compressor.' are this code base's own: load such files directly)"
            problems.append(
                f"{len(report.unexpected)} of its tensors have no place in our model: "
                f"{_listing(report.unexpected)}{hint}"
            )
        raise KeyError(
            f"{source}: release weights do not match the model built from its config; " + "; ".join(problems)
        )
    wrong = [
        f"{release_key!r} (ours {ours_key!r}): release shape {tuple(state[release_key].shape)}, "
        f"ours {tuple(target.shapes[ours_key])}"
        for release_key, ours_key in report.mapped
        if state[release_key].shape != target.shapes[ours_key]
    ]
    if wrong:
        raise ValueError(f"{source}: {len(wrong)} tensors have the wrong shape: " + "; ".join(wrong[:10]))
    return converted, report


def convert_release_state_dict(
    state: dict, model: nn.Module, *, strict: bool = True, source: str = "release state dict"
) -> tuple[dict, ReleaseLoadReport]:
    """Renames a release state dict (full names, e.g. a stage-3 checkpoint) to ``model``'s names.

    Args:
        state: release name -> tensor.
        model: a model of ours built from the converted config (a meta-device one will do); its
            ``state_dict()`` names and shapes are what is expected.
        strict: raise on missing or unexpected tensors (else only report them).
        source: how errors name the origin (a path).

    Returns:
        ``(our name -> tensor, report)``. The tensors are the release's own (no copy, no cast).

    Raises:
        KeyError: (strict) naming the missing and the unexpected tensors.
        ValueError: naming every tensor whose shape differs, with both shapes.
    """
    return _convert(state, _Target.of(model), strict, source)


def load_release_projector(path: str | Path, projector: HIComProjector, strict: bool = True) -> ReleaseLoadReport:
    """Loads a release stage-1/2 ``mm_projector.bin`` (or the folder holding it) into ``projector``.

    The file is a ``torch.save`` dict with ``model.mm_projector.{local,global}_compressor.*`` keys,
    read with ``weights_only=True``. Only the compressor is loaded (the release keeps its text tower
    in the vision tower, outside this file). Values are cast to the projector's dtype on copy.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "mm_projector.bin"
    if not file.is_file():
        raise FileNotFoundError(f"release projector weights {file} do not exist")
    from ..projector import HIComProjector

    if not isinstance(projector, HIComProjector):
        raise TypeError(f"load_release_projector needs a HIComProjector, got {type(projector).__name__}")
    state = read_tensor_file(file)
    converted, report = _convert(state, _Target.of(projector.compressor, OURS_COMPRESSOR), strict, str(file))
    inner = {key[len(OURS_COMPRESSOR):]: value for key, value in converted.items()}
    projector.compressor.load_state_dict(inner, strict=strict)
    return report


# ---------------------------------------------------------------------------------- config


def convert_release_config(raw: dict) -> dict:
    """A release ``config.json`` dict -> ours (``llava_qwen`` with ``mm_projector_type: hicom``).

    * ``mm_projector_type`` + ``use_guide`` are parsed once into ``hicom_config``; the release string
      is kept in ``hicom_release_projector_type``. ``max_num_frames`` (the position-table length)
      is carried into ``hicom_config`` too.
    * ``mm_patch_merge_type``: the release builds ``image_newline`` only for ``anyres`` images and
      HICom emits no newline tokens; ours builds it for any ``*unpad*`` merge type. So a
      ``spatial_unpad`` release becomes ``flat`` here (its value kept in
      ``hicom_release_mm_patch_merge_type``), which builds the same parameters.
    * Everything else is kept (``mm_vision_tower`` too: pass the tower folder to the importer when
      the release's relative path does not resolve).
    """
    model_type = raw.get("model_type")
    if model_type not in RELEASE_MODEL_TYPES:
        raise ValueError(
            f"config model_type {model_type!r} is not a HICom release type; supported: {list(RELEASE_MODEL_TYPES)}"
        )
    projector_type = raw.get("mm_projector_type")
    if not projector_type:
        raise ValueError("release config has no mm_projector_type")
    if raw.get("use_clip_scale"):
        raise ValueError(
            f"release config sets use_clip_scale={raw['use_clip_scale']!r} (SigLIP logit scale in the "
            "compressor), which this port does not implement"
        )
    hicom = parse_release_projector_type(projector_type, raw.get("use_guide"))
    if isinstance(raw.get("max_num_frames"), int) and raw["max_num_frames"] >= 1:
        hicom = hicom.replace(max_num_frames=raw["max_num_frames"])
    out = dict(raw)
    out.update(
        model_type="llava_qwen",
        architectures=["LlavaQwenForCausalLM"],
        mm_projector_type="hicom",
        hicom_config=hicom.to_dict(),
        hicom_release_projector_type=projector_type,
    )
    merge = raw.get("mm_patch_merge_type")
    if merge and "unpad" in merge:
        out["mm_patch_merge_type"] = "flat"
        out["hicom_release_mm_patch_merge_type"] = merge
    return out


# ---------------------------------------------------------------------------------- stage 3 import

_SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
    "added_tokens.json", "tokenizer.model", "chat_template.jinja", "chat_template.json", "generation_config.json",
)


def _dominant_float_dtype(state: dict) -> torch.dtype:
    counts = Counter(v.dtype for v in state.values() if v.is_floating_point())
    if not counts:
        return torch.float32
    if len(counts) > 1:
        logger.warning("release tensors mix dtypes %s; the imported model uses the most common one",
                       {str(k): n for k, n in counts.items()})
    return counts.most_common(1)[0][0]


def import_release_checkpoint(
    src_dir: str | Path, out_dir: str | Path, vision_tower: str | Path | None = None
) -> ReleaseLoadReport:
    """Converts a release stage-3 folder into a folder of ours, strictly, and returns the report.

    Reads ``config.json`` and the weights (safetensors, sharded or not, or ``.bin`` with
    ``weights_only``), converts both, builds ``LlavaQwenForCausalLM`` the way ``from_pretrained``
    does, saves it (safetensors) with the tokenizer files, the image-processor config and
    ``import_report.json`` into ``out_dir`` (new or empty).

    Args:
        vision_tower: the SigLIP folder; overrides the release's (usually relative) ``mm_vision_tower``.
            It is read for the tower/text configs and, later, the SigLIP tokenizer.
    """
    src, out = Path(src_dir), Path(out_dir)
    config_dict = convert_release_config(read_model_config(src))
    if vision_tower is not None:
        config_dict["mm_vision_tower"] = str(Path(vision_tower).resolve())
    tower = config_dict.get("mm_vision_tower")
    if not tower or not Path(tower).is_dir():
        raise FileNotFoundError(
            f"{src}: the vision tower folder {tower!r} named by the release config does not exist here; "
            f"pass the SigLIP folder with --vision-tower DIR (vision_tower=...)"
        )
    side_files = [src / name for name in _SIDE_FILES if (src / name).is_file()]
    if not any(f.name in ("tokenizer.json", "tokenizer_config.json") for f in side_files):
        raise FileNotFoundError(f"{src}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} is not empty; choose a new folder")

    config = LlavaQwenConfig.from_dict(config_dict)
    with torch.device("meta"):  # names and shapes only; also completes the config (tower configs)
        skeleton = LlavaQwenForCausalLM(config)
    logger.info("reading release weights from %s", src)
    converted, report = convert_release_state_dict(read_state_dict(src), skeleton, source=str(src))
    del skeleton
    model, info = LlavaQwenForCausalLM.from_pretrained(
        None, config=config, state_dict=converted, output_loading_info=True,
        dtype=_dominant_float_dtype(converted),
    )
    left = {k: sorted(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
    if left:
        raise RuntimeError(f"{src}: transformers did not load the converted weights cleanly: {left}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    model.get_vision_tower().image_processor.save_pretrained(out)
    for file in side_files:
        shutil.copy2(file, out / file.name)
    record = {
        "source": str(src.resolve()),
        "mm_vision_tower": config.mm_vision_tower,
        "release_projector_type": config_dict["hicom_release_projector_type"],
        "hicom_config": config_dict["hicom_config"],
        **report.to_dict(),
    }
    (out / REPORT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    logger.info("%s -> %s: %s", src, out, report.summary())
    return report


# ---------------------------------------------------------------------------------- registration


class ReleaseLayoutError(ValueError):
    """A HICom release folder was given where a folder of ours is needed."""


def release_layout_message(path) -> str:
    return (
        f"{path} is a HICom release checkpoint (model_type 'hicom_qwen2'), whose tensor names differ "
        f"from this code base's (release layout: run python -m hicom_plugin.tools.release --src {path} "
        f"--out NEW_DIR [--vision-tower SIGLIP_DIR] once, then load NEW_DIR). A stage-1/2 "
        f"mm_projector.bin loads with hicom_plugin.tools.release.load_release_projector."
    )


class _ReleaseLayout:
    """Registered under the release's model_type so ``load_pretrained_model`` says how to convert."""

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs):
        raise ReleaseLayoutError(release_layout_message(path))


def register_release_layout() -> None:
    """Makes ``load_pretrained_model`` on a release folder fail with :func:`release_layout_message`.

    Called by ``hicom_plugin.projector.register`` (the ``llava.projectors`` entry point), so it takes
    effect once LLaVA has loaded its projector plugins.
    """
    for model_type in RELEASE_MODEL_TYPES:
        register_model_type(model_type, _ReleaseLayout, _ReleaseLayout, architecture=RELEASE_ARCHITECTURE)


# ---------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hicom_plugin.tools.release",
        description="Convert a HICom release stage-3 checkpoint (model_type hicom_qwen2) into a llava_qwen folder.",
    )
    parser.add_argument("--src", required=True, help="release folder (config.json + weights + tokenizer)")
    parser.add_argument("--out", required=True, help="new (or empty) output folder")
    parser.add_argument("--vision-tower", default=None,
                        help="SigLIP folder; overrides the release config's relative mm_vision_tower")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = import_release_checkpoint(args.src, args.out, args.vision_tower)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as err:
        message = err.args[0] if err.args else repr(err)
        parser.exit(1, f"error: {message}\n")
    print(report.summary())
    print(f"wrote {args.out} (details in {Path(args.out) / REPORT_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "ReleaseLayoutError",
    "ReleaseLoadReport",
    "convert_release_config",
    "convert_release_state_dict",
    "import_release_checkpoint",
    "load_release_projector",
    "main",
    "ours_to_release",
    "register_release_layout",
    "release_to_ours",
]
