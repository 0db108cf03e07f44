"""B-VLLM's row of the toy zoo (:mod:`llava.toy.zoo`): the three stages of ``scripts/train/bvllm/tiny``
with the ``tiny`` preset in exact-budget mode at 20 tokens (4 slots, R = 8, ToMe down to each slot's
share), the toy's budget."""

from __future__ import annotations

import json

from llava.plugin import ToyRow, ToyStage

PICTURE = "bvllm_plugin.figures:toy_picture"  # (row, model_dir, clips, out) -> PNG


TOKENS = 20

ROWS = (
    ToyRow(name="bvllm", label="B-VLLM: question-selected frames + spatial Q-Former (exact 20)", methods=("bvllm",),
           stages=tuple(ToyStage(f"scripts/train/bvllm/tiny/{name}.sh")
                        for name in ("stage1_pretrain", "stage2_sampler", "stage3_sft")),
           env={"PRESET": "tiny", "OVERRIDES": json.dumps({"budget": TOKENS, "budget_mode": "exact"})},
           picture=PICTURE),
)
