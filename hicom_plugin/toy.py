"""HICom's rows of the toy zoo (:mod:`llava.toy.zoo`): the paper's Table 4 ablation at toy scale.

Every row runs the three HICom stages of ``scripts/train/tiny`` with the ``release`` preset: the
compressor as the authors' code computes it (the local keys are SigLIP's dense embeddings and the
instruction's embedding is added to the queries as it is, so SigLIP's image-text alignment can select
the named tile from the first step). Groups are padded, not overlapped, so the ``(4, 3, 3)`` groups are
the synthetic scenes' 3 x 3 blocks. Stage 1 (alignment) trains every compressor without its injection,
as the paper does.

Tokens at 8 frames of the tiny 7 x 7 grid: ``(4, 3, 3)`` local groups give 2 x 3 x 3 = 18 tokens, the
global branch :data:`GLOBAL_QUERIES`; 18 + 2 = 20 is the toy's analogue of the paper's 648 + 32.
"""

from __future__ import annotations

import json

from llava.plugin import ToyRow, ToyStage

PICTURE = "hicom_plugin.tools.figures:toy_picture"  # (row, model_dir, clips, out) -> PNG


GLOBAL_QUERIES = 2
SCRIPTS = ("scripts/train/tiny/stage1_align.sh", "scripts/train/tiny/stage2_conditional_pretrain.sh",
           "scripts/train/tiny/stage3_instruction_tuning.sh")


def _overrides(local_kernel, global_queries: int, local: str, global_: str, **extra) -> dict:
    return {"local_kernel": local_kernel, "num_global_queries": global_queries, "local_injection": local,
            "global_injection": global_, "group_scheme": "pad", **extra}


def _row(name: str, label: str, overrides: dict, headline: bool = False) -> ToyRow:
    """Stage 1 without the injections, stages 2-3 with the row's."""
    align = {**overrides, "local_injection": "none", "global_injection": "none"}

    def flags(value: dict) -> tuple[str, ...]:
        return ("--hicom_overrides", json.dumps(value, separators=(",", ":")))

    stages = (ToyStage(SCRIPTS[0], flags(align)), ToyStage(SCRIPTS[1], flags(overrides)),
              ToyStage(SCRIPTS[2], flags(overrides)))
    return ToyRow(name=name, label=label, methods=("hicom",), stages=stages, env={"PRESET": "release"},
                  picture=PICTURE, headline=headline)


ROWS = (
    _row("avgpool_433", "HICom ablation: average pool (4,3,3)",
         _overrides([4, 3, 3], 0, "none", "none", local_mode="average", dense_keys=False), headline=True),
    _row("uncond_local", "HICom ablation: local (4,3,3), unconditional", _overrides([4, 3, 3], 0, "none", "none")),
    _row("cond_local", "HICom ablation: local (4,3,3), conditional", _overrides([4, 3, 3], 0, "direct", "none")),
    _row("cond_global", "HICom ablation: global only, conditional",
         _overrides(None, GLOBAL_QUERIES, "none", "coarse")),
    _row("cond_local_global", "HICom (paper): local + global, conditional",
         _overrides([4, 3, 3], GLOBAL_QUERIES, "direct", "coarse"), headline=True),
)
