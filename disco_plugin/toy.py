"""DisCo's row of the toy zoo (:mod:`llava.toy.zoo`): the two stages of ``scripts/train/disco/tiny``
(caption alignment with the VCD and TFC losses, then instruction tuning) with the ``tiny`` preset at
20 queries (4 instance groups of 4, 4 global), the toy's budget."""

from __future__ import annotations

import json

from llava.plugin import ToyRow, ToyStage

PICTURE = "disco_plugin.tools.picture:toy_picture"  # (row, model_dir, clips, out) -> PNG


ROWS = (
    ToyRow(name="disco", label="DisCo: instance-grouped queries with VCD + TFC (20 queries)", methods=("disco",),
           stages=tuple(ToyStage(f"scripts/train/disco/tiny/{name}.sh")
                        for name in ("stage1_align", "stage2_instruction_tuning")),
           env={"PRESET": "tiny", "OVERRIDES": json.dumps({"num_queries": 20, "group_size": 4})},
           picture=PICTURE),
)
