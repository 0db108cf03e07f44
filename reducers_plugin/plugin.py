"""Entry point of this plugin package (``llava.plugins``): registers the training-free token reducers.

=================== ======= ============================================== ===============================
name                stage   method                                         budget knob
=================== ======= ============================================== ===============================
``pool2d``          tokens  per-frame average pooling to N/T tokens        ``budget`` / ``ratio``: exact
``pool3d``          tokens  adaptive (t, h, w) average pooling             ``grid``, or closest grid <= N
``frame_subsample`` tokens  uniformly spaced whole frames                  ``budget`` / ``ratio``: <= N
``random_drop``     tokens  seeded uniform subset                          ``budget`` / ``ratio``: exact
``tome``            tokens  ToMe bipartite soft matching, repeated         ``budget`` / ``ratio``: exact
``vidcom2``         tokens  VidCom2 frame-adaptive outlier selection       ``budget`` / ``ratio``: exact
``dycoke_ttm``      tokens  DyCoke temporal token merging                  ``merging_ratio``, or <= N
``visionzip``       tokens  VisionZip (OneVision port): dominant + context ``budget`` / ``ratio``: exact
``fastvid``         tokens  FastVID: DySeg + salient + density merging     ``ratio`` (r) / ``budget``: T x N//T
``prunevid``        tokens  PruneVid (pre-LLM): segments, static, DPC-kNN  ``budget`` / ``ratio``: exact
``fastv``           llm     FastV: top-R by last-token attention at K-1    ``prune_ratio`` / ``budget`` (R)
``dycoke_kv``       decode  DyCoke: per-step KV selection while decoding   ``prune_ratio`` (decoding only)
=================== ======= ============================================== ===============================
"""

from __future__ import annotations

from llava.model.token_reduction import register_token_reducer
from llava.plugin import Plugin, register_plugin

from .dycoke import DyCokeKV, DyCokeTTM
from .fastv import FastV
from .fastvid import FastVID
from .pooling import FrameSubsample, Pool2D, Pool3D, RandomDrop
from .prunevid import PruneVid
from .tome import ToMe
from .toy import ROWS as TOY_ROWS
from .vidcom2 import VidCom2
from .visionzip import VisionZip


def _examples(name: str, *configs: dict) -> tuple[dict, ...]:
    return tuple({"mm_token_reducer": name, "mm_token_reducer_config": config} for config in configs)


#: name -> (class, settings the contract test runs; sized for the tiny checkpoints' 16 tokens per frame)
REDUCERS = {
    "pool2d": (Pool2D, ({}, {"budget": 6})),
    "pool3d": (Pool3D, ({}, {"grid": [1, 2, 3]})),
    "frame_subsample": (FrameSubsample, ({"ratio": 0.5},)),
    "random_drop": (RandomDrop, ({}, {"budget": 5, "seed": 3})),
    "tome": (ToMe, ({}, {"budget": 7, "order": "tome"})),
    "vidcom2": (VidCom2, ({}, {"budget": 6})),
    "dycoke_ttm": (DyCokeTTM, ({}, {"budget": 40})),
    "visionzip": (VisionZip, ({}, {"budget": 9, "exact_budget": False})),
    "fastvid": (FastVID, ({"ratio": 0.5}, {"budget": 30, "segments": 2})),
    "prunevid": (PruneVid, ({}, {"budget": 10, "tau": 0.5, "min_group": 4})),
    "fastv": (FastV, ({"layer": 1}, {"layer": 1, "budget": 3})),
    "dycoke_kv": (DyCokeKV, ({"layer": 1}, {"layer": 1, "prune_ratio": 0.5, "unchanged": "previous"})),
}


#: the reducers' rows of the toy zoo (one per reducer, on the reference checkpoint)
PLUGIN = Plugin(name="reducers", toy_rows=TOY_ROWS)


def register() -> None:
    """Entry point of the ``llava.plugins`` group."""
    for name, (cls, configs) in REDUCERS.items():
        register_token_reducer(name, examples=_examples(name, *configs))(cls)
    register_plugin(PLUGIN)
